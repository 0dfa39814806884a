"""The README's quickstart runs exactly as printed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

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
