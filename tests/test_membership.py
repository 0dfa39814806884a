"""Tests of ripple membership encodings, Merkle proofs and the tree file."""

from __future__ import annotations

import copy
import hashlib
import math
import os
import random
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tufwaves.device.membership import (
    LIST_MAX,
    FractionMembership,
    ListMembership,
    Membership,
    MerkleEvidence,
    MerkleMembership,
    canonical_uuid,
    encode_members,
    fraction_member,
    is_member,
    membership_from_dict,
    merkle_inclusion_proof,
    merkle_root,
    parse_uuid_list,
    verify_inclusion,
)
from tufwaves.errors import InputError, StorageError
from tufwaves.server.merkle_file import MerkleTreeFile

SPEC = Path(__file__).resolve().parent.parent / "specs" / "membership.md"
ROLE = "ripple.w1.1"
SALT = bytes(range(32))
EMPTY_ROOT = hashlib.sha256(b"").digest()

# --------------------------------------------------------------------------
# An independent reference: RFC 9162 section 2.1, written recursively.


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(leaves: list[bytes]) -> bytes:
    if not leaves:
        return _h(b"")
    if len(leaves) == 1:
        return _h(b"\x00" + leaves[0])
    k = _split(len(leaves))
    return _h(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:]))


def ref_path(m: int, leaves: list[bytes]) -> list[bytes]:
    if len(leaves) <= 1:
        return []
    k = _split(len(leaves))
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_mth(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_mth(leaves[:k])]


