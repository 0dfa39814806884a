"""The README's quickstart and "Embedding" example run exactly as printed."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import PASSPHRASE_ENV
from tufwaves.cli import build_parser

README = Path(__file__).resolve().parent.parent / "README.md"


def block_after(heading: str, language: str) -> str:
    """The first fenced ``language`` block after ``heading`` in the README."""
    text = README.read_text()
    section = text[text.index(heading) :]
    match = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert match is not None, f"no {language} block after {heading!r}"
    return match.group(1)


def test_quickstart_runs_verbatim(tmp_path: Path) -> None:
    script = block_after("## Quickstart", "sh")
    bindir = Path(sys.executable).parent
    env = {
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
    }
    bash = shutil.which("bash")
    assert bash is not None
    result = subprocess.run(
        [bash, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "allowed" in result.stdout
    assert (tmp_path / "repo" / "metadata" / "2.root.json").is_file()
    assert len((tmp_path / "canaries.txt").read_text().split()) == 10


def embedding_example() -> str:
    text = README.read_text()
    found = re.search(r"^## Embedding\n.*?^```python\n(.*?)^```$", text, re.S | re.M)
    assert found, "README.md has no python block in its Embedding section"
    return found.group(1)


def test_embedding_example_runs_as_printed(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(embedding_example())
    env = {k: v for k, v in os.environ.items() if k != PASSPHRASE_ENV}
    env["PYTHONPATH"] = str(README.parent)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,  # a passphrase prompt would fail: none may be needed
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "published: True" in lines
    assert "ripple 1: ['3f2a0c1e-5b7d-4c1a-9e2f-0a1b2c3d4e5f']" in lines
    assert "3f2a0c1e-5b7d-4c1a-9e2f-0a1b2c3d4e5f ALLOWED allowed_ripple" in lines
    assert "8d1e2f3a-4b5c-4d6e-8f70-a1b2c3d4e5f6 DENIED not_member" in lines


def test_embedding_example_uses_only_the_public_api() -> None:
    imports = re.findall(r"^from (\S+) import|^import (\S+)", embedding_example(), re.M)
    modules = {a or b for a, b in imports}
    assert modules <= {"pathlib", "tufwaves.server", "tufwaves.verify"}, modules


def test_planned_rollout_commands_parse() -> None:
    """Every command of the "Planned rollouts" blocks is a valid command line."""
    text = README.read_text()
    section = text[text.index("## Planned rollouts") : text.index("## Serving and refreshing")]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) == 3  # the plan, the controller walk-through, demo --simulate
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "tufwaves":
                commands.append([w for w in words[1:] if w != "&"])
    assert any(c[:2] == ["waves", "advance"] for c in commands)
    assert any(c[0] == "controller" for c in commands)
    parser = build_parser()
    for argv in commands:
        args, extra = parser.parse_known_args(argv)
        assert not extra, argv
        assert callable(args.func), argv
