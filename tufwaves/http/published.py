"""A consistent, cached view of what the repository has published.

The repository publishes with ``timestamp.json`` as the commit point: every
other file of a publish is written first under a versioned name
(``N.ROLE.json``) and never changed afterwards. So a reader that reads
``timestamp.json`` once and then only versioned files named by that
timestamp's snapshot sees exactly one published state, whatever publishes
meanwhile. :class:`StateCache` does that and keeps, per published state, what
every request would otherwise compute again; it notices a new state by the
identity of ``timestamp.json`` (inode, size, modification time: a publish
replaces the file by rename) and drops the per-state entries then.

The only unversioned input is the root version (the root is not listed in the
snapshot). A root rotation writes ``N+1.root.json`` before the timestamp and
refreshes ``root.json`` after it, so while ``N+1.root.json`` exists and
``root.json`` still says N a rotation is in progress (or just committed) and
the state cannot be told; :meth:`StateCache.current` waits for it briefly and
otherwise raises :class:`Busy` (the server answers 503 with Retry-After).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp
from tuf.api.serialization import DeserializationError

from tufwaves.errors import InputError, StorageError
from tufwaves.server.metadata import Clock
from tufwaves.server.repository import PublishedState, Repository

__all__ = ["Busy", "CachingRepository", "ServedState", "StateCache", "Unpublished"]

CACHE_BYTES = 64 * 1024 * 1024
"""Upper bound of the versioned-metadata cache (bytes of file content)."""

ROTATION_WAIT = 2.0
"""Seconds to wait for a root rotation in progress before answering 503."""


class Busy(Exception):
    """A root rotation is being published; ask again shortly."""


class Unpublished(Exception):
    """The repository has no published metadata yet."""


class _Lru:
    """Immutable (role, version) -> bytes / parsed metadata, bounded by size."""

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._used = 0
        self._items: OrderedDict[tuple[str, str, int], tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, int]) -> Any | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: tuple[str, str, int], value: Any, size: int) -> None:
        if size > self._budget:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = (value, size)
            self._used += size
            while self._used > self._budget:
                _, (_, dropped) = self._items.popitem(last=False)
                self._used -= dropped


class CachingRepository(Repository):
    """A read-only :class:`Repository` that caches versioned metadata files.

    ``N.ROLE.json`` never changes once written, so its bytes (and parsed
    targets metadata) are cached without invalidation; the unversioned
    ``timestamp.json`` and ``root.json`` are always read from disk.
    """

    def __init__(
        self, path: Path, cache_bytes: int = CACHE_BYTES, *, clock: Clock | None = None
    ) -> None:
        super().__init__(path, clock=clock)
        self._cache = _Lru(cache_bytes)

    def role_bytes(self, role: str, version: int | None = None) -> bytes:
        if version is None or role == "timestamp":
            return super().role_bytes(role, version)
        key = ("bytes", role, version)
        data = self._cache.get(key)
        if data is None:
            data = super().role_bytes(role, version)
            self._cache.put(key, data, len(data))
        return cast(bytes, data)

    def load_targets(self, role: str, state: PublishedState | None = None) -> Metadata[Targets]:
        version = (state or self.state()).version_of(role)
        if version is None:
            raise InputError(f"role {role} is not published")
        key = ("targets", role, version)
        md = self._cache.get(key)
        if md is None:
            data = self.role_bytes(role, version)
            md = Metadata[Targets].from_bytes(data)
            self._cache.put(key, md, 2 * len(data))
        return cast(Metadata[Targets], md)


@dataclass
class ServedState:
    """One published state and what was derived from it."""

    state: PublishedState
    etag: str  # of timestamp.json
    derived: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def memo(self, key: str, compute: Any) -> Any:
        """``compute()`` once per state (per key)."""
        with self.lock:
            if key in self.derived:
                return self.derived[key]
        value = compute()
        with self.lock:
            return self.derived.setdefault(key, value)


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class StateCache:
    """The current :class:`ServedState` of one repository, shared by requests."""

    def __init__(self, repo: CachingRepository, rotation_wait: float = ROTATION_WAIT) -> None:
        self.repo = repo
        self.rotation_wait = rotation_wait
        self._lock = threading.Lock()
        self._identity: tuple[int, int, int, int] | None = None
        self._served: ServedState | None = None

    def current(self) -> ServedState:
        deadline = time.monotonic() + self.rotation_wait
        while True:
            identity = _identity(self.repo.metadata_dir / "timestamp.json")
            if identity is None:
                raise Unpublished
            with self._lock:
                if self._served is not None and identity == self._identity:
                    return self._served
            served = self._read()
            if served is not None:
                with self._lock:
                    self._identity, self._served = identity, served
                return served
            if time.monotonic() >= deadline:
                raise Busy
            time.sleep(0.05)

    def _read(self) -> ServedState | None:
        """Read one consistent state; None while a root rotation is in flight."""
        repo = self.repo
        timestamp = repo.metadata_dir / "timestamp.json"
        try:
            ts_bytes = timestamp.read_bytes()
            ts = Metadata[Timestamp].from_bytes(ts_bytes)
            snap_version = ts.signed.snapshot_meta.version
            snap = Metadata[Snapshot].from_bytes(repo.role_bytes("snapshot", snap_version))
            root_version = Metadata[Root].from_bytes(repo.role_bytes("root")).signed.version
            if (repo.metadata_dir / f"{root_version + 1}.root.json").exists():
                return None  # a rotation to root_version + 1 is being published
            # root.json is refreshed after the timestamp of its publish: if the
            # timestamp did not change meanwhile, the root read belongs to it.
            if timestamp.read_bytes() != ts_bytes:
                return None
        except DeserializationError as e:
            raise StorageError(f"published metadata is unreadable: {e}") from None
        etag = '"' + hashlib.sha256(ts_bytes).hexdigest()[:32] + '"'
        return ServedState(PublishedState(ts, snap, root_version, ts_bytes), etag)
