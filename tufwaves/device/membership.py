"""A ripple's device set: explicit list, Merkle commitment, deterministic fraction.

The normative definition is ``specs/membership.md``. Each encoding is a frozen
value with ``to_dict()`` (the JSON stored under
``signed["x-tufwaves-ripple"]["membership"]``); :func:`membership_from_dict`
parses untrusted JSON strictly. The server-side store that hands out per-device
inclusion proofs for large ripples is :mod:`tufwaves.server.merkle_file`.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import itertools
import re
import uuid as uuid_mod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeGuard

from tufwaves.device import merkle as _merkle
from tufwaves.device.profile import UUID_PATTERN, canonical_uuid, split_role
from tufwaves.errors import InputError

__all__ = [
    "EVIDENCE_MAX_PATH",
    "FRACTION_DOMAIN",
    "LIST_MAX",
    "PPM",
    "FractionMembership",
    "ListMembership",
    "Membership",
    "MerkleEvidence",
    "MerkleMembership",
    "canonical_uuid",
    "encode_members",
    "fraction_member",
    "is_member",
    "membership_from_dict",
    "merkle_inclusion_proof",
    "merkle_root",
    "parse_uuid_list",
    "verify_inclusion",
]

LIST_MAX: Final = 256
"""Most devices an explicit list may name; larger sets use a Merkle commitment."""

PPM: Final = 1_000_000
"""The denominator of a fraction: ``parts_per_million`` ranges over ``0 .. PPM``."""

FRACTION_DOMAIN: Final = b"tufwaves-fraction-v1\x00"
"""Domain-separation prefix of the fraction hash input."""

EVIDENCE_MAX_PATH: Final = 64
"""Most hashes a Merkle inclusion proof may carry (a tree of up to 2**64 leaves)."""

SALT_LEN: Final = 32
CHUNK_LEVEL: Final = 8
"""Lowest stored level of a server-side tree file; also the root computation's chunk size."""
_MAX_SIZE: Final = 2**64 - 1
_ENC_LIST: Final = "list"
_ENC_MERKLE: Final = "merkle-sha256"
_ENC_FRACTION: Final = "fraction"

_UUID_RE = re.compile(UUID_PATTERN)
_CANON_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")
_SEPARATORS_RE = re.compile(r"[,;|\s]+")


