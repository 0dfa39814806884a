"""The per-device bundle: the exact bytes of every metadata file plus evidence.

The normative definition is ``specs/bundle.md``. This module only parses and
serialises bundles; it never reads a repository and never verifies metadata
(that is :mod:`tufwaves.verify`). Parsing is strict: unknown keys, wrong types,
out-of-order or duplicate files and anything over a size cap are refused.

Every size cap the device side applies to untrusted input is defined here, in
:data:`LIMITS`, and :func:`role_size_cap` gives the cap of one metadata file;
the verifier and the conformance client use the same values.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

from tufwaves.device.membership import MerkleEvidence
from tufwaves.device.profile import canonical_uuid, split_role
from tufwaves.errors import InputError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "LIMITS",
    "Bundle",
    "BundleError",
    "BundleFile",
    "BundleTooLargeError",
    "Limits",
    "parse_role_name",
    "role_size_cap",
]

FORMAT: Final = "tufwaves-bundle"
FORMAT_VERSION: Final = 1


@dataclass(frozen=True)
class Limits:
    """Size caps on untrusted device-side input (bytes unless stated)."""

    bundle_bytes: int = 32_000_000
    """A whole bundle, as serialised JSON."""
    root_bytes: int = 512_000
    timestamp_bytes: int = 16_384
    snapshot_bytes: int = 2_000_000
    targets_bytes: int = 5_000_000
    """``targets`` and every delegated targets role (wave, rollout, ripple)."""
    root_files: int = 256
    """Root files in one bundle; also the most root rotations one update walks."""
    waves: int = 256
    """Waves (``wave.W`` + ``rollout.W`` pairs) in one bundle."""
    ripples: int = 10_000
    """Ripple roles in one bundle, over all waves."""
    evidence: int = 10_000
    """Evidence entries in one bundle."""
    evidence_path: int = 64
    """Hashes in one Merkle inclusion proof."""
    delegations: int = 32
    """Delegated roles a general TUF target search visits (conformance client)."""


LIMITS: Final = Limits()

_TOP_ROLES: Final = frozenset({"root", "timestamp", "snapshot", "targets"})
_TOP_ORDER: Final = {"timestamp": 1, "snapshot": 2, "targets": 3}
_KEYS: Final = ("format", "version", "device", "files", "evidence")
_FILE_KEYS: Final = ("role", "version", "data")


class BundleError(InputError):
    """A bundle is malformed: not JSON, wrong keys or types, files out of order."""


class BundleTooLargeError(BundleError):
    """A bundle, one of its files, or one of its lists is over a size cap."""


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_role_name(role: str) -> tuple[str, str | None, int | None]:
    """Split a bundle role name into ``(kind, wave, ripple index)``.

    ``kind`` is ``root``, ``timestamp``, ``snapshot``, ``targets``, ``wave``,
    ``rollout`` or ``ripple``.

    Raises:
        BundleError: ``role`` is not one of the names of ``specs/metadata.md``.
    """
    if isinstance(role, str) and role in _TOP_ROLES:
        return role, None, None
    parts = split_role(role)
    if parts is None:
        raise BundleError(
            f"unknown role name {_show(role)} (expected root, timestamp, snapshot, "
            "targets, wave.W, rollout.W or ripple.W.K)"
        )
    return parts


def role_size_cap(role: str) -> int:
    """The most bytes a metadata file of ``role`` may have (as ngclient's caps).

    Any role name that is not root, timestamp or snapshot is a targets role.
    """
    if role == "root":
        return LIMITS.root_bytes
    if role == "timestamp":
        return LIMITS.timestamp_bytes
    if role == "snapshot":
        return LIMITS.snapshot_bytes
    return LIMITS.targets_bytes


def _b64_cap(n: int) -> int:
    return 4 * ((n + 2) // 3)


@dataclass(frozen=True)
class BundleFile:
    """One metadata file of a bundle: its role, its version and its exact bytes."""

    role: str
    version: int
    data: bytes

    def __post_init__(self) -> None:
        parse_role_name(self.role)
        if not isinstance(self.data, bytes):
            raise BundleError(f"file {self.role}: data must be bytes")
        cap = role_size_cap(self.role)
        if len(self.data) > cap:  # the cap before the version (specs/verifier.md step 0)
            raise BundleTooLargeError(
                f"file {self.role} has {len(self.data):,} bytes; at most {cap:,} are allowed"
            )
        if not _is_int(self.version) or not 1 <= self.version < 2**63:
            raise BundleError(
                f"file {self.role}: version must be a positive integer, got {_show(self.version)}"
            )

    def to_dict(self) -> dict[str, object]:
        """``{"role": ..., "version": N, "data": base64}``."""
        return {
            "role": self.role,
            "version": self.version,
            "data": base64.b64encode(self.data).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, d: object) -> BundleFile:
        """Parse one untrusted file entry strictly; never mutates ``d``.

        Raises:
            BundleError: wrong keys or types, data not canonical base64.
            BundleTooLargeError: data over the role's size cap.
        """
        _check_object(d, _FILE_KEYS, "bundle file")
        assert isinstance(d, Mapping)  # noqa: S101 - narrowed by _check_object
        role, version, data = d["role"], d["version"], d["data"]
        kind = parse_role_name(role)[0]
        if not isinstance(data, str):
            raise BundleError(f"file {role}: data must be a base64 string")
        if len(data) > _b64_cap(role_size_cap(kind)):
            raise BundleTooLargeError(
                f"file {role}: data is over the {role_size_cap(kind):,}-byte cap"
            )
        try:
            raw = base64.b64decode(data.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise BundleError(f"file {role}: data is not valid base64") from None
        if base64.b64encode(raw).decode("ascii") != data:
            raise BundleError(f"file {role}: data is not canonical base64")
        return cls(role, version, raw)


def _check_object(d: object, keys: Sequence[str], what: str) -> None:
    if not isinstance(d, Mapping):
        raise BundleError(f"{what} must be a JSON object, got {_show(d)}")
    extra = sorted(str(k) for k in d if k not in keys)
    missing = [k for k in keys if k not in d]
    if extra or missing:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing))
        if extra:
            parts.append("unknown " + ", ".join(map(_show, extra)))
        raise BundleError(f"{what}: " + "; ".join(parts))


def _check_order(files: Sequence[BundleFile]) -> None:
    """Enforce the fixed file order of ``specs/bundle.md`` section 3."""
    counts = {"root": 0, "wave": 0, "ripple": 0}
    stage = 0  # 0 roots, 1 timestamp, 2 snapshot, 3 targets, 4 wave groups
    last_root: int | None = None
    wave: str | None = None  # the wave group being read
    group_step = ""  # "wave", "rollout" or "ripple"
    last_ripple = 0
    for position, f in enumerate(files, start=1):
        kind, w, k = parse_role_name(f.role)
        where = f"file {position} ({f.role} v{f.version})"
        if kind == "root":
            counts["root"] += 1
            if stage != 0:
                raise BundleError(f"{where}: root files must come first")
            if last_root is not None and f.version != last_root + 1:
                raise BundleError(
                    f"{where}: root versions must be consecutive and ascending "
                    f"(expected v{last_root + 1})"
                )
            last_root = f.version
        elif kind in _TOP_ORDER:
            if stage + 1 != _TOP_ORDER[kind]:
                raise BundleError(
                    f"{where}: expected exactly one timestamp, snapshot and targets, "
                    "in that order, after the root files"
                )
            stage = _TOP_ORDER[kind]
        elif stage < 3:
            raise BundleError(f"{where}: wave files must follow targets")
        elif kind == "wave":
            if wave is not None and group_step == "wave":
                raise BundleError(f"{where}: wave.{wave} must be followed by its rollout")
            if wave is not None and w is not None and w <= wave:
                raise BundleError(f"{where}: waves must be in ascending name order, each once")
            counts["wave"] += 1
            wave, group_step, last_ripple, stage = w, "wave", 0, 4
        elif kind == "rollout":
            if group_step != "wave" or w != wave:
                raise BundleError(f"{where}: rollout.W must directly follow wave.W")
            group_step = "rollout"
        else:  # ripple
            if group_step not in {"rollout", "ripple"} or w != wave:
                raise BundleError(f"{where}: ripple.W.K must follow wave.W and rollout.W")
            if k is not None and k <= last_ripple:
                raise BundleError(f"{where}: ripples must be in ascending order, once")
            counts["ripple"] += 1
            last_ripple = k or 0
            group_step = "ripple"
    if stage < 3:
        raise BundleError("bundle must contain exactly one timestamp, snapshot and targets file")
    if group_step == "wave":
        raise BundleError(f"wave.{wave} must be followed by rollout.{wave}")
    if counts["root"] > LIMITS.root_files:
        raise BundleTooLargeError(
            f"bundle has {counts['root']} root files; at most {LIMITS.root_files}"
        )
    if counts["wave"] > LIMITS.waves:
        raise BundleTooLargeError(f"bundle has {counts['wave']} waves; at most {LIMITS.waves}")
    if counts["ripple"] > LIMITS.ripples:
        raise BundleTooLargeError(
            f"bundle has {counts['ripple']} ripples; at most {LIMITS.ripples}"
        )


@dataclass(frozen=True)
class Bundle:
    """Everything one device needs to decide: metadata files and its evidence.

    ``files`` are in the fixed order of ``specs/bundle.md``; ``evidence`` holds
    at most one Merkle inclusion proof per ripple role present in ``files``.
    The constructor validates all of it and raises :class:`BundleError`.
    """

    device: str
    files: tuple[BundleFile, ...]
    evidence: tuple[MerkleEvidence, ...] = ()

    def __post_init__(self) -> None:
        try:
            device = canonical_uuid(self.device)
        except InputError as e:
            raise BundleError(f"bundle device: {e}") from None
        if device != self.device:
            raise BundleError(
                f"bundle device {_show(self.device)} is not a canonical lowercase UUID"
            )
        if not isinstance(self.files, tuple) or not all(
            isinstance(f, BundleFile) for f in self.files
        ):
            raise BundleError("bundle files must be a tuple of BundleFile")
        if not isinstance(self.evidence, tuple) or not all(
            isinstance(e, MerkleEvidence) for e in self.evidence
        ):
            raise BundleError("bundle evidence must be a tuple of MerkleEvidence")
        _check_order(self.files)
        if len(self.evidence) > LIMITS.evidence:
            raise BundleTooLargeError(
                f"bundle has {len(self.evidence)} evidence entries; at most {LIMITS.evidence}"
            )
        ripples = {f.role for f in self.files if f.role.startswith("ripple.")}
        seen: set[str] = set()
        for ev in self.evidence:
            if ev.role not in ripples:
                raise BundleError(
                    f"evidence for {ev.role}, which is not a ripple file of the bundle"
                )
            if ev.role in seen:
                raise BundleError(f"two evidence entries for {ev.role}")
            seen.add(ev.role)

    # -- access ------------------------------------------------------------

    def roots(self) -> tuple[BundleFile, ...]:
        """The root files, ascending."""
        return tuple(f for f in self.files if f.role == "root")

    def file(self, role: str) -> BundleFile | None:
        """The file of a non-root ``role``, or None."""
        for f in self.files:
            if f.role == role and role != "root":
                return f
        return None

    def waves(self) -> tuple[str, ...]:
        """The wave names, ascending."""
        return tuple(f.role[len("wave.") :] for f in self.files if f.role[:5] == "wave.")

    def ripples(self, wave: str) -> tuple[int, ...]:
        """The ripple indexes of ``wave`` present in the bundle, ascending."""
        out = []
        for f in self.files:
            kind, w, k = parse_role_name(f.role)
            if kind == "ripple" and w == wave and k is not None:
                out.append(k)
        return tuple(out)

    def evidence_for(self, role: str) -> MerkleEvidence | None:
        """The evidence entry for the ripple ``role``, or None."""
        for e in self.evidence:
            if e.role == role:
                return e
        return None

    # -- serialisation -----------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``specs/bundle.md``."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "device": self.device,
            "files": [f.to_dict() for f in self.files],
            "evidence": [e.to_dict() for e in self.evidence],
        }

    def to_bytes(self) -> bytes:
        """Serialise as compact ASCII JSON with the keys in the documented order."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=True).encode("ascii")

    @classmethod
    def from_dict(cls, d: object) -> Bundle:
        """Parse an untrusted bundle object strictly; never mutates ``d``.

        Raises:
            BundleError: anything but the documented keys and types, files out
                of order or duplicated, evidence for a ripple not in the bundle.
            BundleTooLargeError: over one of the caps of :data:`LIMITS`.
        """
        _check_object(d, _KEYS, "bundle")
        assert isinstance(d, Mapping)  # noqa: S101 - narrowed by _check_object
        if d["format"] != FORMAT or not isinstance(d["format"], str):
            raise BundleError(f"not a bundle: format is {_show(d['format'])}")
        if not _is_int(d["version"]) or d["version"] != FORMAT_VERSION:
            raise BundleError(
                f"unsupported bundle version {_show(d['version'])} "
                f"(this verifier reads version {FORMAT_VERSION})"
            )
        if not isinstance(d["device"], str):
            raise BundleError("bundle device must be a string")
        files, evidence = d["files"], d["evidence"]
        if not isinstance(files, list) or not isinstance(evidence, list):
            raise BundleError("bundle files and evidence must be JSON arrays")
        max_files = LIMITS.root_files + 3 + 2 * LIMITS.waves + LIMITS.ripples
        if len(files) > max_files:
            raise BundleTooLargeError(f"bundle has {len(files)} files; at most {max_files}")
        if len(evidence) > LIMITS.evidence:
            raise BundleTooLargeError(
                f"bundle has {len(evidence)} evidence entries; at most {LIMITS.evidence}"
            )
        for e in evidence:
            path = e.get("path") if isinstance(e, Mapping) else None
            if isinstance(path, list) and len(path) > LIMITS.evidence_path:
                raise BundleTooLargeError(
                    f"an evidence path has {len(path)} hashes; at most {LIMITS.evidence_path}"
                )
        parsed_files = tuple(BundleFile.from_dict(f) for f in files)
        try:
            parsed_evidence = tuple(MerkleEvidence.from_dict(e) for e in evidence)
        except InputError as e:
            raise BundleError(f"bundle evidence: {e}") from None
        return cls(d["device"], parsed_files, parsed_evidence)

    @classmethod
    def from_bytes(cls, data: bytes) -> Bundle:
        """Parse untrusted bundle bytes (UTF-8 JSON) strictly.

        Raises:
            BundleError: not UTF-8 JSON (duplicate keys, NaN and Infinity are
                refused too) or not a valid bundle.
            BundleTooLargeError: over :attr:`Limits.bundle_bytes` or another cap.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise BundleError("bundle must be bytes")
        if len(data) > LIMITS.bundle_bytes:
            raise BundleTooLargeError(
                f"bundle has {len(data):,} bytes; at most {LIMITS.bundle_bytes:,}"
            )
        try:
            text = bytes(data).decode("utf-8")
            obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise BundleError(f"bundle is not valid UTF-8 JSON: {e}") from None
        return cls.from_dict(obj)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")