def random_leaves(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out: set[bytes] = set()
    while len(out) < n:
        out.add(rng.randbytes(16))
    return sorted(out)


def text(raw: bytes) -> str:
    return str(uuid.UUID(bytes=raw))


def flip(data: bytes, bit: int) -> bytes:
    bit %= len(data) * 8
    b = bytearray(data)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


# --------------------------------------------------------------------------
# The worked example of specs/membership.md section 9

EX_UUIDS = [
    "00000000-0000-4000-8000-000000000001",
    "7f3b2a10-5c4d-4e6f-8a9b-0c1d2e3f4a5b",
    "ffffffff-ffff-4fff-bfff-ffffffffffff",
]
EX_LEAF_HASHES = [
    "2ee7f34269e198381df72da53aa4aebbf8507405e8be60288fc042044b744a55",
    "68d00ea7df1c8b8f4031a33c072079a1a0b124b2f32bc8e08e8ea708fa4f78b0",
    "ec4701b27a63a6c25362b5820142d56c5e3af253eb5945f6c207060cb0ddf4b6",
]
EX_N01 = "92ad9711b2a9b6e09af8744b14e4f156735b2e4c805fe31579799d3b24d6631e"
EX_ROOT = "38322814fa28b921481c928a60460ae5ebf86192b41afa041109c064020e5d39"
EX_PATHS = [
    [EX_LEAF_HASHES[1], EX_LEAF_HASHES[2]],
    [EX_LEAF_HASHES[0], EX_LEAF_HASHES[2]],
    [EX_N01],
]
# (uuid, h, smallest p that admits it) with salt 00 01 .. 1f
EX_FRACTION = [
    (EX_UUIDS[0], 1677544917415932113, 90940),
    (EX_UUIDS[1], 3844089991328845820, 208389),
    (EX_UUIDS[2], 7218246651508234092, 391302),
]


def test_worked_example_hashes_root_and_proofs() -> None:
    leaves = [uuid.UUID(u).bytes for u in EX_UUIDS]
    assert [_h(b"\x00" + x).hex() for x in leaves] == EX_LEAF_HASHES
    assert merkle_root(leaves).hex() == EX_ROOT
    commitment = MerkleMembership(3, bytes.fromhex(EX_ROOT))
    assert commitment.to_dict() == {
        "encoding": "merkle-sha256",
        "size": 3,
        "root": EX_ROOT,
    }
    for i, expected in enumerate(EX_PATHS):
        proof = merkle_inclusion_proof(leaves, i)
        assert [p.hex() for p in proof] == expected
        ev = MerkleEvidence(ROLE, i, proof)
        assert verify_inclusion(EX_UUIDS[i], ev, commitment)
    # The spec's counter-example: index 2's path with index 1 is too short.
    assert not verify_inclusion(
        EX_UUIDS[2], MerkleEvidence(ROLE, 1, merkle_inclusion_proof(leaves, 2)), commitment
    )


def test_worked_example_fraction() -> None:
    for u, h, first_p in EX_FRACTION:
        digest = _h(b"tufwaves-fraction-v1\x00" + SALT + uuid.UUID(u).bytes)
        assert int.from_bytes(digest[:8], "big") == h
        assert not fraction_member(SALT, u, first_p - 1)
        assert fraction_member(SALT, u, first_p)


def test_worked_example_numbers_appear_in_spec() -> None:
    spec = SPEC.read_text()
    for value in [*EX_UUIDS, *EX_LEAF_HASHES, EX_N01, EX_ROOT]:
        assert value in spec
    for u, h, first_p in EX_FRACTION:
        assert str(h) in spec
        assert str(first_p) in spec
        assert u in spec
    assert EMPTY_ROOT.hex() in spec


# --------------------------------------------------------------------------
# UUIDs and the --uuids syntax


@pytest.mark.parametrize(
    ("given_text", "expected"),
    [
        ("0f0e0d0c-0b0a-4908-8706-050403020100", "0f0e0d0c-0b0a-4908-8706-050403020100"),
        ("0F0E0D0C-0B0A-4908-8706-05040302ABCD", "0f0e0d0c-0b0a-4908-8706-05040302abcd"),
        ("00000000-0000-0000-0000-000000000000", "00000000-0000-0000-0000-000000000000"),
    ],
    ids=["lowercase", "uppercase", "nil"],
)
def test_canonical_uuid_accepts(given_text: str, expected: str) -> None:
    assert canonical_uuid(given_text) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "{0f0e0d0c-0b0a-4908-8706-050403020100}",
        "urn:uuid:0f0e0d0c-0b0a-4908-8706-050403020100",
        "0f0e0d0c0b0a490887060504030201000",
        "0f0e0d0c0b0a49088706050403020100",
        " 0f0e0d0c-0b0a-4908-8706-050403020100",
        "0f0e0d0c-0b0a-4908-8706-050403020100\n",
        "0f0e0d0c-0b0a-4908-8706-05040302010",
        "0f0e0d0c-0b0a-4908-8706-0504030201000",
        "0f0e0d0c-0b0a4-908-8706-050403020100",
        "0f0e0d0g-0b0a-4908-8706-050403020100",
        "\uff10f0e0d0c-0b0a-4908-8706-050403020100",
        "",
    ],
    ids=[
        "braces",
        "urn",
        "no-hyphens-33",
        "no-hyphens",
        "leading-space",
        "trailing-newline",
        "short",
        "long",
        "misplaced-hyphen",
        "non-hex",
        "fullwidth-digit",
        "empty",
    ],
)
def test_canonical_uuid_rejects(bad: str) -> None:
    with pytest.raises(InputError, match="not a device UUID"):
        canonical_uuid(bad)


A = "aaaaaaaa-0000-4000-8000-000000000001"
B = "bbbbbbbb-0000-4000-8000-000000000002"
C = "cccccccc-0000-4000-8000-000000000003"


@pytest.mark.parametrize(
    ("given_text", "expected"),
    [
        (f"{A},{B},{C}", [A, B, C]),
        (f"{A};{B}|{C}", [A, B, C]),
        (f"  {A}\n{B}\r\n\t{C}\n", [A, B, C]),
        (f"{A},,;|, {B}", [A, B]),
        (f"{C},{A.upper()},{A}", [C, A]),
        ("", []),
        (" ,;| \n", []),
    ],
    ids=["commas", "mixed", "whitespace", "empty-entries", "dedupe", "empty", "only-seps"],
)
def test_parse_uuid_list(given_text: str, expected: list[str]) -> None:
    assert parse_uuid_list(given_text) == expected