def _show(value: object) -> str:
    """A bounded ``repr`` for error messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------
# UUIDs


def uuid_bytes(text: str) -> bytes:
    """The 16 bytes of a UUID in any accepted form. Raises InputError if malformed."""
    return uuid_mod.UUID(canonical_uuid(text)).bytes


def uuid_text(raw: bytes) -> str:
    """The canonical string of 16 UUID bytes."""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def parse_uuid_list(text: str) -> list[str]:
    """Parse the command line's ``--uuids`` syntax into canonical UUIDs.

    Entries are separated by any run of ``,`` ``;`` ``|`` and whitespace
    (including newlines); empty entries are ignored. Duplicates are dropped,
    keeping the first occurrence and the input order.

    Raises:
        InputError: an entry is not a UUID; the message names the entry and its
            1-based position among the non-empty entries.
    """
    seen: set[str] = set()
    out: list[str] = []
    entries = (e for e in _SEPARATORS_RE.split(text) if e)
    for position, entry in enumerate(entries, start=1):
        try:
            value = canonical_uuid(entry)
        except InputError:
            raise InputError(
                f"UUID list entry {position} is not a device UUID: {_show(entry)} "
                "(expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, separated by "
                "commas, semicolons, '|', spaces or newlines)"
            ) from None
        if value not in seen:
            seen.add(value)
            out.append(value)
    return out


# --------------------------------------------------------------------------
# The three encodings


@dataclass(frozen=True)
class ListMembership:
    """An explicit set of at most :data:`LIST_MAX` devices.

    ``uuids`` holds canonical UUID strings, strictly ascending (sorted and
    without duplicates). Use :meth:`from_uuids` to build one from any input.
    """

    uuids: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.uuids, tuple):
            if isinstance(self.uuids, str) or not isinstance(self.uuids, Sequence):
                raise InputError("list membership: uuids must be a sequence")
            object.__setattr__(self, "uuids", tuple(self.uuids))
        if len(self.uuids) > LIST_MAX:
            raise InputError(
                f"list membership names {len(self.uuids)} devices; at most "
                f"{LIST_MAX} are allowed (use a Merkle commitment)"
            )
        prev = ""
        for position, value in enumerate(self.uuids, start=1):
            if not isinstance(value, str) or not _CANON_RE.fullmatch(value):
                raise InputError(
                    f"list membership entry {position} is not a canonical "
                    f"lowercase UUID: {_show(value)}"
                )
            if value <= prev:
                raise InputError(
                    f"list membership entry {position} ({value}) is not greater "
                    "than the one before it (the list must be sorted, no duplicates)"
                )
            prev = value

    @classmethod
    def from_uuids(cls, uuids: Iterable[str]) -> ListMembership:
        """Canonicalise, de-duplicate and sort ``uuids``."""
        return cls(tuple(sorted({canonical_uuid(u) for u in uuids})))

    def to_dict(self) -> dict[str, object]:
        """The JSON form: ``{"encoding": "list", "uuids": [...]}``."""
        return {"encoding": _ENC_LIST, "uuids": list(self.uuids)}


@dataclass(frozen=True)
class MerkleMembership:
    """A commitment to ``size`` sorted UUIDs: the RFC 9162 SHA-256 tree ``root``."""

    size: int
    root: bytes

    def __post_init__(self) -> None:
        if not _is_int(self.size) or not 0 <= self.size <= _MAX_SIZE:
            raise InputError(
                f"merkle membership: size must be an integer 0..2**64-1, got {_show(self.size)}"
            )
        if not isinstance(self.root, bytes) or len(self.root) != _merkle.HASH_LEN:
            raise InputError("merkle membership: root must be 32 bytes")
        if self.size == 0 and self.root != _merkle.EMPTY_ROOT:
            raise InputError(
                "merkle membership: an empty tree's root must be SHA-256 of the empty string"
            )

    def to_dict(self) -> dict[str, object]:
        """The JSON form: ``{"encoding": "merkle-sha256", "size": n, "root": hex}``."""
        return {"encoding": _ENC_MERKLE, "size": self.size, "root": self.root.hex()}


@dataclass(frozen=True)
class FractionMembership:
    """Every device whose salted hash falls below ``parts_per_million / 10**6``."""

    parts_per_million: int

    def __post_init__(self) -> None:
        p = self.parts_per_million
        if not _is_int(p) or not 0 <= p <= PPM:
            raise InputError(
                f"fraction membership: parts_per_million must be an integer "
                f"0..{PPM}, got {_show(p)}"
            )

    def to_dict(self) -> dict[str, object]:
        """The JSON form: ``{"encoding": "fraction", "parts_per_million": p}``."""
        return {"encoding": _ENC_FRACTION, "parts_per_million": self.parts_per_million}


Membership = ListMembership | MerkleMembership | FractionMembership


def _check_keys(d: Mapping[str, object], keys: set[str], what: str) -> None:
    extra = set(d) - keys
    missing = keys - set(d)
    if extra or missing:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(sorted(map(_show, missing))))
        if extra:
            parts.append("unexpected " + ", ".join(sorted(map(_show, extra))))
        raise InputError(f"{what}: " + "; ".join(parts))


def _hex32(value: object, what: str) -> bytes:
    if not isinstance(value, str) or not _HEX64_RE.fullmatch(value):
        raise InputError(f"{what} must be 64 lowercase hex digits, got {_show(value)}")
    return bytes.fromhex(value)


def membership_from_dict(d: object) -> Membership:
    """Parse an untrusted membership object strictly; never mutates ``d``.

    Raises:
        InputError: unknown encoding, missing or unknown keys, wrong types
            (including booleans where integers are expected), values out of
            range, or a list that is not canonical, sorted and unique.
    """
    if not isinstance(d, Mapping):
        raise InputError(f"membership must be a JSON object, got {_show(d)}")
    if not all(isinstance(k, str) for k in d):
        raise InputError("membership keys must be strings")
    encoding = d.get("encoding")
    if encoding == _ENC_LIST:
        _check_keys(d, {"encoding", "uuids"}, "list membership")
        uuids = d["uuids"]
        if not isinstance(uuids, list):
            raise InputError("list membership: uuids must be a JSON array")
        if len(uuids) > LIST_MAX:
            raise InputError(f"list membership names {len(uuids)} devices; at most {LIST_MAX}")
        return ListMembership(tuple(uuids))
    if encoding == _ENC_MERKLE:
        _check_keys(d, {"encoding", "size", "root"}, "merkle membership")
        size = d["size"]
        if not _is_int(size):
            raise InputError(f"merkle membership: size must be an integer, got {size!r}")
        return MerkleMembership(size, _hex32(d["root"], "merkle membership: root"))
    if encoding == _ENC_FRACTION:
        _check_keys(d, {"encoding", "parts_per_million"}, "fraction membership")
        p = d["parts_per_million"]
        if not _is_int(p):
            raise InputError(
                f"fraction membership: parts_per_million must be an integer, got {_show(p)}"
            )
        return FractionMembership(p)
    raise InputError(
        f"unknown membership encoding {_show(encoding)} (expected "
        f"{_ENC_LIST!r}, {_ENC_MERKLE!r} or {_ENC_FRACTION!r})"
    )


# --------------------------------------------------------------------------
# Merkle proofs


@dataclass(frozen=True)
class MerkleEvidence:
    """One device's proof of membership in a Merkle-committed ripple.

    ``path`` is the RFC 9162 inclusion proof (audit path), bottom-up.
    """

    role: str
    leaf_index: int
    path: tuple[bytes, ...]

    def __post_init__(self) -> None:
        parts = split_role(self.role)
        if parts is None or parts[0] != "ripple":
            raise InputError(
                f"merkle evidence: role must be a ripple role name 'ripple.W.K', "
                f"got {_show(self.role)}"
            )
        if not _is_int(self.leaf_index) or not 0 <= self.leaf_index < _MAX_SIZE:
            raise InputError(
                f"merkle evidence: leaf_index must be an integer 0..2**64-2, "
                f"got {_show(self.leaf_index)}"
            )
        if not isinstance(self.path, tuple):
            raise InputError("merkle evidence: path must be a tuple of hashes")
        if len(self.path) > EVIDENCE_MAX_PATH:
            raise InputError(
                f"merkle evidence: path has {len(self.path)} hashes, "
                f"at most {EVIDENCE_MAX_PATH} are allowed"
            )
        for h in self.path:
            if not isinstance(h, bytes) or len(h) != _merkle.HASH_LEN:
                raise InputError("merkle evidence: every path entry must be 32 bytes")

    def to_dict(self) -> dict[str, object]:
        """``{"role": ..., "leaf_index": i, "path": [hex, ...]}``."""
        return {
            "role": self.role,
            "leaf_index": self.leaf_index,
            "path": [h.hex() for h in self.path],
        }

    @classmethod
    def from_dict(cls, d: object) -> MerkleEvidence:
        """Parse untrusted evidence strictly; never mutates ``d``.

        Raises:
            InputError: anything but exactly the three keys with the right
                types, or more than :data:`EVIDENCE_MAX_PATH` path entries.
        """
        if not isinstance(d, Mapping):
            raise InputError(f"merkle evidence must be a JSON object, got {_show(d)}")
        if not all(isinstance(k, str) for k in d):
            raise InputError("merkle evidence keys must be strings")
        _check_keys(d, {"role", "leaf_index", "path"}, "merkle evidence")
        path = d["path"]
        if not isinstance(path, list):
            raise InputError("merkle evidence: path must be a JSON array")
        if len(path) > EVIDENCE_MAX_PATH:
            raise InputError(
                f"merkle evidence: path has {len(path)} hashes, "
                f"at most {EVIDENCE_MAX_PATH} are allowed"
            )
        hashes = tuple(_hex32(h, "merkle evidence: path entry") for h in path)
        role, index = d["role"], d["leaf_index"]
        if not isinstance(role, str):
            raise InputError(f"merkle evidence: role must be a string, got {_show(role)}")
        if not _is_int(index):
            raise InputError(f"merkle evidence: leaf_index must be an integer, got {_show(index)}")
        return cls(role, index, hashes)


def join_sorted(sorted_leaves: Sequence[bytes] | bytes) -> bytes:
    """Concatenate and check 16-byte leaves: strictly ascending, right length."""
    if isinstance(sorted_leaves, bytes | bytearray | memoryview):
        data = bytes(sorted_leaves)
        if len(data) % _merkle.LEAF_LEN:
            raise InputError(f"concatenated leaves must be a multiple of 16 bytes, got {len(data)}")
        return data
    for position, leaf in enumerate(sorted_leaves, start=1):
        if not isinstance(leaf, bytes) or len(leaf) != _merkle.LEAF_LEN:
            raise InputError(f"leaf {position} is not 16 bytes (a UUID's raw bytes)")
    return b"".join(sorted_leaves)


def not_sorted(bad: int) -> InputError:
    """The error for leaf ``bad + 1`` not greater than its predecessor."""
    return InputError(
        f"leaf {bad + 1} is not greater than the one before it "
        "(leaves must be sorted and free of duplicates)"
    )


def merkle_root(sorted_leaves: Sequence[bytes] | bytes) -> bytes:
    """RFC 9162 Merkle tree hash (SHA-256) of 16-byte UUID leaves.

    ``sorted_leaves`` is a sequence of 16-byte values, or their concatenation,
    strictly ascending. The root of no leaves is ``SHA-256("")``.

    Raises:
        InputError: a leaf is not 16 bytes or the leaves are not strictly ascending.
    """
    data = join_sorted(sorted_leaves)
    n = len(data) // _merkle.LEAF_LEN
    if n == 0:
        return _merkle.EMPTY_ROOT
    base, bad = _merkle.chunk_roots(data, n, CHUNK_LEVEL)
    if bad >= 0:
        raise not_sorted(bad)
    return _merkle.levels_above(base)[-1]


def merkle_inclusion_proof(
    sorted_leaves: Sequence[bytes] | bytes, leaf_index: int
) -> tuple[bytes, ...]:
    """The RFC 9162 inclusion proof of one leaf, computed in memory (O(n) hashes).

    Raises:
        InputError: bad leaves (as for :func:`merkle_root`) or index out of range.
    """
    data = join_sorted(sorted_leaves)
    n = len(data) // _merkle.LEAF_LEN
    if not _is_int(leaf_index) or not 0 <= leaf_index < n:
        raise InputError(f"leaf index {_show(leaf_index)} is outside 0..{n - 1}")
    base, bad = _merkle.chunk_roots(data, n, CHUNK_LEVEL)
    if bad >= 0:
        raise not_sorted(bad)
    levels = _merkle.levels_above(base)
    return tuple(_merkle.subtree_path(data, n, leaf_index, CHUNK_LEVEL)) + tuple(
        _upper_path(leaf_index, CHUNK_LEVEL, levels)
    )


def _upper_path(index: int, level: int, levels: Sequence[bytes]) -> list[bytes]:
    """Audit-path siblings at levels ``>= level``; ``levels[0]`` is level ``level``."""
    path: list[bytes] = []
    width = _merkle.HASH_LEN
    node = index >> level
    for stored in levels:
        count = len(stored) // width
        if count <= 1:
            break
        sib = node ^ 1
        if sib < count:
            path.append(stored[sib * width : (sib + 1) * width])
        node >>= 1
    return path


def verify_inclusion(uuid: str, evidence: MerkleEvidence, commitment: MerkleMembership) -> bool:
    """True iff ``evidence`` proves ``uuid`` is a leaf of ``commitment``.

    Follows RFC 9162 section 2.1.3.2: the index must be below the size and the
    path must have exactly the length that index and size imply. Never raises:
    any malformed argument gives False. The caller checks ``evidence.role``.
    """
    if not isinstance(evidence, MerkleEvidence) or not isinstance(commitment, MerkleMembership):
        return False
    if not isinstance(uuid, str) or not _UUID_RE.fullmatch(uuid):
        return False
    leaf = uuid_mod.UUID(uuid.lower()).bytes
    root = _merkle.root_from_path(evidence.leaf_index, commitment.size, leaf, evidence.path)
    return root is not None and hmac.compare_digest(root, commitment.root)


# --------------------------------------------------------------------------
# Fraction


def fraction_member(salt: bytes, uuid: str, parts_per_million: int) -> bool:
    """True iff ``uuid`` falls in the deterministic fraction ``p / 10**6``.

    ``h = int(SHA-256(FRACTION_DOMAIN || salt || uuid16)[:8])`` (big-endian);
    the device is in iff ``h * 10**6 < p * 2**64``.

    Raises:
        InputError: ``salt`` is not 32 bytes, ``uuid`` is malformed, or ``p``
            is not an integer 0..10**6.
    """
    if not isinstance(salt, bytes) or len(salt) != SALT_LEN:
        raise InputError("fraction salt must be 32 bytes")
    p = FractionMembership(parts_per_million).parts_per_million
    digest = hashlib.sha256(FRACTION_DOMAIN + salt + uuid_bytes(uuid)).digest()
    return int.from_bytes(digest[:8], "big") * PPM < p * 2**64


def is_member(
    membership: Membership,
    uuid: str,
    *,
    salt: bytes,
    evidence: MerkleEvidence | None,
) -> bool:
    """True iff the device ``uuid`` belongs to ``membership``.

    ``salt`` (the wave's fraction salt, ``specs/membership.md`` 6.1) is used only by the
    fraction encoding; ``evidence`` only by the Merkle encoding, which without
    valid evidence gives False. Empty sets contain nobody.

    Raises:
        InputError: ``uuid`` is malformed, or a fraction's ``salt`` is not 32 bytes.
    """
    value = canonical_uuid(uuid)
    if isinstance(membership, ListMembership):
        i = bisect.bisect_left(membership.uuids, value)
        return i < len(membership.uuids) and membership.uuids[i] == value
    if isinstance(membership, MerkleMembership):
        if evidence is None:
            return False
        return verify_inclusion(value, evidence, membership)
    if isinstance(membership, FractionMembership):
        return fraction_member(salt, value, membership.parts_per_million)
    raise InputError(f"not a membership value: {_show(membership)}")


def encode_members(
    sorted_uuid_bytes: Sequence[bytes] | bytes, *, list_max: int = LIST_MAX
) -> ListMembership | MerkleMembership:
    """Encode a sorted device set: a list up to ``list_max`` devices, else Merkle.

    ``sorted_uuid_bytes`` is a sequence of 16-byte UUIDs or their
    concatenation, strictly ascending.

    Raises:
        InputError: bad leaves (as for :func:`merkle_root`) or ``list_max``
            outside ``0 .. LIST_MAX``.
    """
    if not _is_int(list_max) or not 0 <= list_max <= LIST_MAX:
        raise InputError(f"list_max must be an integer 0..{LIST_MAX}")
    data = join_sorted(sorted_uuid_bytes)
    n = len(data) // _merkle.LEAF_LEN
    if n <= list_max:
        leaves = [data[o : o + 16] for o in range(0, len(data), 16)]
        if any(a >= b for a, b in itertools.pairwise(leaves)):
            raise InputError("UUIDs must be sorted and free of duplicates")
        return ListMembership(tuple(uuid_text(x) for x in leaves))
    return MerkleMembership(n, merkle_root(data))
