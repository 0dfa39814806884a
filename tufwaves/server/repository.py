"""The on-disk repository: layout, lock, published state, all-or-nothing publish.

Layout of a repository directory ``REPO``::

    REPO/tufwaves.json        repository configuration (key names, online keys)
    REPO/metadata/            published TUF metadata (consistent snapshots)
    REPO/targets/             artifacts, under consistent-snapshot names
    REPO/keys/                online keys (encrypted) and their .pub files
    REPO/staging/             ceremonies in progress (pending signatures)
    REPO/ripples/             Merkle tree files of large ripples
    REPO/inventory.sqlite     the fleet inventory
    REPO/.lock                held while a command changes the repository

``timestamp.json`` is the commit point of every publish: all other files of a
publish are written (temporary file, fsync, rename) before it, and a failure
before it removes them again, so readers always see one consistent state.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from securesystemslib.signer import Key, Signer
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    Targets,
    Timestamp,
)
from tuf.api.serialization import DeserializationError

from tufwaves._files import atomic_write
from tufwaves.errors import InputError, StorageError
from tufwaves.server.inventory.backend import shared_lock
from tufwaves.server.keys import load_key_ref, load_public_key
from tufwaves.server.metadata import now

__all__ = ["PublishedState", "Repository", "atomic_write"]

CONFIG_NAME = "tufwaves.json"
SNAPSHOT_DAYS = 7
TIMESTAMP_DAYS = 1
LOCK_TIMEOUT_ENV = "TUFWAVES_LOCK_TIMEOUT"


@dataclass(frozen=True)
class PublishedState:
    """What clients currently see: timestamp, snapshot and role versions."""

    timestamp: Metadata[Timestamp]
    snapshot: Metadata[Snapshot]
    root_version: int
    timestamp_bytes: bytes = b""

    def version_of(self, role: str) -> int | None:
        meta = self.snapshot.signed.meta.get(f"{role}.json")
        return meta.version if meta else None

    def roles(self) -> list[str]:
        return [name.removesuffix(".json") for name in self.snapshot.signed.meta]


class Repository:
    """One tufwaves repository directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.metadata_dir = path / "metadata"
        self.targets_dir = path / "targets"
        self.keys_dir = path / "keys"
        self.staging_dir = path / "staging"
        self.ripples_dir = path / "ripples"
        self.inventory_path = path / "inventory.sqlite"
        self._config: dict[str, Any] | None = None
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ open
    @classmethod
    def open(cls, path: Path | str) -> Repository:
        repo = cls(Path(path))
        if not (repo.path / CONFIG_NAME).is_file():
            raise InputError(
                f"{repo.path} is not a tufwaves repository (no {CONFIG_NAME}); "
                "create one with 'tufwaves repo init'"
            )
        return repo

    @property
    def config(self) -> dict[str, Any]:
        if self._config is None:
            try:
                self._config = json.loads((self.path / CONFIG_NAME).read_bytes())
            except (OSError, ValueError) as e:
                raise StorageError(f"cannot read {self.path / CONFIG_NAME}: {e}") from None
        return self._config

    def write_config(self, config: Mapping[str, Any]) -> None:
        atomic_write(
            self.path / CONFIG_NAME,
            (json.dumps(config, indent=2, sort_keys=True) + "\n").encode(),
        )
        self._config = dict(config)

    def key_name(self, keyid: str) -> str:
        names: dict[str, str] = self.config.get("key_names", {})
        return names.get(keyid, keyid[:12])

    def remember_key_names(self, names: Mapping[str, str]) -> None:
        config = dict(self.config)
        config["key_names"] = {**config.get("key_names", {}), **names}
        self.write_config(config)

    def online_key(self, role: str) -> Key:
        rel = self.config["online_keys"][role]
        return load_public_key(self.path / rel)[1]

    def online_signer(self, role: str) -> Signer:
        rel: str = self.config["online_keys"][role]
        ref = load_key_ref(str(self.path / rel).removesuffix(".pub") + ".key")
        if ref.signer is None:  # pragma: no cover - .key always yields a signer
            raise StorageError(f"no private key for the online {role} key")
        return ref.signer

    # ------------------------------------------------------------------ lock
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the repository lock; wait up to TUFWAVES_LOCK_TIMEOUT seconds."""
        if self._lock_fd is not None:  # re-entrant within one process
            yield
            return
        timeout = float(os.environ.get(LOCK_TIMEOUT_ENV, "120"))
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise StorageError(
                        f"{self.path} is locked by another tufwaves command; "
                        "wait for it to finish and try again"
                    ) from None
                time.sleep(0.05)
        self._lock_fd = fd
        try:
            # A PostgreSQL inventory adds a lock that holds across machines.
            config = self.config if (self.path / CONFIG_NAME).is_file() else {}
            with shared_lock(config, max(0.0, deadline - time.monotonic())):
                yield
        finally:
            self._lock_fd = None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # ------------------------------------------------------------- reading
    def _read(self, name: str) -> bytes:
        try:
            return (self.metadata_dir / name).read_bytes()
        except FileNotFoundError:
            raise StorageError(
                f"{self.metadata_dir / name} is missing; the repository is damaged"
            ) from None

    def is_published(self) -> bool:
        return (self.metadata_dir / "timestamp.json").is_file()

    def state(self) -> PublishedState:
        if not self.is_published():
            raise InputError(
                f"{self.path} has no published metadata yet; finish the "
                "repository ceremony first ('tufwaves repo show')"
            )
        try:
            ts_bytes = self._read("timestamp.json")
            ts = Metadata[Timestamp].from_bytes(ts_bytes)
            snap_version = ts.signed.snapshot_meta.version
            snap = Metadata[Snapshot].from_bytes(self._read(f"{snap_version}.snapshot.json"))
            root = Metadata[Root].from_bytes(self._read("root.json"))
        except DeserializationError as e:
            raise StorageError(f"published metadata is unreadable: {e}") from None
        return PublishedState(ts, snap, root.signed.version, ts_bytes)

    def role_bytes(self, role: str, version: int | None = None) -> bytes:
        if role == "timestamp":
            return self._read("timestamp.json")
        if role == "root":
            if version is None:
                return self._read("root.json")
            return self._read(f"{version}.root.json")
        if version is None:
            found = self.state().version_of(role)
            if found is None:
                raise InputError(f"role {role} is not published")
            version = found
        return self._read(f"{version}.{role}.json")

    def root(self) -> Metadata[Root]:
        return Metadata[Root].from_bytes(self.role_bytes("root"))

    def load_targets(self, role: str, state: PublishedState | None = None) -> Metadata[Targets]:
        version = (state or self.state()).version_of(role)
        if version is None:
            raise InputError(f"role {role} is not published")
        return Metadata[Targets].from_bytes(self.role_bytes(role, version))

    # ------------------------------------------------------------- publish
    def publish(
        self,
        roles: Mapping[str, Metadata[Any]],
        *,
        root: Metadata[Root] | None = None,
        artifacts: Mapping[str, bytes] | None = None,
        extra_files: Mapping[Path, bytes] | None = None,
        snapshot_signer: Signer | None = None,
        timestamp_signer: Signer | None = None,
    ) -> PublishedState:
        """Publish new versions of ``roles`` (and maybe a new root) atomically.

        Each role's version must be one more than the published one (1 for a
        new role). ``artifacts`` maps target-relative paths to bytes, written
        first. Must be called with the lock held.
        """
        if self._lock_fd is None:
            raise RuntimeError("publish() needs the repository lock")
        current = self.state() if self.is_published() else None
        for name, md in roles.items():
            have = current.version_of(name) if current else None
            if md.signed.version != (have or 0) + 1:
                raise StorageError(
                    f"{name} version {md.signed.version} does not follow the "
                    f"published version {have}; another command changed the "
                    "repository, start again"
                )
        snapshot_signer = snapshot_signer or self.online_signer("snapshot")
        timestamp_signer = timestamp_signer or self.online_signer("timestamp")
        written: list[Path] = []

        def write(path: Path, data: bytes) -> None:
            existed = path.exists()
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, data)
            if not existed:
                written.append(path)

        start = now()
        try:
            for rel, data in (artifacts or {}).items():
                write(self.targets_dir / rel, data)
            for path, data in (extra_files or {}).items():
                write(path, data)
            if root is not None:
                write(
                    self.metadata_dir / f"{root.signed.version}.root.json",
                    root.to_bytes(),
                )
            meta: dict[str, MetaFile] = dict(current.snapshot.signed.meta) if current else {}
            for name, md in roles.items():
                write(
                    self.metadata_dir / f"{md.signed.version}.{name}.json",
                    md.to_bytes(),
                )
                meta[f"{name}.json"] = MetaFile(version=md.signed.version)
            snap_version = current.snapshot.signed.version + 1 if current else 1
            snapshot = Metadata(
                Snapshot(
                    version=snap_version,
                    expires=start + timedelta(days=SNAPSHOT_DAYS),
                    meta=dict(sorted(meta.items())),
                )
            )
            snapshot.sign(snapshot_signer)
            snap_bytes = snapshot.to_bytes()
            write(self.metadata_dir / f"{snap_version}.snapshot.json", snap_bytes)
            ts_version = current.timestamp.signed.version + 1 if current else 1
            timestamp = Metadata(
                Timestamp(
                    version=ts_version,
                    expires=start + timedelta(days=TIMESTAMP_DAYS),
                    snapshot_meta=MetaFile(
                        version=snap_version,
                        length=len(snap_bytes),
                        hashes={"sha256": _sha256(snap_bytes)},
                    ),
                )
            )
            timestamp.sign(timestamp_signer)
            ts_bytes = timestamp.to_bytes()
            atomic_write(self.metadata_dir / "timestamp.json", ts_bytes)
        except BaseException:
            for path in reversed(written):
                with contextlib.suppress(OSError):
                    path.unlink()
            raise
        if root is not None:
            # A convenience copy for people and 'repo show'; clients fetch N.root.json.
            atomic_write(self.metadata_dir / "root.json", root.to_bytes())
        return PublishedState(
            timestamp,
            snapshot,
            root.signed.version if root else self.root().signed.version,
        )

    def refresh(self) -> PublishedState:
        """Re-sign snapshot and timestamp with fresh expiry (for a cron job)."""
        with self.locked():
            return self.publish({})


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