@pytest.mark.parametrize(
    ("given_text", "position", "entry"),
    [
        (f"{A},nope,{B}", 2, "nope"),
        (f",,{A};;{B}|{{{C}}}", 3, "{" + C + "}"),
        (f"urn:uuid:{A}", 1, "urn:uuid:"),
    ],
    ids=["middle", "braces-after-empties", "urn"],
)
def test_parse_uuid_list_errors_name_entry_and_position(
    given_text: str, position: int, entry: str
) -> None:
    with pytest.raises(InputError) as info:
        parse_uuid_list(given_text)
    message = str(info.value)
    assert f"entry {position} " in message
    assert entry in message


# --------------------------------------------------------------------------
# Encodings and strict parsing

GOOD_DICTS = [
    {"encoding": "list", "uuids": []},
    {"encoding": "list", "uuids": [A, B, C]},
    {"encoding": "merkle-sha256", "size": 0, "root": EMPTY_ROOT.hex()},
    {"encoding": "merkle-sha256", "size": 3, "root": EX_ROOT},
    {"encoding": "fraction", "parts_per_million": 0},
    {"encoding": "fraction", "parts_per_million": 12_345},
    {"encoding": "fraction", "parts_per_million": 1_000_000},
]


@pytest.mark.parametrize("d", GOOD_DICTS)
def test_membership_round_trip(d: dict[str, object]) -> None:
    before = copy.deepcopy(d)
    value = membership_from_dict(d)
    assert value.to_dict() == d
    assert membership_from_dict(value.to_dict()) == value
    assert d == before


BAD_DICTS = {
    "not-a-dict": [A],
    "no-encoding": {"uuids": [A]},
    "unknown-encoding": {"encoding": "bloom", "bits": "00"},
    "encoding-not-str": {"encoding": 1},
    "list-extra-key": {"encoding": "list", "uuids": [A], "note": "x"},
    "list-missing-key": {"encoding": "list"},
    "list-not-array": {"encoding": "list", "uuids": A},
    "list-uppercase": {"encoding": "list", "uuids": [A.upper()]},
    "list-unsorted": {"encoding": "list", "uuids": [B, A]},
    "list-duplicate": {"encoding": "list", "uuids": [A, A]},
    "list-non-str": {"encoding": "list", "uuids": [1]},
    "list-too-long": {
        "encoding": "list",
        "uuids": [str(uuid.UUID(int=i)) for i in range(LIST_MAX + 1)],
    },
    "merkle-bool-size": {"encoding": "merkle-sha256", "size": True, "root": EX_ROOT},
    "merkle-float-size": {"encoding": "merkle-sha256", "size": 3.0, "root": EX_ROOT},
    "merkle-str-size": {"encoding": "merkle-sha256", "size": "3", "root": EX_ROOT},
    "merkle-negative": {"encoding": "merkle-sha256", "size": -1, "root": EX_ROOT},
    "merkle-huge": {"encoding": "merkle-sha256", "size": 2**64, "root": EX_ROOT},
    "merkle-root-upper": {
        "encoding": "merkle-sha256",
        "size": 3,
        "root": EX_ROOT.upper(),
    },
    "merkle-root-short": {"encoding": "merkle-sha256", "size": 3, "root": EX_ROOT[:-2]},
    "merkle-root-bytes": {
        "encoding": "merkle-sha256",
        "size": 3,
        "root": bytes.fromhex(EX_ROOT),
    },
    "merkle-empty-wrong-root": {"encoding": "merkle-sha256", "size": 0, "root": EX_ROOT},
    "merkle-extra": {"encoding": "merkle-sha256", "size": 3, "root": EX_ROOT, "x": 1},
    "fraction-bool": {"encoding": "fraction", "parts_per_million": False},
    "fraction-float": {"encoding": "fraction", "parts_per_million": 0.5},
    "fraction-over": {"encoding": "fraction", "parts_per_million": 1_000_001},
    "fraction-negative": {"encoding": "fraction", "parts_per_million": -1},
    "fraction-missing": {"encoding": "fraction"},
    "non-str-key": {"encoding": "fraction", "parts_per_million": 1, 7: 1},
}


