"""Membership values and Merkle helpers on bad input (public API of membership)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.simulator import device
from tufwaves.device.membership import (
    EVIDENCE_MAX_PATH,
    LIST_MAX,
    ListMembership,
    MerkleEvidence,
    encode_members,
    is_member,
    merkle_inclusion_proof,
    merkle_root,
)
from tufwaves.errors import InputError


def leaves(n: int) -> list[bytes]:
    return [i.to_bytes(16, "big") for i in range(1, n + 1)]


def test_list_membership_takes_any_sequence() -> None:
    uuids = [device(1), device(2)]
    assert ListMembership(uuids).uuids == tuple(uuids)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "uuids",
    [device(1), {device(1)}, tuple(sorted(device(i) for i in range(LIST_MAX + 1)))],
    ids=["a-string", "a-set", "over-list-max"],
)
def test_list_membership_rejects(uuids: Any) -> None:
    with pytest.raises(InputError):
        ListMembership(uuids)


@pytest.mark.parametrize(
    ("path", "match"),
    [
        ([b"\x00" * 32], "tuple"),
        ((b"\x00" * 32,) * (EVIDENCE_MAX_PATH + 1), "at most"),
        ((b"\x00" * 31,), "32 bytes"),
        (("00" * 32,), "32 bytes"),
    ],
    ids=["path-a-list", "path-too-long", "short-hash", "hex-not-bytes"],
)
def test_evidence_rejects(path: Any, match: str) -> None:
    with pytest.raises(InputError, match=match):
        MerkleEvidence("ripple.w1.1", 0, path)


def test_evidence_keys_must_be_strings() -> None:
    with pytest.raises(InputError, match="strings"):
        MerkleEvidence.from_dict({"role": "ripple.w1.1", "leaf_index": 0, "path": [], 1: 2})


@pytest.mark.parametrize("index", [-1, 5, True], ids=["negative", "past-the-end", "bool"])
def test_inclusion_proof_rejects_index(index: Any) -> None:
    with pytest.raises(InputError, match="outside"):
        merkle_inclusion_proof(leaves(5), index)


@pytest.mark.parametrize(
    ("n", "swap", "leaf"),
    [(8, 5, 6), (512, 255, 256)],
    ids=["inside-a-chunk", "across-chunks"],
)
def test_unsorted_leaves_are_refused(n: int, swap: int, leaf: int) -> None:
    data = leaves(n)
    data[swap], data[swap + 1] = data[swap + 1], data[swap]
    for compute in (merkle_root, lambda d: merkle_inclusion_proof(d, 0)):
        with pytest.raises(InputError, match=f"leaf {leaf + 1} is not greater"):
            compute(data)


def test_is_member_needs_a_membership_value() -> None:
    with pytest.raises(InputError, match="not a membership"):
        is_member(object(), device(1), salt=b"\x00" * 32, evidence=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("list_max", [-1, LIST_MAX + 1, True], ids=["negative", "over", "bool"])
def test_encode_members_rejects_list_max(list_max: Any) -> None:
    with pytest.raises(InputError, match="list_max"):
        encode_members(leaves(3), list_max=list_max)
