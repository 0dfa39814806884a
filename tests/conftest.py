"""Shared fixtures: a passphrase, throwaway key files and repositories."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tufwaves.server.ceremony import Ceremony
from tufwaves.server.keys import PASSPHRASE_ENV, KeyRef, generate_key, load_key_ref, write_key_pair
from tufwaves.server.metadata import expiry
from tufwaves.server.repository import Repository
from tufwaves.server.roots import create_repository
from tufwaves.server.waves import init_wave

PASSPHRASE = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    monkeypatch.setenv("TUFWAVES_LOCK_TIMEOUT", "30")


@dataclass
class KeyStore:
    directory: Path

    def make(self, name: str, key_type: str = "ed25519") -> Path:
        if not (self.directory / f"{name}.key").exists():
            write_key_pair(name, self.directory, generate_key(key_type), PASSPHRASE.encode())
        return self.directory / f"{name}.key"

    def ref(self, name: str) -> KeyRef:
        return load_key_ref(str(self.make(name)))

    def pub(self, name: str) -> KeyRef:
        self.make(name)
        return load_key_ref(str(self.directory / f"{name}.pub"))


@pytest.fixture
def keystore(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "keys")


RepoFactory = Callable[..., Repository]


@pytest.fixture
def make_repo(tmp_path: Path, keystore: KeyStore) -> RepoFactory:
    """A published repository with root 1-of-1 and targets n-of-m offline keys."""

    def factory(threshold: int = 1, signers: int = 1, name: str = "repo") -> Repository:
        targets = [keystore.ref(f"t{i}") for i in range(1, signers + 1)]
        repo, _ = create_repository(
            tmp_path / name,
            root_keys=[keystore.ref("root")],
            root_threshold=1,
            targets_keys=targets,
            targets_threshold=threshold,
        )
        assert repo.is_published()
        return repo

    return factory


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    path = tmp_path / "fw-1.img"
    path.write_bytes(b"firmware " * 100)
    return path


def tree_digest(path: Path) -> dict[str, str]:
    """Every file under ``path`` and its sha256: a byte-for-byte fingerprint.

    SQLite databases are checkpointed first, so their main file holds every
    committed change; the WAL and shared-memory index files (which change on
    reads) and the lock file are left out.
    """
    for db in path.rglob("*.sqlite"):
        conn = sqlite3.connect(db)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != ".lock" and not p.name.endswith(("-wal", "-shm"))
    }


@pytest.fixture
def unchanged() -> Iterator[Callable[[Path], None]]:
    """Assert a tree is byte-for-byte unchanged at the end of the test."""
    watched: list[tuple[Path, dict[str, str]]] = []

    def watch(path: Path) -> None:
        watched.append((path, tree_digest(path)))

    yield watch
    for path, before in watched:
        assert tree_digest(path) == before, f"{path} changed"


def publish_wave(
    repo: Repository,
    keystore: KeyStore,
    artifact: Path,
    name: str = "w1",
    version: int = 10,
    *,
    signers: tuple[str, ...] = ("t1",),
    **kw: Any,
) -> Ceremony:
    """Create wave ``name`` of tag prod for hardware hw1, signed by ``signers``."""
    kw.setdefault("expires", expiry())
    return init_wave(
        repo,
        name,
        version,
        "prod",
        artifacts=[artifact],
        hardware_ids=["hw1"],
        keys=[keystore.ref(s) for s in signers],
        **kw,
    )


@pytest.fixture
def as_root() -> None:
    """These tests read the repository as the user nobody: switching needs root.

    Never a skip: run the suite as root (CI does), or it fails saying why.
    """
    if os.geteuid() != 0:
        pytest.fail("this test switches to the user nobody, which needs root: run it as root")
