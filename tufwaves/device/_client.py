"""The TUF client workflow over exact metadata bytes, with a reference time.

:class:`Chain` is the trusted set: it loads root, timestamp, snapshot, targets
and delegated targets in that order, verifying each with python-tuf's metadata
API (``Metadata.from_bytes``, ``verify_delegate``, ``MetaFile``) against the
trusted state a device kept from its last run (:class:`TrustState`). Every
failure is a :class:`ChainError` carrying a :class:`Reason`.

:func:`refresh` and :func:`load_role` drive a :class:`Chain` from a
:class:`Source`: the bundle (:class:`BundleSource`) or, for the conformance
client, HTTP. The same code path verifies both.

python-tuf's ``TrustedMetadataSet`` is not reused: it fixes the reference time
at construction and keeps rollback state as whole files, while a device keeps
versions (and needs one reason per failure).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Protocol, TypeVar

from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Signed,
    Snapshot,
    Targets,
    Timestamp,
)

from tufwaves._files import PRIVATE_MODE, atomic_write
from tufwaves.device._rules import Reason
from tufwaves.device.bundle import LIMITS, Bundle, BundleFile, role_size_cap
from tufwaves.device.profile import is_wave_name
from tufwaves.errors import StorageError

__all__ = [
    "BundleSource",
    "Chain",
    "ChainError",
    "EqualTimestampError",
    "ExpiredError",
    "Fetched",
    "SnapshotRecord",
    "Source",
    "TimestampRecord",
    "TrustState",
    "atomic_write",
    "load_role",
    "read_state_dir",
    "refresh",
    "write_state_dir",
]

logger = logging.getLogger(__name__)

STATE_FORMAT: Final = "tufwaves-verifier-state"
STATE_VERSION: Final = 1
STATE_FILE: Final = "state.json"
ROOTS_DIR: Final = "roots"
INITIAL_ROOT: Final = "root.json"
_STATE_MAX_BYTES: Final = 16_000_000

S = TypeVar("S", Root, Timestamp, Snapshot, Targets)
_LOWER_HEX: Final = re.compile(r"[0-9a-f]*")
_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _content_digest(md: Metadata[Any]) -> str:
    """SHA-256 of the canonical JSON of ``signed``: what identifies a file.

    Two encodings of the same signed content (whitespace, key order, extra or
    fewer signatures) are the same file: signatures are checked over exactly
    these bytes, and anyone can re-encode a file or change its signature list
    without a key. The trust state records this digest, never the hash of the
    bytes a bundle happened to carry.
    """
    return _sha256(md.signed_bytes)


def _same_content(record: str, md: Metadata[Any], data: bytes) -> bool:
    """True iff ``record`` names the content of ``md`` (read from ``data``).

    State files written before records named content hold the SHA-256 of the
    exact bytes: those still match the identical file.
    """
    return record in (_content_digest(md), _sha256(data))


class ChainError(Exception):
    """A metadata file failed a step of the workflow."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class EqualTimestampError(ChainError):
    """A timestamp has the trusted version but different signed content."""


class ExpiredError(ChainError):
    """A metadata file verified but is expired at the reference time."""


# --------------------------------------------------------------------------
# Trusted state


@dataclass(frozen=True)
class TimestampRecord:
    """What a device remembers of the last verified timestamp."""

    version: int
    snapshot_version: int
    sha256: str


@dataclass(frozen=True)
class SnapshotRecord:
    """What a device remembers of the last verified snapshot."""

    version: int
    meta: Mapping[str, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))


