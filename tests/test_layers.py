"""The architecture, held by a test: the verifier embeds alone; no lazy imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tufwaves"
# What firmware tooling embeds: it must not pull in the repository, the
# inventory, the rollout side or the command line.
DEVICE_SIDE = ("verify", "bundle.py", "membership.py", "_merkle.py", "_files.py", "errors.py")
DEVICE_ALLOWED = {
    "tufwaves",
    "tufwaves.errors",
    "tufwaves.membership",
    "tufwaves._merkle",
    "tufwaves._files",
    "tufwaves.bundle",
    "tufwaves.verify",
}


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def imports(path: Path) -> list[tuple[str, ast.AST]]:
    tree = ast.parse(path.read_text())
    found: list[tuple[str, ast.AST]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, node))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, node) for alias in node.names)
    return found


def device_side(path: Path) -> bool:
    rel = path.relative_to(PACKAGE).as_posix()
    return any(rel == d or rel.startswith(d + "/") for d in DEVICE_SIDE)


@pytest.mark.parametrize(
    "path",
    [p for p in modules() if device_side(p)],
    ids=lambda p: p.relative_to(PACKAGE).as_posix(),
)
def test_device_side_imports_only_device_side(path: Path) -> None:
    for module, _ in imports(path):
        if module.startswith("tufwaves"):
            top = ".".join(module.split(".")[:2])
            assert top in DEVICE_ALLOWED, f"{path.name} imports {module}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_library_never_imports_cli_and_no_imports_inside_functions(path: Path) -> None:
    in_cli = path.relative_to(PACKAGE).parts[0] == "cli"
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            inner = [n for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)]
            assert not inner, f"{path.name}:{node.name} imports inside a function"
    if not in_cli:
        for module, _ in imports(path):
            assert not module.startswith("tufwaves.cli"), f"{path.name} imports {module}"
