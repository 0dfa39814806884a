"""The bundle format: strict parsing, fixed file order, caps, round trips."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.simulator import Simulator, device
from tufwaves.device.bundle import (
    LIMITS,
    Bundle,
    BundleError,
    BundleFile,
    BundleTooLargeError,
    parse_role_name,
    role_size_cap,
)
from tufwaves.device.membership import MerkleEvidence
from tufwaves.errors import InputError


def f(role: str, version: int = 1, data: bytes = b"{}") -> BundleFile:
    return BundleFile(role, version, data)


TOP = (f("timestamp"), f("snapshot"), f("targets"))
UUID = device(0xABC)


def valid_files() -> tuple[BundleFile, ...]:
    return (
        f("root", 2),
        f("root", 3),
        *TOP,
        f("wave.a"),
        f("rollout.a"),
        f("ripple.a.1"),
        f("ripple.a.2"),
        f("wave.b"),
        f("rollout.b"),
    )


def test_valid_order_round_trips() -> None:
    evidence = (MerkleEvidence("ripple.a.2", 3, (b"\x01" * 32,)),)
    b = Bundle(UUID, valid_files(), evidence)
    assert Bundle.from_bytes(b.to_bytes()) == b
    assert b.waves() == ("a", "b")
    assert b.ripples("a") == (1, 2)
    assert b.evidence_for("ripple.a.2") == evidence[0]
    assert [r.version for r in b.roots()] == [2, 3]


def test_simulated_bundle_round_trips() -> None:
    sim = Simulator()
    sim.add_wave("w1", 3)
    sim.add_merkle_ripple("w1", [device(i) for i in range(5)])
    b = sim.bundle(device(2))
    assert Bundle.from_bytes(b.to_bytes()) == b
    assert json.loads(b.to_bytes())["format"] == "tufwaves-bundle"


ORDER_CASES: dict[str, tuple[BundleFile, ...]] = {
    "no-timestamp": (f("snapshot"), f("targets")),
    "no-targets": (f("timestamp"), f("snapshot")),
    "duplicate-timestamp": (f("timestamp"), f("timestamp"), f("snapshot"), f("targets")),
    "snapshot-first": (f("snapshot"), f("timestamp"), f("targets")),
    "root-after-timestamp": (f("timestamp"), f("root", 2), f("snapshot"), f("targets")),
    "roots-not-consecutive": (f("root", 2), f("root", 4), *TOP),
    "roots-descending": (f("root", 3), f("root", 2), *TOP),
    "duplicate-root": (f("root", 2), f("root", 2), *TOP),
    "wave-before-targets": (f("timestamp"), f("snapshot"), f("wave.a"), f("targets")),
    "wave-without-rollout": (*TOP, f("wave.a")),
    "wave-then-wave": (*TOP, f("wave.a"), f("wave.b"), f("rollout.b")),
    "rollout-first": (*TOP, f("rollout.a"), f("wave.a")),
    "rollout-of-other-wave": (*TOP, f("wave.a"), f("rollout.b")),
    "waves-descending": (*TOP, f("wave.b"), f("rollout.b"), f("wave.a"), f("rollout.a")),
    "duplicate-wave": (*TOP, f("wave.a"), f("rollout.a"), f("wave.a"), f("rollout.a")),
    "ripple-of-other-wave": (*TOP, f("wave.a"), f("rollout.a"), f("ripple.b.1")),
    "ripples-descending": (
        *TOP,
        f("wave.a"),
        f("rollout.a"),
        f("ripple.a.2"),
        f("ripple.a.1"),
    ),
    "duplicate-ripple": (
        *TOP,
        f("wave.a"),
        f("rollout.a"),
        f("ripple.a.1"),
        f("ripple.a.1"),
    ),
    "ripple-before-rollout": (*TOP, f("wave.a"), f("ripple.a.1"), f("rollout.a")),
}


@pytest.mark.parametrize("files", list(ORDER_CASES.values()), ids=list(ORDER_CASES))
def test_out_of_order_files_are_refused(files: tuple[BundleFile, ...]) -> None:
    with pytest.raises(BundleError):
        Bundle(UUID, files)


@pytest.mark.parametrize(
    "role",
    ["", "Root", "wave.", "wave.a.b", "ripple.a", "ripple.a.0", "ripple.a.01", "x.a"],
)
def test_bad_role_names(role: str) -> None:
    with pytest.raises(BundleError):
        parse_role_name(role)


def test_role_names() -> None:
    assert parse_role_name("ripple.w-1.12") == ("ripple", "w-1", 12)
    assert parse_role_name("rollout.w_1") == ("rollout", "w_1", None)
    assert parse_role_name("targets") == ("targets", None, None)


def as_dict() -> dict[str, Any]:
    b = Bundle(UUID, valid_files(), (MerkleEvidence("ripple.a.1", 0, ()),))
    result: dict[str, Any] = json.loads(b.to_bytes())
    return result


def set_(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        target = d
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def delete(path: tuple[Any, ...]) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        target = d
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return edit


MALFORMED: dict[str, Callable[[dict[str, Any]], None]] = {
    "unknown-key": set_(("extra",), 1),
    "missing-evidence": delete(("evidence",)),
    "wrong-format": set_(("format",), "tuf-bundle"),
    "format-version-2": set_(("version",), 2),
    "format-version-bool": set_(("version",), True),
    "device-not-uuid": set_(("device",), "not-a-uuid"),
    "device-uppercase": set_(("device",), UUID.upper()),
    "files-not-list": set_(("files",), {}),
    "file-unknown-key": set_(("files", 0, "x"), 1),
    "file-version-string": set_(("files", 0, "version"), "2"),
    "file-version-zero": set_(("files", 0, "version"), 0),
    "file-version-bool": set_(("files", 0, "version"), True),
    "file-data-not-base64": set_(("files", 0, "data"), "!!!"),
    "file-data-not-canonical": set_(("files", 0, "data"), "e30"),
    "file-data-number": set_(("files", 0, "data"), 5),
    "file-role-unknown": set_(("files", 0, "role"), "mirrors"),
    "evidence-for-missing-ripple": set_(("evidence", 0, "role"), "ripple.b.1"),
    "evidence-unknown-key": set_(("evidence", 0, "x"), 1),
    "evidence-bad-hash": set_(("evidence", 0, "path"), ["00"]),
    "evidence-duplicated": lambda d: d["evidence"].append(dict(d["evidence"][0])),
}


@pytest.mark.parametrize("edit", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_bundles_are_refused(edit: Callable[[dict[str, Any]], None]) -> None:
    d = as_dict()
    edit(d)
    snapshot = copy.deepcopy(d)
    with pytest.raises(BundleError) as info:
        Bundle.from_dict(d)
    assert not isinstance(info.value, BundleTooLargeError)
    assert d == snapshot  # parsing never mutates its input
    with pytest.raises(BundleError):
        Bundle.from_bytes(json.dumps(d).encode())


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]",
        b"\xff\xfe",
        b'{"format": NaN}',
        b'{"format": "a", "format": "b"}',
        b"[" * 100_000,
    ],
    ids=["empty", "array", "not-utf8", "nan", "duplicate-key", "deep-nesting"],
)
def test_non_bundle_bytes(data: bytes) -> None:
    with pytest.raises(BundleError):
        Bundle.from_bytes(data)


TOO_LARGE: dict[str, Callable[[dict[str, Any]], None]] = {
    "timestamp-over-cap": set_(
        ("files", 2, "data"),
        base64.b64encode(b" " * (LIMITS.timestamp_bytes + 1)).decode(),
    ),
    "evidence-path-over-64": set_(("evidence", 0, "path"), ["00" * 32] * 65),
    "too-many-evidence": set_(("evidence",), [{}] * (LIMITS.evidence + 1)),
    "too-many-files": set_(("files",), [{}] * 20_000),
}


@pytest.mark.parametrize("edit", list(TOO_LARGE.values()), ids=list(TOO_LARGE))
def test_oversized_parts_are_refused(edit: Callable[[dict[str, Any]], None]) -> None:
    d = as_dict()
    edit(d)
    with pytest.raises(BundleTooLargeError):
        Bundle.from_dict(d)


def test_whole_bundle_cap() -> None:
    with pytest.raises(BundleTooLargeError):
        Bundle.from_bytes(b" " * (LIMITS.bundle_bytes + 1))


def test_caps_per_role() -> None:
    assert role_size_cap("root") == 512_000
    assert role_size_cap("timestamp") == 16_384
    assert role_size_cap("snapshot") == 2_000_000
    for role in ("targets", "wave.a", "rollout.a", "ripple.a.1"):
        assert role_size_cap(role) == 5_000_000
    with pytest.raises(BundleTooLargeError):
        BundleFile("timestamp", 1, b" " * 16_385)


def test_too_many_waves() -> None:
    files = list(TOP)
    for i in range(LIMITS.waves + 1):
        files += [f(f"wave.w{i:04d}"), f(f"rollout.w{i:04d}")]
    with pytest.raises(BundleTooLargeError):
        Bundle(UUID, tuple(files))


def test_bundle_error_is_an_input_error() -> None:
    assert issubclass(BundleError, InputError)


_roles = st.sampled_from(["root", "timestamp", "wave.a", "ripple.a.1", "rollout.b"])


@settings(max_examples=50, deadline=None)
@given(
    versions=st.lists(st.integers(1, 2**40), max_size=3),
    data=st.lists(st.binary(max_size=64), min_size=6, max_size=6),
    ev_index=st.integers(0, 2**40),
    ev_path=st.lists(st.binary(min_size=32, max_size=32), max_size=5),
)
def test_round_trip_property(
    versions: list[int], data: list[bytes], ev_index: int, ev_path: list[bytes]
) -> None:
    start = min(versions) if versions else 1
    roots = tuple(f("root", start + i, data[0]) for i in range(len(versions)))
    files = (
        *roots,
        f("timestamp", 1, data[1]),
        f("snapshot", 2, data[2]),
        f("targets", 3, data[3]),
        f("wave.x", 1, data[4]),
        f("rollout.x", 5, data[5]),
        f("ripple.x.7", 1, data[0]),
    )
    evidence = (MerkleEvidence("ripple.x.7", ev_index, tuple(ev_path)),)
    b = Bundle(UUID, files, evidence)
    raw = b.to_bytes()
    assert Bundle.from_bytes(raw) == b
    assert Bundle.from_bytes(raw).to_bytes() == raw
