"""tufwaves.server: every public name exists and is documented like python-tuf."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tufwaves import server

# Type aliases and constants document themselves in the module docstring.
NOT_CALLABLE = {"PASSPHRASE_ENV", "Passphrase", "Clock"}
_RAISES = re.compile(r"^\s+raise \w", re.M)


def _sections_missing(func: Callable[..., Any]) -> list[str]:
    """The Args/Returns/Raises sections ``func``'s docstring lacks."""
    doc = inspect.getdoc(func) or ""
    signature = inspect.signature(func)
    params = [p for p in signature.parameters.values() if p.name not in ("self", "cls")]
    missing = []
    if params and "Args:" not in doc:
        missing.append("Args:")
    if signature.return_annotation not in ("None", None, inspect.Signature.empty) and not (
        "Returns:" in doc or "Yields:" in doc
    ):
        missing.append("Returns:")
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):  # pragma: no cover - builtins
        source = ""
    if _RAISES.search(source) and "Raises:" not in doc:
        missing.append("Raises:")
    return missing


def test_every_public_name_exists_once() -> None:
    assert len(set(server.__all__)) == len(server.__all__)
    for name in server.__all__:
        assert hasattr(server, name), name


@pytest.mark.parametrize("name", sorted(set(server.__all__) - NOT_CALLABLE))
def test_public_name_is_documented(name: str) -> None:
    obj = getattr(server, name)
    assert (inspect.getdoc(obj) or "").strip(), f"{name} has no docstring"
    if inspect.isfunction(obj):
        assert not _sections_missing(obj), f"{name} lacks {_sections_missing(obj)}"
        return
    assert inspect.isclass(obj)
    if issubclass(obj, Exception) or not obj.__module__.startswith("tufwaves.server"):
        return
    # Methods the server API's own classes define: documented too; with the
    # same sections except on the Inventory protocol (its implementations'
    # methods inherit its documentation).
    problems = []
    for attr, member in vars(obj).items():
        if attr.startswith("_") or obj is server.SqliteInventory:
            continue
        func = member.__func__ if isinstance(member, classmethod | staticmethod) else member
        if isinstance(func, property):
            if not inspect.getdoc(func):
                problems.append(f"{name}.{attr} has no docstring")
        elif inspect.isfunction(func):
            if not inspect.getdoc(func):
                problems.append(f"{name}.{attr} has no docstring")
            elif obj is not server.Inventory and _sections_missing(func):
                problems.append(f"{name}.{attr} lacks {_sections_missing(func)}")
    assert not problems, problems


def test_module_docstring_gives_an_overview() -> None:
    doc = server.__doc__ or ""
    for topic in ("Repository", "Keys", "Waves", "Rollouts", "Bundles", "Inventory"):
        assert topic in doc


def test_passphrase_is_passed_in_not_read_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(server.PASSPHRASE_ENV, raising=False)
    asked: list[str] = []

    def ask(purpose: str) -> bytes:
        asked.append(purpose)
        return b"s3cret"

    server.write_key_pair("root", tmp_path / "keys", server.generate_key(), b"s3cret")
    root = server.load_key_ref(tmp_path / "keys" / "root.key", passphrase=ask)
    assert asked == ["key root.key"] and root.signer is not None
    with pytest.raises(server.KeyUseError, match="wrong passphrase"):
        server.load_key_ref(tmp_path / "keys" / "root.key", passphrase=b"wrong")
    with pytest.raises(server.KeyUseError, match="non-empty"):
        server.load_key_ref(tmp_path / "keys" / "root.key", passphrase=b"")
    targets = server.KeyRef.from_signer(server.generate_key(), "t1")
    repo, ceremony = server.create_repository(
        tmp_path / "repo",
        root_keys=[root],
        root_threshold=1,
        targets_keys=[targets],
        targets_threshold=1,
        passphrase=ask,
    )
    assert ceremony.complete
    assert {"the online keys", "key snapshot.key", "key timestamp.key"} <= set(asked)
    # The online keys sign with the passphrase the repository was opened with.
    reopened = server.Repository.open(repo.path, passphrase=b"s3cret")
    assert reopened.refresh().timestamp.signed.version == 2
    with pytest.raises(server.KeyUseError):
        server.Repository.open(repo.path).refresh()  # no env, no terminal


def test_the_repository_clock_sets_what_it_signs(tmp_path: Path) -> None:
    at = datetime(2031, 5, 6, 7, 8, 9, 123, tzinfo=UTC)
    key = server.KeyRef.from_signer(server.generate_key(), "k")
    repo, _ = server.create_repository(
        tmp_path / "repo",
        root_keys=[key],
        root_threshold=1,
        targets_keys=[key],
        targets_threshold=1,
        passphrase=b"pw",
        clock=lambda: at,
    )
    start = at.replace(microsecond=0)
    assert repo.now() == start
    assert repo.root().signed.expires == start + timedelta(days=365)
    state = repo.state()
    assert state.timestamp.signed.expires == start + timedelta(days=1)
    assert state.snapshot.signed.expires == start + timedelta(days=7)
    repo.clock = lambda: at + timedelta(hours=5)
    assert repo.refresh().timestamp.signed.expires == start + timedelta(days=1, hours=5)