@pytest.mark.parametrize("d", list(BAD_DICTS.values()), ids=list(BAD_DICTS))
def test_membership_from_dict_rejects(d: object) -> None:
    before = copy.deepcopy(d)
    with pytest.raises(InputError):
        membership_from_dict(d)
    assert d == before


@pytest.mark.parametrize(
    "make",
    [
        lambda: ListMembership((B, A)),
        lambda: ListMembership((A.upper(),)),
        lambda: MerkleMembership(1, b"\x00" * 31),
        lambda: MerkleMembership(-1, b"\x00" * 32),
        lambda: FractionMembership(1_000_001),
        lambda: FractionMembership(True),
    ],
    ids=["list-order", "list-case", "root-len", "size", "ppm", "ppm-bool"],
)
def test_constructors_validate(make: Callable[[], object]) -> None:
    with pytest.raises(InputError):
        make()


def test_list_membership_from_uuids_sorts_and_dedupes() -> None:
    assert ListMembership.from_uuids([C, A.upper(), A]).uuids == (A, C)


def test_evidence_round_trip_and_rejects() -> None:
    ev = MerkleEvidence(ROLE, 5, (b"\x01" * 32, b"\x02" * 32))
    d = ev.to_dict()
    assert MerkleEvidence.from_dict(d) == ev
    good = {"role": ROLE, "leaf_index": 0, "path": []}
    assert MerkleEvidence.from_dict(good).path == ()
    bad = [
        {**good, "extra": 1},
        {"role": ROLE, "leaf_index": 0},
        {**good, "leaf_index": True},
        {**good, "leaf_index": -1},
        {**good, "leaf_index": "0"},
        {**good, "role": "wave.w1"},
        {**good, "role": "ripple.w1.0"},
        {**good, "role": 5},
        {**good, "path": ["00" * 32] * 65},
        {**good, "path": ["00" * 31]},
        {**good, "path": ["AA" * 32]},
        {**good, "path": "00" * 32},
        [good],
    ]
    for d_bad in bad:
        before = copy.deepcopy(d_bad)
        with pytest.raises(InputError):
            MerkleEvidence.from_dict(d_bad)
        assert d_bad == before
    assert len(MerkleEvidence.from_dict({**good, "path": ["00" * 32] * 64}).path) == 64


# --------------------------------------------------------------------------
# Merkle trees and proofs


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 255, 256, 257, 300])
def test_root_and_proofs_match_rfc_reference(n: int) -> None:
    leaves = random_leaves(n, seed=n)
    assert merkle_root(leaves) == ref_mth(leaves)
    assert merkle_root(b"".join(leaves)) == ref_mth(leaves)
    for i in sorted({0, n // 3, n // 2, n - 1}):
        assert list(merkle_inclusion_proof(leaves, i)) == ref_path(i, leaves)


def test_merkle_root_empty_and_bad_input() -> None:
    assert merkle_root([]) == EMPTY_ROOT
    with pytest.raises(InputError, match="sorted"):
        merkle_root([b"\x02" * 16, b"\x01" * 16])
    with pytest.raises(InputError, match="sorted"):
        merkle_root([b"\x01" * 16, b"\x01" * 16])
    with pytest.raises(InputError, match="16 bytes"):
        merkle_root([b"\x01" * 15])
    with pytest.raises(InputError, match="multiple of 16"):
        merkle_root(b"\x01" * 17)


def _tree_file(tmp: Path, leaves: list[bytes], level: int = 8) -> MerkleTreeFile:
    path = tmp / "tree.bin"
    MerkleTreeFile.build(path, b"".join(leaves), level=level)
    return MerkleTreeFile(path)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 300), seed=st.integers(0, 2**32))
