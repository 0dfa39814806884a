"""The on-disk repository: layout, lock, published state, all-or-nothing publish.

Layout of a repository directory ``REPO``::

    REPO/tufwaves.json        repository configuration (key names, online keys)
    REPO/metadata/            published TUF metadata (consistent snapshots)
    REPO/targets/             artifacts, under consistent-snapshot names
    REPO/keys/                online keys (encrypted) and their .pub files
    REPO/staging/             ceremonies in progress (pending signatures)
    REPO/ripples/             Merkle tree files of large ripples
    REPO/inventory.sqlite     the fleet inventory
    REPO/.lock                held while a command changes the repository (shared by dry runs)

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
from datetime import UTC, datetime, timedelta
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
from tufwaves.server.keys import Passphrase, load_key_ref, load_public_key
from tufwaves.server.metadata import Clock, now

__all__ = ["PublishedState", "Repository", "atomic_write"]

CONFIG_NAME = "tufwaves.json"
SNAPSHOT_DAYS = 7
TIMESTAMP_DAYS = 1
LOCK_TIMEOUT_ENV = "TUFWAVES_LOCK_TIMEOUT"


@dataclass(frozen=True)
class PublishedState:
    """What clients currently see: timestamp, snapshot and role versions.

    Attributes:
        timestamp: The published timestamp.
        snapshot: The snapshot it names.
        root_version: The newest root version.
        timestamp_bytes: The timestamp's exact bytes (when read from disk).
    """

    timestamp: Metadata[Timestamp]
    snapshot: Metadata[Snapshot]
    root_version: int
    timestamp_bytes: bytes = b""

    def version_of(self, role: str) -> int | None:
        """The published version of ``role``.

        Args:
            role: A role name other than root and timestamp, e.g. ``"wave.w1"``.

        Returns:
            Its version in the snapshot, or ``None`` if it is not published.
        """
        meta = self.snapshot.signed.meta.get(f"{role}.json")
        return meta.version if meta else None

    def roles(self) -> list[str]:
        """The names of every role the snapshot lists (targets, waves, rollouts...).

        Returns:
            Role names, in snapshot order.
        """
        return [name.removesuffix(".json") for name in self.snapshot.signed.meta]


class Repository:
    """One tufwaves repository directory (layout in the module docstring).

    Open an existing one with :meth:`open`; create one with
    :func:`~tufwaves.server.roots.create_repository`. Every change takes the
    repository lock (:meth:`locked`), so several processes may share it.

    Args:
        path: The repository directory.
        clock: Returns the current time for everything the repository signs
            (expiry of snapshot and timestamp, rollout times, expiry checks);
            default: the real UTC time. Tests and simulations pass their own.
        passphrase: The passphrase of the online keys in ``REPO/keys`` (bytes,
            or a callable asked with what it is for); default ``None`` reads
            ``TUFWAVES_KEY_PASSPHRASE`` or prompts at a terminal.

    Attributes:
        clock: As above; may be replaced at any time.
        passphrase: As above.
    """

    def __init__(
        self, path: Path, *, clock: Clock | None = None, passphrase: Passphrase = None
    ) -> None:
        self.path = path
        self.clock: Clock = clock or now
        self.passphrase: Passphrase = passphrase
        self.metadata_dir = path / "metadata"
        self.targets_dir = path / "targets"
        self.keys_dir = path / "keys"
        self.staging_dir = path / "staging"
        self.ripples_dir = path / "ripples"
        self.inventory_path = path / "inventory.sqlite"
        self._config: dict[str, Any] | None = None
        self._lock_fd: int | None = None
        self._lock_shared = False

    # ------------------------------------------------------------------ open
    @classmethod
    def open(
        cls, path: Path | str, *, clock: Clock | None = None, passphrase: Passphrase = None
    ) -> Repository:
        """Open an existing repository.

        Args:
            path: The repository directory.
            clock: See the class docstring (default: the real UTC time).
            passphrase: The online keys' passphrase; see the class docstring.

        Returns:
            The repository.

        Raises:
            InputError: ``path`` is not a tufwaves repository.
        """
        repo = cls(Path(path), clock=clock, passphrase=passphrase)
        if not (repo.path / CONFIG_NAME).is_file():
            raise InputError(
                f"{repo.path} is not a tufwaves repository (no {CONFIG_NAME}); "
                "create one with 'tufwaves repo init'"
            )
        return repo

    def now(self) -> datetime:
        """The repository clock's time, in UTC and whole seconds.

        Returns:
            The current time as this repository sees it.
        """
        return self.clock().astimezone(UTC).replace(microsecond=0)

    @property
    def config(self) -> dict[str, Any]:
        """The repository configuration (``tufwaves.json``).

        Raises:
            StorageError: It cannot be read.
        """
        if self._config is None:
            try:
                self._config = json.loads((self.path / CONFIG_NAME).read_bytes())
            except (OSError, ValueError) as e:
                raise StorageError(f"cannot read {self.path / CONFIG_NAME}: {e}") from None
        return self._config

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Replace the repository configuration (``tufwaves.json``).

        Args:
            config: The whole new configuration.
        """
        atomic_write(
            self.path / CONFIG_NAME,
            (json.dumps(config, indent=2, sort_keys=True) + "\n").encode(),
        )
        self._config = dict(config)

    def key_name(self, keyid: str) -> str:
        """The name of a key, for messages.

        Args:
            keyid: The key id.

        Returns:
            Its recorded name, or the first 12 digits of the key id.
        """
        names: dict[str, str] = self.config.get("key_names", {})
        return names.get(keyid, keyid[:12])

    def remember_key_names(self, names: Mapping[str, str]) -> None:
        """Record the names of keys (used in messages and ceremony files).

        Args:
            names: Key id to name.
        """
        config = dict(self.config)
        config["key_names"] = {**config.get("key_names", {}), **names}
        self.write_config(config)

    def _online_pub(self, role: str) -> Path:
        """The .pub file of the online ``role`` key, as tufwaves.json names it."""
        keys = self.config.get("online_keys")
        rel = keys.get(role) if isinstance(keys, dict) else None
        if not isinstance(rel, str):
            raise StorageError(
                f"{self.path / CONFIG_NAME} names no online {role} key (online_keys.{role}); "
                "the repository configuration is damaged: restore it from a backup"
            )
        return self.path / rel

    def online_key(self, role: str) -> Key:
        """The public online key of ``role``.

        Args:
            role: ``"snapshot"``, ``"timestamp"`` or ``"rollout"``.

        Returns:
            The public key.

        Raises:
            InputError: The ``.pub`` file is malformed.
            StorageError: The repository names no such key or its file is missing.
        """
        return load_public_key(self._online_pub(role))[1]

    def online_signer(self, role: str) -> Signer:
        """The online ``role`` key's signer: its ``.pub``'s private-key URI if
        it names one, else the ``.key`` beside it, decrypted with
        :attr:`passphrase` (default: the online keys' passphrase variable).

        Args:
            role: ``"snapshot"``, ``"timestamp"`` or ``"rollout"``.

        Returns:
            The signer.

        Raises:
            KeyUseError: The key cannot be read or decrypted.
            StorageError: The repository names no such key or its file is missing.
        """
        pub = self._online_pub(role)
        uri = load_public_key(pub)[2]
        spec = str(pub) if uri else str(pub).removesuffix(".pub") + ".key"
        ref = load_key_ref(spec, passphrase=self.passphrase, online=True)
        if ref.signer is None:  # pragma: no cover - .key always yields a signer
            raise StorageError(f"no private key for the online {role} key")
        return ref.signer

    # ------------------------------------------------------------------ lock
    @contextlib.contextmanager
    def locked(self, *, shared: bool = False) -> Iterator[None]:
        """Hold the repository lock; wait up to TUFWAVES_LOCK_TIMEOUT seconds.

        The exclusive lock (the default) is for commands that change the
        repository: a repository this process cannot write (a read-only copy)
        is refused with a StorageError, and so is any failure to write inside
        the block. ``shared=True`` is for a command that only reads but wants
        a view no writer changes under it: it waits for a running writer if
        the lock file can be opened and otherwise reads without a lock.

        Re-entrant within one process. Every function of the server API that
        changes the repository takes it itself.

        Args:
            shared: Take the shared lock of a reader instead.

        Yields:
            Nothing: the lock is held inside the ``with`` block.

        Raises:
            StorageError: Another process held it for the whole timeout, or the
                repository cannot be written (exclusive lock only).
        """
        if self._lock_fd is not None:  # re-entrant within one process
            if not shared and self._lock_shared:
                raise RuntimeError("cannot upgrade a shared repository lock")
            yield
            return
        fd = self._open_lock(shared)
        if fd is None:  # a read-only copy without a usable lock file
            yield
            return
        deadline = self._wait_for_lock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        self._lock_fd, self._lock_shared = fd, shared
        try:
            if shared:
                yield
            else:
                # A PostgreSQL inventory adds a lock that holds across machines.
                config = self.config if (self.path / CONFIG_NAME).is_file() else {}
                with shared_lock(config, max(0.0, deadline - time.monotonic())):
                    yield
        except OSError as e:
            doing = "reading" if shared else "changing"
            raise StorageError(f"{_os_reason(e)} (while {doing} {self.path})") from e
        finally:
            self._lock_fd = None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _open_lock(self, shared: bool) -> int | None:
        lock = self.path / ".lock"
        try:
            if shared:
                return os.open(lock, os.O_RDONLY)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            if shared and e.errno in (errno.ENOENT, errno.EACCES, errno.EPERM):
                return None
            raise StorageError(
                f"{self.path} cannot be changed by this process: cannot open its "
                f"lock file {lock} for writing ({e.strerror}). Is this a read-only "
                "copy? Change the repository where it is writable; copies only serve "
                "reads (list, show, status, bundle, dry runs)"
            ) from None
        read_only = next(
            (d for d in (self.path, self.metadata_dir) if d.is_dir() and not _writable(d)),
            None,
        )
        if read_only is not None:
            os.close(fd)
            raise StorageError(
                f"{self.path} cannot be changed by this process: {read_only} is not "
                "writable. Is this a read-only copy? Change the repository where it "
                "is writable; copies only serve reads (list, show, status, bundle, "
                "dry runs)"
            )
        return fd

    def _wait_for_lock(self, fd: int, operation: int) -> float:
        """Take the file lock; return the monotonic deadline of the wait."""
        timeout = float(os.environ.get(LOCK_TIMEOUT_ENV, "120"))
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, operation | fcntl.LOCK_NB)
                return deadline
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

    # ------------------------------------------------------------- reading
    def _read(self, name: str) -> bytes:
        try:
            return (self.metadata_dir / name).read_bytes()
        except FileNotFoundError:
            raise StorageError(
                f"{self.metadata_dir / name} is missing; the repository is damaged"
            ) from None

    def is_published(self) -> bool:
        """Whether a first publish happened (the repository ceremony is over).

        Returns:
            True when ``metadata/timestamp.json`` exists.
        """
        return (self.metadata_dir / "timestamp.json").is_file()

    def state(self) -> PublishedState:
        """What clients see now.

        Returns:
            The published timestamp, snapshot and root version.

        Raises:
            InputError: Nothing is published yet.
            StorageError: Published metadata is missing or unreadable.
        """
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
        """The exact published bytes of a role's metadata.

        Args:
            role: The role name.
            version: Which version (default: the current one). ``root`` version
                1 is what devices are provisioned with.

        Returns:
            The metadata file's bytes.

        Raises:
            InputError: The role is not published.
            StorageError: The file is missing.
        """
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

    def published(self, role: str) -> Metadata[Any] | None:
        """The currently published metadata of ``role``, or None if there is none.

        Args:
            role: a role name (``root``, ``targets``, ``wave.W``, ...).

        Returns:
            The metadata as published, signatures included.

        Raises:
            StorageError: the published file is unreadable.
        """
        if not self.is_published():
            return None
        if role != "root" and self.state().version_of(role) is None:
            return None
        try:
            return Metadata.from_bytes(self.role_bytes(role))
        except DeserializationError as e:
            raise StorageError(f"published {role} metadata is unreadable: {e}") from None

    def root(self) -> Metadata[Root]:
        """The newest published root.

        Returns:
            The root metadata.

        Raises:
            StorageError: ``root.json`` is missing or unreadable.
        """
        try:
            return Metadata[Root].from_bytes(self.role_bytes("root"))
        except DeserializationError as e:
            raise self._unreadable("root.json", e) from None

    def load_targets(self, role: str, state: PublishedState | None = None) -> Metadata[Targets]:
        """A published targets-type role (targets, wave, rollout, ripple).

        Args:
            role: The role name.
            state: The published state to read it from (default: the current one).

        Returns:
            The role's metadata.

        Raises:
            InputError: The role is not published.
            StorageError: Its file is missing or unreadable.
        """
        version = (state or self.state()).version_of(role)
        if version is None:
            raise InputError(f"role {role} is not published")
        try:
            return Metadata[Targets].from_bytes(self.role_bytes(role, version))
        except DeserializationError as e:
            raise self._unreadable(f"{version}.{role}.json", e) from None

    def _unreadable(self, name: str, e: Exception) -> StorageError:
        return StorageError(
            f"{self.metadata_dir / name} is not valid TUF metadata ({e}); the published "
            "repository is damaged: restore the file from a backup or the web server copy"
        )

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

        A new snapshot and timestamp are signed with the online keys, expiring
        7 days and 1 day after :meth:`now`. Must be called with the lock held.

        Args:
            roles: Role name to new, signed metadata; each version must be one
                more than the published one (1 for a new role).
            root: A new, signed root version.
            artifacts: Target-relative path to bytes, written first.
            extra_files: Other files to write in the same step.
            snapshot_signer: Instead of the online snapshot key.
            timestamp_signer: Instead of the online timestamp key.

        Returns:
            The new published state.

        Raises:
            RuntimeError: The lock is not held.
            StorageError: A version does not follow the published one (another
                process published meanwhile) or a file cannot be written.
        """
        if self._lock_fd is None or self._lock_shared:
            raise RuntimeError("publish() needs the exclusive repository lock")
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

        start = self.now()
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

    def expiries(self, state: PublishedState | None = None) -> dict[str, datetime]:
        """When each published role expires.

        Args:
            state: The published state to read (default: the current one).

        Returns:
            Role name -> expiry: root, timestamp, snapshot, then every role the
            snapshot lists (targets, waves, rollouts, ripples).

        Raises:
            StorageError: A published role is unreadable.
        """
        state = state or self.state()
        found = {
            "root": self.root().signed.expires,
            "timestamp": state.timestamp.signed.expires,
            "snapshot": state.snapshot.signed.expires,
        }
        for role in sorted(state.roles(), key=lambda r: (r != "targets", r)):
            try:
                md = Metadata[Any].from_bytes(self.role_bytes(role, state.version_of(role)))
            except DeserializationError as e:
                raise StorageError(f"published role {role} is unreadable: {e}") from None
            found[role] = md.signed.expires
        return found

    def refresh(self) -> PublishedState:
        """Re-sign snapshot and timestamp with fresh expiry (for a cron job).

        Returns:
            The new published state.

        Raises:
            StorageError: The lock is busy or a file cannot be written.
        """
        with self.locked():
            return self.publish({})


def _writable(directory: Path) -> bool:
    return os.access(directory, os.W_OK | os.X_OK)


def _os_reason(e: OSError) -> str:
    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{e.strerror or e}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
