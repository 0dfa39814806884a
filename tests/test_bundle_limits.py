"""Bundle parsing edges: caps on counts, constructor types, lookups that miss."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.simulator import device
from tufwaves.device.bundle import (
    LIMITS,
    Bundle,
    BundleError,
    BundleFile,
    BundleTooLargeError,
)
from tufwaves.device.membership import MerkleEvidence

UUID = device(0xABC)
TOP = (BundleFile("timestamp", 1, b"{}"), BundleFile("snapshot", 1, b"{}"))
TOP += (BundleFile("targets", 1, b"{}"),)


def _roots(n: int) -> tuple[BundleFile, ...]:
    return tuple(BundleFile("root", v, b"{}") for v in range(2, n + 2))


def _ripples(n: int) -> tuple[BundleFile, ...]:
    return (
        BundleFile("wave.a", 1, b"{}"),
        BundleFile("rollout.a", 1, b"{}"),
        *(BundleFile(f"ripple.a.{k}", 1, b"{}") for k in range(1, n + 1)),
    )


@pytest.mark.parametrize(
    ("files", "evidence"),
    [
        ((*_roots(LIMITS.root_files + 1), *TOP), ()),
        ((*TOP, *_ripples(LIMITS.ripples + 1)), ()),
        (TOP, (MerkleEvidence("ripple.a.1", 0, ()),) * (LIMITS.evidence + 1)),
    ],
    ids=["too-many-roots", "too-many-ripples", "too-much-evidence"],
)
def test_count_caps(files: tuple[BundleFile, ...], evidence: tuple[MerkleEvidence, ...]) -> None:
    with pytest.raises(BundleTooLargeError):
        Bundle(UUID, files, evidence)


def test_counts_at_the_caps_are_accepted() -> None:
    b = Bundle(UUID, (*_roots(LIMITS.root_files), *TOP, *_ripples(LIMITS.ripples)))
    assert len(b.roots()) == LIMITS.root_files
    assert len(b.ripples("a")) == LIMITS.ripples


@pytest.mark.parametrize(
    ("files", "evidence"),
    [
        (list(TOP), ()),
        ((*TOP, "targets"), ()),
        (TOP, [MerkleEvidence("ripple.a.1", 0, ())]),
        (TOP, ({"role": "ripple.a.1"},)),
    ],
    ids=["files-a-list", "file-not-a-BundleFile", "evidence-a-list", "evidence-not-evidence"],
)
def test_constructor_types(files: Any, evidence: Any) -> None:
    with pytest.raises(BundleError):
        Bundle(UUID, files, evidence)


def test_file_data_must_be_bytes() -> None:
    with pytest.raises(BundleError, match="bytes"):
        BundleFile("timestamp", 1, "{}")  # type: ignore[arg-type]


def _entry(data: str) -> dict[str, Any]:
    return {"role": "timestamp", "version": 1, "data": data}


@pytest.mark.parametrize(
    "data",
    ["QR==", "QQ", "QQ==\n"],
    ids=["nonzero-padding-bits", "missing-padding", "trailing-newline"],
)
def test_file_data_must_be_canonical_base64(data: str) -> None:
    with pytest.raises(BundleError, match="base64"):
        BundleFile.from_dict(_entry(data))


def test_device_must_be_a_string() -> None:
    raw = Bundle(UUID, TOP).to_dict()
    raw["device"] = 7
    with pytest.raises(BundleError, match="device"):
        Bundle.from_bytes(json.dumps(raw).encode())


def test_from_bytes_needs_bytes() -> None:
    with pytest.raises(BundleError, match="bytes"):
        Bundle.from_bytes(Bundle(UUID, TOP).to_bytes().decode())  # type: ignore[arg-type]


def test_lookups_that_miss() -> None:
    evidence = (MerkleEvidence("ripple.a.2", 0, ()),)
    b = Bundle(UUID, (*TOP, *_ripples(2)), evidence)
    assert b.file("wave.b") is None
    assert b.file("root") is None
    assert b.evidence_for("ripple.a.1") is None
    assert b.evidence_for("ripple.a.2") == evidence[0]