@example(n=1, seed=0)
@example(n=256, seed=1)
@example(n=257, seed=2)
def test_every_leaf_proof_verifies_and_matches(n: int, seed: int) -> None:
    leaves = random_leaves(n, seed)
    root = ref_mth(leaves)
    commitment = MerkleMembership(n, root)
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"tufwaves-mt-{os.getpid()}.bin"
    try:
        assert MerkleTreeFile.build(path, b"".join(leaves)) == commitment
        with MerkleTreeFile(path) as tree:
            for i, leaf in enumerate(leaves):
                ev = tree.evidence(text(leaf), ROLE)
                assert ev is not None
                assert ev.leaf_index == i
                assert len(ev.path) <= math.ceil(math.log2(n)) if n > 1 else not ev.path
                assert verify_inclusion(text(leaf), ev, commitment)
                assert is_member(commitment, text(leaf), salt=SALT, evidence=ev)
            for i in {0, n - 1, seed % n}:
                ev = tree.evidence(text(leaves[i]), ROLE)
                assert ev is not None
                assert list(ev.path) == ref_path(i, leaves)
    finally:
        path.unlink(missing_ok=True)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 300),
    seed=st.integers(0, 2**32),
    pick=st.integers(0, 2**16),
    bit=st.integers(0, 2**16),
)
def test_any_flipped_bit_fails(n: int, seed: int, pick: int, bit: int) -> None:
    leaves = random_leaves(n, seed)
    i = pick % n
    u = text(leaves[i])
    proof = merkle_inclusion_proof(leaves, i)
    commitment = MerkleMembership(n, merkle_root(leaves))
    ev = MerkleEvidence(ROLE, i, proof)
    assert verify_inclusion(u, ev, commitment)
    # root
    assert not verify_inclusion(u, ev, MerkleMembership(n, flip(commitment.root, bit)))
    # a path entry
    if proof:
        k = bit % len(proof)
        bad_path = (*proof[:k], flip(proof[k], bit // 7), *proof[k + 1 :])
        assert not verify_inclusion(u, MerkleEvidence(ROLE, i, bad_path), commitment)
    # an extra or a missing path entry
    assert not verify_inclusion(u, MerkleEvidence(ROLE, i, (*proof, b"\x00" * 32)), commitment)
    if proof:
        assert not verify_inclusion(u, MerkleEvidence(ROLE, i, proof[:-1]), commitment)
    # the index (any bit up to 64)
    other = i ^ (1 << (bit % 64))
    assert not verify_inclusion(u, MerkleEvidence(ROLE, other, proof), commitment)
    # the uuid
    assert not verify_inclusion(text(flip(leaves[i], bit)), ev, commitment)
    # an index at or beyond the signed size (the size itself is signed, trusted)
    if i > 0:
        assert not verify_inclusion(u, ev, MerkleMembership(i, commitment.root))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), seed=st.integers(0, 2**32), pick=st.integers(0, 2**16))
def test_proof_from_another_tree_fails(n: int, seed: int, pick: int) -> None:
    leaves = random_leaves(n, seed)
    i = pick % n
    other = sorted({*random_leaves(n, seed + 1), leaves[i]})
    j = other.index(leaves[i])
    ev_other = MerkleEvidence(ROLE, j, merkle_inclusion_proof(other, j))
    commitment = MerkleMembership(n, merkle_root(leaves))
    assert not verify_inclusion(text(leaves[i]), ev_other, commitment)
    assert verify_inclusion(
        text(leaves[i]), ev_other, MerkleMembership(len(other), merkle_root(other))
    )


