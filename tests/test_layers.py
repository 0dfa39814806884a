"""The architecture, held by tests: the verifier embeds alone; the layers hold.

The layering itself is import-linter's job (contracts in ``pyproject.toml``,
run by ``lint-imports`` in ``.ci/run`` and here): it follows absolute,
relative and ``from tufwaves import module`` imports alike.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tufwaves"
DEVICE_MODULES = ("tufwaves", "tufwaves.verify", "tufwaves.errors", "tufwaves._files")


def loaded_by(statement: str) -> list[str]:
    """The modules a fresh interpreter holds after running ``statement``."""
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout
    loaded: list[str] = json.loads(out)
    return loaded


@pytest.mark.parametrize(
    "statement",
    [
        "import tufwaves.verify",
        "from tufwaves.verify import Verifier, DeviceIdentity",
        "import tufwaves.device.membership, tufwaves.device.bundle",
    ],
)
def test_device_side_loads_only_device_modules(statement: str) -> None:
    loaded = loaded_by(statement)
    ours = [m for m in loaded if m == "tufwaves" or m.startswith("tufwaves.")]
    assert "tufwaves.device.verifier" in loaded or "verify" not in statement
    strays = [m for m in ours if m not in DEVICE_MODULES and not m.startswith("tufwaves.device")]
    assert strays == []
    for foreign in ("sqlite3", "urllib.request", "http.client", "tufwaves.server", "tufwaves.cli"):
        assert foreign not in loaded


def test_import_contracts_hold() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint is not None, "import-linter is part of the test extra"
    result = subprocess.run([lint], capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.relative_to(PACKAGE).as_posix()
)
def test_no_imports_inside_functions(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            inner = [n for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)]
            assert not inner, f"{path.name}:{node.name} imports inside a function"