@dataclass(frozen=True)
class TrustState:
    """A device's trust: its root (exact bytes) and what it last verified.

    ``roots`` maps every root version the device ever trusted to its content
    digest (so a bundle may repeat older roots in any encoding); the
    timestamp record holds the timestamp's content digest.
    """

    root: bytes
    roots: Mapping[int, str] = field(default_factory=dict)
    timestamp: TimestampRecord | None = None
    snapshot: SnapshotRecord | None = None
    cancelled: frozenset[str] = frozenset()  # waves seen cancelled: final on the device

    def __post_init__(self) -> None:
        object.__setattr__(self, "roots", MappingProxyType(dict(self.roots)))

    def to_dict(self, root_version: int) -> dict[str, Any]:
        """The ``state.json`` object of ``specs/verifier.md``."""
        ts, snap = self.timestamp, self.snapshot
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "root": {"version": root_version, "sha256": _sha256(self.root)},
            "roots": {str(v): h for v, h in sorted(self.roots.items())},
            "timestamp": None
            if ts is None
            else {
                "version": ts.version,
                "snapshot_version": ts.snapshot_version,
                "sha256": ts.sha256,
            },
            "snapshot": None
            if snap is None
            else {"version": snap.version, "meta": dict(sorted(snap.meta.items()))},
            "cancelled": sorted(self.cancelled),
        }


def _version(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"bad version {value!r}")
    return value


def _hex(value: object) -> str:
    if not isinstance(value, str) or not _SHA256_HEX.fullmatch(value):
        raise ValueError("bad sha256")
    return value


def _state_from_dict(d: Any, root_of: Callable[[int], bytes]) -> TrustState:
    if not isinstance(d, dict) or d.get("format") != STATE_FORMAT:
        raise ValueError("not a tufwaves verifier state file")
    base = {"format", "version", "root", "roots", "timestamp", "snapshot"}
    if d.get("version") != STATE_VERSION or set(d) not in (base, base | {"cancelled"}):
        raise ValueError("unsupported state file version or keys")
    cancelled = d.get("cancelled", [])
    if not isinstance(cancelled, list) or not all(is_wave_name(n) for n in cancelled):
        raise ValueError("bad list of cancelled waves")
    root_version = _version(d["root"]["version"])
    root = root_of(root_version)
    if _sha256(root) != _hex(d["root"]["sha256"]):
        raise ValueError(f"root v{root_version} does not match its recorded hash")
    roots = {int(v): _hex(h) for v, h in d["roots"].items()}
    ts = d["timestamp"]
    snap = d["snapshot"]
    return TrustState(
        root,
        roots,
        None
        if ts is None
        else TimestampRecord(
            _version(ts["version"]),
            _version(ts["snapshot_version"]),
            _hex(ts["sha256"]),
        ),
        None
        if snap is None
        else SnapshotRecord(
            _version(snap["version"]),
            {str(k): _version(v) for k, v in snap["meta"].items()},
        ),
        frozenset(cancelled),
    )


def _root_md(data: bytes) -> Metadata[Root]:
    md = Metadata[Root].from_bytes(data)
    if not isinstance(md.signed, Root):
        raise ValueError("not root metadata")
    return md


def _root_version_of(data: bytes) -> int:
    return int(_root_md(data).signed.version)