def test_verify_inclusion_never_raises() -> None:
    commitment = MerkleMembership(3, bytes.fromhex(EX_ROOT))
    ev = MerkleEvidence(ROLE, 0, tuple(bytes.fromhex(p) for p in EX_PATHS[0]))
    assert verify_inclusion(EX_UUIDS[0].upper(), ev, commitment)
    assert not verify_inclusion("not-a-uuid", ev, commitment)
    assert not verify_inclusion(None, ev, commitment)  # type: ignore[arg-type]
    assert not verify_inclusion(EX_UUIDS[0], {"role": ROLE}, commitment)  # type: ignore[arg-type]
    assert not verify_inclusion(EX_UUIDS[0], ev, FractionMembership(5))  # type: ignore[arg-type]
    assert not verify_inclusion(EX_UUIDS[0], ev, MerkleMembership(0, EMPTY_ROOT))
    assert not verify_inclusion(EX_UUIDS[0], MerkleEvidence(ROLE, 2**64 - 2, ev.path), commitment)


# --------------------------------------------------------------------------
# The tree file


@pytest.mark.parametrize(
    ("n", "level"),
    [
        (1, 8),
        (2, 8),
        (3, 8),
        (255, 8),
        (256, 8),
        (257, 8),
        (511, 8),
        (512, 8),
        (513, 8),
        (1000, 8),
        (3001, 8),
        (4096, 8),
        (1000, 0),
        (1000, 3),
        (37, 2),
    ],
)
def test_tree_file_matches_in_memory(tmp_path: Path, n: int, level: int) -> None:
    leaves = random_leaves(n, seed=1000 + n)
    with _tree_file(tmp_path, leaves, level) as tree:
        assert tree.size == n
        assert tree.root == merkle_root(leaves) == ref_mth(leaves)
        assert tree.commitment() == MerkleMembership(n, tree.root)
        for i in sorted({0, 1 % n, n // 2, 255 % n, 256 % n, n - 2 if n > 1 else 0, n - 1}):
            ev = tree.evidence(text(leaves[i]), ROLE)
            assert ev == MerkleEvidence(ROLE, i, merkle_inclusion_proof(leaves, i))
        assert list(tree.members()) == [text(x) for x in leaves]
        assert tree.contains(text(leaves[-1]).upper())
        absent = text(b"\x00" * 16) if leaves[0] != b"\x00" * 16 else text(b"\xff" * 16)
        assert not tree.contains(absent)
        assert tree.evidence(absent, ROLE) is None
    assert [p.name for p in tmp_path.iterdir()] == ["tree.bin"]


def test_tree_file_empty(tmp_path: Path) -> None:
    commitment = MerkleTreeFile.build(tmp_path / "t", b"")
    assert commitment == MerkleMembership(0, EMPTY_ROOT)
    with MerkleTreeFile(tmp_path / "t") as tree:
        assert tree.size == 0
        assert tree.root == EMPTY_ROOT
        assert list(tree.members()) == []
        assert tree.evidence(A, ROLE) is None


def test_tree_file_rejects_bad_input_and_files(tmp_path: Path) -> None:
    path = tmp_path / "t"
    with pytest.raises(InputError, match="leaf 2 "):
        MerkleTreeFile.build(path, b"\x02" * 16 + b"\x01" * 16)
    with pytest.raises(InputError, match="multiple of 16"):
        MerkleTreeFile.build(path, b"\x02" * 20)
    assert list(tmp_path.iterdir()) == []
    MerkleTreeFile.build(path, b"".join(random_leaves(300, 3)))
    with MerkleTreeFile(path) as tree, pytest.raises(InputError):
        tree.evidence("bad", ROLE)
    data = path.read_bytes()
    for name, content in [
        ("truncated", data[:-1]),
        ("trailing", data + b"\x00"),
        ("magic", b"X" + data[1:]),
        ("empty", b""),
    ]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(StorageError):
            MerkleTreeFile(tmp_path / name)
    with pytest.raises(StorageError):
        MerkleTreeFile(tmp_path / "missing")
    with pytest.raises(StorageError):
        MerkleTreeFile.build(tmp_path / "no-dir" / "t", b"")


# --------------------------------------------------------------------------
# Fraction


@settings(max_examples=200, deadline=None)
@given(
    raw=st.binary(min_size=16, max_size=16),
    salt=st.binary(min_size=32, max_size=32),
    p=st.integers(0, 1_000_000),
    q=st.integers(0, 1_000_000),
)
def test_fraction_monotone_in_p(raw: bytes, salt: bytes, p: int, q: int) -> None:
    lo, hi = sorted((p, q))
    u = text(raw)
    if fraction_member(salt, u, lo):
        assert fraction_member(salt, u, hi)
    assert not fraction_member(salt, u, 0)
    assert fraction_member(salt, u, 1_000_000)


@pytest.mark.parametrize("p", [1_000, 50_000, 500_000, 990_000])
@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(salt=st.binary(min_size=32, max_size=32), seed=st.integers(0, 2**64 - 1))
def test_fraction_rate_within_5_sigma(p: int, salt: bytes, seed: int) -> None:
    """Over 100,000 random UUIDs the member rate is within 5 sigma of P, for any salt."""
    rng = random.Random(seed)  # the UUIDs; hypothesis chooses salt and seed
    trials = 100_000
    hits = sum(fraction_member(salt, text(rng.randbytes(16)), p) for _ in range(trials))
    rate = p / 1_000_000
    sigma = math.sqrt(trials * rate * (1 - rate))
    assert abs(hits - trials * rate) <= 5 * sigma


def test_fraction_rejects_bad_salt_and_p() -> None:
    with pytest.raises(InputError, match="salt"):
        fraction_member(b"\x00" * 31, A, 5)
    with pytest.raises(InputError):
        fraction_member(SALT, A, 1_000_001)
    with pytest.raises(InputError):
        fraction_member(SALT, "nope", 5)


# --------------------------------------------------------------------------
# is_member and encode_members


def test_is_member_table() -> None:
    leaves = [uuid.UUID(u).bytes for u in EX_UUIDS]
    merkle = MerkleMembership(3, merkle_root(leaves))
    ev0 = MerkleEvidence(ROLE, 0, merkle_inclusion_proof(leaves, 0))
    outsider = "12345678-1234-4234-8234-123456789abc"
    cases: list[tuple[Membership, str, MerkleEvidence | None, bool]] = [
        (ListMembership((A, C)), A, None, True),
        (ListMembership((A, C)), C.upper(), None, True),
        (ListMembership((A, C)), B, None, False),
        (ListMembership(()), A, None, False),
        (merkle, EX_UUIDS[0], ev0, True),
        (merkle, EX_UUIDS[0], None, False),
        (merkle, EX_UUIDS[1], ev0, False),
        (merkle, outsider, ev0, False),
        (MerkleMembership(0, EMPTY_ROOT), EX_UUIDS[0], ev0, False),
        (FractionMembership(0), EX_UUIDS[0], None, False),
        (FractionMembership(90_939), EX_UUIDS[0], None, False),
        (FractionMembership(90_940), EX_UUIDS[0], None, True),
        (FractionMembership(1_000_000), outsider, None, True),
    ]
    for membership, u, ev, expected in cases:
        assert is_member(membership, u, salt=SALT, evidence=ev) is expected, (
            membership,
            u,
        )
    with pytest.raises(InputError):
        is_member(ListMembership(()), "nope", salt=SALT, evidence=None)


def test_encode_members_threshold() -> None:
    small = random_leaves(LIST_MAX, 7)
    enc = encode_members(small)
    assert isinstance(enc, ListMembership)
    assert enc.uuids == tuple(text(x) for x in small)
    assert encode_members(b"".join(small)) == enc
    big = random_leaves(LIST_MAX + 1, 8)
    enc_big = encode_members(big)
    assert enc_big == MerkleMembership(LIST_MAX + 1, ref_mth(big))
    assert encode_members(small, list_max=10) == MerkleMembership(LIST_MAX, ref_mth(small))
    assert encode_members([]) == ListMembership(())
    with pytest.raises(InputError, match="sorted"):
        encode_members(list(reversed(small[:3])))
    with pytest.raises(InputError, match="sorted"):
        encode_members(list(reversed(big)))