def _entry(path: Path, *, directory: bool = False) -> bool:
    """True iff ``path`` exists; refuse a symbolic link or the wrong kind of entry.

    Nothing in a state directory may be a symbolic link: the verifier must
    not read or write outside the directory it was given.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(mode):
        raise ValueError(f"{path.name} is a symbolic link, which a state directory must not hold")
    if not (stat.S_ISDIR(mode) if directory else stat.S_ISREG(mode)):
        raise ValueError(f"{path.name} is not a {'directory' if directory else 'regular file'}")
    return True


_READ_FLAGS: Final = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


def _read_capped(path: Path, cap: int) -> bytes:
    """The bytes of the regular file ``path``, refused if over ``cap`` bytes.

    Not a symbolic link (``O_NOFOLLOW``), not a device or pipe, and never more
    than ``cap + 1`` bytes read.
    """
    if not _entry(path):
        raise FileNotFoundError(f"{path.name} does not exist")
    with os.fdopen(os.open(path, _READ_FLAGS), "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ValueError(f"{path.name} is not a regular file")
        data = f.read(cap + 1)
    if len(data) > cap:
        raise ValueError(f"{path.name} is over its size cap of {cap:,} bytes")
    return data


def read_state_dir(path: Path) -> TrustState:
    """Load the trust state of a device state directory.

    ``state.json`` when present, else the provisioned ``root.json`` alone.
    No file or folder in the directory may be a symbolic link, and every read
    is capped (roots at the bundle's root cap).

    Raises:
        StorageError: the directory, a root file or ``state.json`` cannot be
            read or is inconsistent.
    """
    state_file = path / STATE_FILE
    try:
        if not _entry(state_file):
            root = _read_capped(path / INITIAL_ROOT, LIMITS.root_bytes)
            md = _root_md(root)
            return TrustState(root, {md.signed.version: _content_digest(md)})
        raw = _read_capped(state_file, _STATE_MAX_BYTES)

        def root_of(version: int) -> bytes:
            roots = path / ROOTS_DIR
            if not _entry(roots, directory=True):
                raise FileNotFoundError(f"{ROOTS_DIR}/ does not exist")
            return _read_capped(roots / f"{version}.root.json", LIMITS.root_bytes)

        return _state_from_dict(json.loads(raw), root_of)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise StorageError(
            f"cannot use the verifier state in {path}: {e} (provision the "
            "directory with the device's trusted root as root.json)"
        ) from e
    except Exception as e:  # python-tuf parse errors of root.json
        raise StorageError(f"cannot use the trusted root in {path}: {e}") from e


def write_state_dir(path: Path, state: TrustState) -> None:
    """Persist ``state`` in ``path`` so that a crash leaves the old state usable.

    The root goes first to ``roots/N.root.json`` (a new file, never rewritten),
    then ``state.json`` is replaced atomically; until that rename the previous
    ``state.json`` (and the root it names) is what the next run loads. A
    symbolic link where one of these is expected is refused.

    Raises:
        StorageError: a file could not be written.
    """
    try:
        version = _root_version_of(state.root)
        roots = path / ROOTS_DIR
        if not _entry(roots, directory=True):
            roots.mkdir()
        root_file = roots / f"{version}.root.json"
        if not _entry(root_file) or _read_capped(root_file, LIMITS.root_bytes) != state.root:
            atomic_write(root_file, state.root, mode=PRIVATE_MODE)
        _entry(path / STATE_FILE)
        body = json.dumps(state.to_dict(version), indent=1, sort_keys=True)
        atomic_write(path / STATE_FILE, body.encode("ascii"), mode=PRIVATE_MODE)
    except (OSError, ValueError) as e:
        raise StorageError(f"cannot write the verifier state in {path}: {e}") from e


# --------------------------------------------------------------------------
# The trusted set


def _load(kind: type[S], data: bytes, reason: Reason, what: str) -> tuple[Metadata[S], S]:
    """Parse ``data`` as metadata of type ``kind``; any failure is ``reason``."""
    cap = role_size_cap(kind.type)
    if len(data) > cap:
        raise ChainError(Reason.BUNDLE_TOO_LARGE, f"{what} has {len(data):,} bytes; cap {cap:,}")
    try:
        md = Metadata[S].from_bytes(data)
    except Exception as e:  # python-tuf wraps parse errors; stay closed anyway
        raise ChainError(reason, f"{what} is not valid TUF metadata: {e}") from None
    for sig in md.signatures.values():
        if not _LOWER_HEX.fullmatch(sig.signature):
            raise ChainError(reason, f"{what} has a signature that is not lowercase hex")
    if not isinstance(md.signed, kind):
        raise ChainError(reason, f"{what} is {md.signed.type!r} metadata, expected {kind.type!r}")
    return md, md.signed


def _verify(
    delegator: Root | Targets,
    role: str,
    md: Metadata[Any],
    reason: Reason,
    what: str,
) -> None:
    try:
        delegator.verify_delegate(role, md.signed_bytes, md.signatures)
    except Exception as e:  # UnsignedMetadataError, ValueError, signer errors
        raise ChainError(reason, f"{what} is not signed as delegated: {e}") from None


def _expired(signed: Signed, at: datetime, what: str) -> None:
    if signed.is_expired(at):
        raise ExpiredError(
            Reason.METADATA_EXPIRED,
            f"{what} expired at {signed.expires:%Y-%m-%dT%H:%M:%SZ}",
        )


def _declared(declared: int | None, actual: int, reason: Reason, what: str) -> None:
    if declared is not None and declared != actual:
        raise ChainError(reason, f"{what} was given as version {declared} but is version {actual}")


class Chain:
    """The trusted set of one update, with an explicit reference time.

    Load in order: roots (:meth:`update_root`), :meth:`finish_roots`,
    :meth:`update_timestamp`, :meth:`update_snapshot`, then :meth:`update_targets`
    for ``targets`` and each delegated role after its delegator. Out-of-order
    calls raise ``RuntimeError`` (a bug, not bad input).
    """

    def __init__(self, state: TrustState, at: datetime) -> None:
        """Start from ``state``; ``at`` is the reference time for expiry.

        Raises:
            ChainError: the trusted root itself does not parse or verify.
        """
        if at.tzinfo is None:
            raise ValueError("reference time must be timezone-aware")
        self.at = at
        md, root = _load(Root, state.root, Reason.ROOT_INVALID, "trusted root")
        _verify(root, Root.type, md, Reason.ROOT_INVALID, "trusted root")
        self.root: Root = root
        self._initial_root = root
        self._root_bytes = state.root
        self._roots = dict(state.roots)
        self._roots[root.version] = _content_digest(md)
        self._prior_ts = state.timestamp
        self._prior_snap = state.snapshot
        self._stage = 0  # 0 roots, 1 timestamp, 2 snapshot, 3 targets
        self.timestamp: Timestamp | None = None
        self._ts_sha256 = ""
        self.snapshot: Snapshot | None = None
        self._roles: dict[str, Targets] = {}
        self._pairs: set[tuple[str, str]] = set()

    # -- root ----------------------------------------------------------------

    def _stage_is(self, stage: int, what: str) -> None:
        if self._stage != stage:
            raise RuntimeError(f"{what} loaded out of order")

    def check_known_root(self, data: bytes, version: int) -> None:
        """Accept a root the device already passed: same version, same signed content."""
        self._stage_is(0, "known root")
        record = self._roots.get(version)
        known = False
        if record is not None and version <= self.root.version:
            md, _ = _load(Root, data, Reason.ROOT_ROLLBACK, f"root v{version}")
            known = _same_content(record, md, data)
        if not known:
            raise ChainError(
                Reason.ROOT_ROLLBACK,
                f"root v{version} is not newer than the trusted root "
                f"v{self.root.version} and is not the root this device trusted "
                "at that version",
            )

    def update_root(self, data: bytes, declared: int | None = None) -> Root:
        """Verify the next root with the trusted root's and its own threshold."""
        self._stage_is(0, "root")
        expected = self.root.version + 1
        what = f"root v{expected}"
        md, new = _load(Root, data, Reason.ROOT_INVALID, what)
        _declared(declared, new.version, Reason.ROOT_INVALID, what)
        if new.version != expected:
            raise ChainError(
                Reason.ROOT_INVALID,
                f"expected root version {expected}, got version {new.version}",
            )
        _verify(self.root, Root.type, md, Reason.ROOT_INVALID, f"{what} (old keys)")
        _verify(new, Root.type, md, Reason.ROOT_INVALID, f"{what} (new keys)")
        self.root = new
        self._root_bytes = data
        self._roots[new.version] = _content_digest(md)
        return new

    def finish_roots(self) -> None:
        """End root rotation: the final root must not be expired.

        If the timestamp or snapshot keys changed, forget the trusted
        timestamp and snapshot (fast-forward attack recovery, TUF 5.3.11).
        """
        self._stage_is(0, "final root")
        _expired(self.root, self.at, f"root v{self.root.version}")
        old, new = self._initial_root.roles, self.root.roles
        for role in (Timestamp.type, Snapshot.type):
            if set(old[role].keyids) != set(new[role].keyids):
                self._prior_ts = None
                self._prior_snap = None
        self._stage = 1

    # -- local copies (conformance client) -----------------------------------

    def adopt_prior_timestamp(self, data: bytes) -> bool:
        """Use a locally stored timestamp, if the root signs it, for rollback checks."""
        self._stage_is(1, "local timestamp")
        try:
            md, ts = _load(Timestamp, data, Reason.TIMESTAMP_INVALID, "local timestamp")
            _verify(self.root, Timestamp.type, md, Reason.TIMESTAMP_INVALID, "local")
        except ChainError:
            return False
        self._prior_ts = TimestampRecord(ts.version, ts.snapshot_meta.version, _content_digest(md))
        return True

    def adopt_prior_snapshot(self, data: bytes) -> bool:
        """Use a locally stored snapshot, if the root signs it, for rollback checks."""
        self._stage_is(2, "local snapshot")
        try:
            md, snap = _load(Snapshot, data, Reason.SNAPSHOT_INVALID, "local snapshot")
            _verify(self.root, Snapshot.type, md, Reason.SNAPSHOT_INVALID, "local")
        except ChainError:
            return False
        self._prior_snap = SnapshotRecord(
            snap.version, {k: v.version for k, v in snap.meta.items()}
        )
        return True

    # -- timestamp and snapshot ---------------------------------------------

    def update_timestamp(self, data: bytes, declared: int | None = None) -> Timestamp:
        """Verify the timestamp: signature, rollback, expiry."""
        self._stage_is(1, "timestamp")
        md, ts = _load(Timestamp, data, Reason.TIMESTAMP_INVALID, "timestamp")
        _verify(self.root, Timestamp.type, md, Reason.TIMESTAMP_INVALID, "timestamp")
        _declared(declared, ts.version, Reason.TIMESTAMP_INVALID, "timestamp")
        prior = self._prior_ts
        if prior is not None:
            if ts.version < prior.version:
                raise ChainError(
                    Reason.ROLLBACK,
                    f"timestamp v{ts.version} is older than the trusted v{prior.version}",
                )
            if ts.version == prior.version and not _same_content(prior.sha256, md, data):
                raise EqualTimestampError(
                    Reason.TIMESTAMP_INVALID,
                    f"timestamp v{ts.version} differs from the timestamp v"
                    f"{prior.version} this device already trusted",
                )
            if ts.snapshot_meta.version < prior.snapshot_version:
                raise ChainError(
                    Reason.ROLLBACK,
                    f"timestamp names snapshot v{ts.snapshot_meta.version}, older "
                    f"than the trusted v{prior.snapshot_version}",
                )
        _expired(ts, self.at, f"timestamp v{ts.version}")
        self.timestamp = ts
        self._ts_sha256 = _content_digest(md)
        self._stage = 2
        return ts

    def update_snapshot(
        self, data: bytes, declared: int | None = None, *, local: bool = False
    ) -> Snapshot:
        """Verify the snapshot against the timestamp and the trusted snapshot.

        ``local`` skips the length and hash check of a snapshot that this
        client verified earlier (its bytes may predate the current timestamp).
        """
        self._stage_is(2, "snapshot")
        assert self.timestamp is not None  # noqa: S101 - stage 2 implies it
        meta = self.timestamp.snapshot_meta
        if len(data) > LIMITS.snapshot_bytes:
            raise ChainError(Reason.BUNDLE_TOO_LARGE, "snapshot is over its cap")
        if not local:
            try:
                meta.verify_length_and_hashes(data)
            except Exception as e:
                raise ChainError(
                    Reason.SNAPSHOT_INVALID,
                    f"snapshot does not match the length or hash in timestamp: {e}",
                ) from None
        md, snap = _load(Snapshot, data, Reason.SNAPSHOT_INVALID, "snapshot")
        _verify(self.root, Snapshot.type, md, Reason.SNAPSHOT_INVALID, "snapshot")
        _declared(declared, snap.version, Reason.SNAPSHOT_INVALID, "snapshot")
        prior = self._prior_snap
        if prior is not None:
            for name, version in prior.meta.items():
                new = snap.meta.get(name)
                if new is None:
                    raise ChainError(
                        Reason.ROLLBACK,
                        f"snapshot v{snap.version} no longer lists {name}",
                    )
                if new.version < version:
                    raise ChainError(
                        Reason.ROLLBACK,
                        f"snapshot v{snap.version} lists {name} v{new.version}, "
                        f"older than the trusted v{version}",
                    )
        _expired(snap, self.at, f"snapshot v{snap.version}")
        if snap.version != meta.version:
            reason = Reason.ROLLBACK if snap.version < meta.version else Reason.SNAPSHOT_INVALID
            raise ChainError(
                reason,
                f"timestamp names snapshot v{meta.version}, got v{snap.version}",
            )
        self.snapshot = snap
        self._stage = 3
        return snap

    # -- targets and delegations ---------------------------------------------

    def has(self, role: str, delegator: str) -> bool:
        """True iff ``role`` was verified as delegated by ``delegator``."""
        return (delegator, role) in self._pairs

    def role(self, name: str) -> Targets:
        """The last verified targets metadata of role ``name``."""
        return self._roles[name]

    def meta(self, role: str) -> MetaFile | None:
        """The snapshot's entry for ``role``."""
        assert self.snapshot is not None  # noqa: S101
        return self.snapshot.meta.get(f"{role}.json")

    def update_targets(
        self, data: bytes, role: str, delegator: str, declared: int | None = None
    ) -> Targets:
        """Verify ``targets`` (delegator ``root``) or a delegated targets role."""
        self._stage_is(3, role)
        top = role == Targets.type
        reason = Reason.TARGETS_INVALID if top else Reason.DELEGATION_INVALID
        parent: Root | Targets = self.root if top else self._roles[delegator]
        if top and delegator != Root.type:
            raise RuntimeError("targets is delegated by root")
        meta = self.meta(role)
        if meta is None:
            raise ChainError(reason, f"snapshot does not list {role}")
        if len(data) > role_size_cap(role):
            raise ChainError(Reason.BUNDLE_TOO_LARGE, f"{role} is over its cap")
        try:
            meta.verify_length_and_hashes(data)
        except Exception as e:
            raise ChainError(
                reason, f"{role} does not match the length or hash in snapshot: {e}"
            ) from None
        md, signed = _load(Targets, data, reason, role)
        _verify(parent, role, md, reason, f"{role} (delegated by {delegator})")
        _declared(declared, signed.version, reason, role)
        if signed.version != meta.version:
            raise ChainError(
                Reason.ROLLBACK if signed.version < meta.version else reason,
                f"snapshot names {role} v{meta.version}, got v{signed.version}",
            )
        _expired(signed, self.at, f"{role} v{signed.version}")
        self._roles[role] = signed
        self._pairs.add((delegator, role))
        return signed

    # -- result ----------------------------------------------------------------

    def state(self) -> TrustState:
        """The trust state after this update (call only when it verified fully)."""
        if self.timestamp is None or self.snapshot is None:
            raise RuntimeError("the update did not reach the snapshot")
        return TrustState(
            self._root_bytes,
            self._roots,
            TimestampRecord(
                self.timestamp.version,
                self.timestamp.snapshot_meta.version,
                self._ts_sha256,
            ),
            SnapshotRecord(
                self.snapshot.version,
                {k: v.version for k, v in self.snapshot.meta.items()},
            ),
        )


# --------------------------------------------------------------------------
# Sources and the workflow


@dataclass(frozen=True)
class Fetched:
    """Bytes of one metadata file and the version its source claims for it."""

    data: bytes
    declared: int | None = None


class Source(Protocol):
    """Where the workflow gets metadata: a bundle, or a repository over HTTP."""

    def next_root(self, version: int) -> Fetched | None:
        """Root ``version``, or None when there is no newer root."""

    def timestamp(self) -> Fetched:
        """The timestamp."""

    def snapshot(self, version: int | None, length: int | None) -> Fetched:
        """The snapshot (``version`` set with consistent snapshots)."""

    def targets(self, role: str, version: int | None, length: int | None) -> Fetched:
        """A targets role (``version`` set with consistent snapshots)."""

    def cached(self, role: str) -> bytes | None:
        """A locally stored copy verified earlier, or None."""

    def store(self, role: str, data: bytes) -> None:
        """Called after ``data`` verified as ``role``."""


def refresh(chain: Chain, source: Source) -> None:
    """Root rotation, timestamp, snapshot and targets, in the TUF order.

    Raises:
        ChainError: a step failed (the source may raise its own errors too).
    """
    for version in range(chain.root.version + 1, chain.root.version + 1 + LIMITS.root_files):
        fetched = source.next_root(version)
        if fetched is None:
            break
        chain.update_root(fetched.data, fetched.declared)
        source.store(Root.type, fetched.data)
    chain.finish_roots()

    local_ts = source.cached(Timestamp.type)
    if local_ts is not None:
        chain.adopt_prior_timestamp(local_ts)
    fetched = source.timestamp()
    try:
        chain.update_timestamp(fetched.data, fetched.declared)
        source.store(Timestamp.type, fetched.data)
    except EqualTimestampError:
        if local_ts is None:
            raise
        logger.debug("timestamp version unchanged: keeping the local copy")
        chain.update_timestamp(local_ts)

    local_snap = source.cached(Snapshot.type)
    if local_snap is not None:
        with contextlib.suppress(ChainError):
            chain.update_snapshot(local_snap, local=True)
            logger.debug("local snapshot is current")
        if chain.snapshot is None:
            chain.adopt_prior_snapshot(local_snap)
    if chain.snapshot is None:
        assert chain.timestamp is not None  # noqa: S101
        meta = chain.timestamp.snapshot_meta
        wanted = meta.version if chain.root.consistent_snapshot else None
        fetched = source.snapshot(wanted, meta.length)
        chain.update_snapshot(fetched.data, fetched.declared)
        source.store(Snapshot.type, fetched.data)

    load_role(chain, source, Targets.type, Root.type)


def load_role(chain: Chain, source: Source, role: str, delegator: str) -> Targets:
    """Load ``role`` as delegated by ``delegator``: a valid local copy, else fetch.

    Raises:
        ChainError: the role is not in snapshot or does not verify.
    """
    if chain.has(role, delegator):
        return chain.role(role)
    local = source.cached(role)
    if local is not None:
        try:
            return chain.update_targets(local, role, delegator)
        except ChainError as e:
            logger.debug("local %s is not usable: %s", role, e)
    meta = chain.meta(role)
    if meta is None:
        reason = Reason.TARGETS_INVALID if role == Targets.type else Reason.DELEGATION_INVALID
        raise ChainError(reason, f"{role} is delegated but not listed in snapshot")
    version = meta.version if chain.root.consistent_snapshot else None
    fetched = source.targets(role, version, meta.length)
    signed = chain.update_targets(fetched.data, role, delegator, fetched.declared)
    source.store(role, fetched.data)
    return signed


class BundleSource:
    """A :class:`Source` over a bundle's files, each used once, in order."""

    def __init__(self, bundle: Bundle, trusted_root_version: int) -> None:
        self._roots: Iterator[BundleFile] = iter(
            [f for f in bundle.roots() if f.version > trusted_root_version]
        )
        self._bundle = bundle

    def next_root(self, version: int) -> Fetched | None:
        f = next(self._roots, None)
        return None if f is None else Fetched(f.data, f.version)

    def _file(self, role: str) -> Fetched:
        f = self._bundle.file(role)
        if f is None:
            raise ChainError(Reason.BUNDLE_MALFORMED, f"the bundle has no {role} file")
        return Fetched(f.data, f.version)

    def timestamp(self) -> Fetched:
        return self._file(Timestamp.type)

    def snapshot(self, version: int | None, length: int | None) -> Fetched:
        return self._file(Snapshot.type)

    def targets(self, role: str, version: int | None, length: int | None) -> Fetched:
        return self._file(role)

    def cached(self, role: str) -> bytes | None:
        return None

    def store(self, role: str, data: bytes) -> None:
        return None
