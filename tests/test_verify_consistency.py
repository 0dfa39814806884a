"""The verifier's rollback and consistency checks (specs/verifier.md section 2).

Every case forges a bundle with really re-signed metadata (:mod:`tests.forge`):
the signatures are good, the metadata is not consistent with itself or with
what the device trusted. Each case names the exact reason and checks that the
device's trust state (a state directory) is byte-for-byte unchanged, and that
the device still accepts the genuine current bundle afterwards.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from tuf.api.metadata import MetaFile

from tests.conftest import tree_digest
from tests.forge import meta_of, next_snapshot, sign, top, with_files
from tests.simulator import NOW, Simulator, device
from tufwaves.device.bundle import LIMITS, Bundle, BundleFile
from tufwaves.verify import DeviceIdentity, Reason, Verifier

MEMBER = device(1)
IDENTITY = DeviceIdentity(MEMBER, "hw-a", "main", 4)

Build = Callable[[Simulator, Bundle], Bundle | bytes]


def repository() -> Simulator:
    sim = Simulator()
    sim.add_production(5)
    sim.add_wave("w1", 7)
    sim.add_list_ripple("w1", [MEMBER])
    return sim


@dataclass(frozen=True)
class Case:
    build: Build
    reason: Reason
    trusted: bool = True  # the device verified the current bundle before


# -- builders ------------------------------------------------------------------


def _snapshot_edit(edit: Callable[[dict[str, MetaFile], Simulator], None]) -> Build:
    """A new snapshot version whose ``meta`` is edited, and a timestamp for it."""

    def build(s: Simulator, b: Bundle) -> Bundle:
        snap = next_snapshot(s)
        edit(snap.meta, s)
        return top(s, b, snapshot=snap)

    return build


def _declared(role: str, delta: int = 5) -> Build:
    """The bundle gives ``role`` a version its bytes do not have."""

    def build(s: Simulator, b: Bundle) -> Bundle:
        f = next(f for f in b.files if f.role == role)
        return with_files(b, {role: (f.version + delta, f.data)})

    return build


def _served_as(role: str, other: str) -> Build:
    """The bytes of ``other`` in place of ``role`` (another metadata type)."""

    def build(s: Simulator, b: Bundle) -> Bundle:
        f = next(f for f in b.files if f.role == other)
        return with_files(b, {role: (f.version, f.data)})

    return build


def _over_cap(role: str, cap: int) -> Build:
    """The serialised bundle with ``role``'s data one byte over its cap."""

    def build(s: Simulator, b: Bundle) -> bytes:
        raw = b.to_dict()
        for entry in raw["files"]:
            if entry["role"] == role:
                entry["data"] = base64.b64encode(b" " * (cap + 1)).decode()
        return json.dumps(raw).encode()

    return build


def timestamp_older_version(s: Simulator, b: Bundle) -> Bundle:
    return top(s, b, snapshot_bytes=s.latest("snapshot"), timestamp_version=s.timestamp.version - 1)


def timestamp_same_version_other_bytes(s: Simulator, b: Bundle) -> Bundle:
    # Same version, same snapshot, but the snapshot named without length/hashes.
    return top(
        s,
        b,
        snapshot_bytes=s.latest("snapshot"),
        timestamp_version=s.timestamp.version,
        named=MetaFile(s.snapshot.version),
    )


def timestamp_names_older_snapshot(s: Simulator, b: Bundle) -> Bundle:
    return top(s, b, snapshot_bytes=s.signed["snapshot"][s.snapshot.version - 1])


def snapshot_older_than_timestamp_names(s: Simulator, b: Bundle) -> Bundle:
    data = sign(next_snapshot(s), s.signers["snapshot"])
    return top(s, b, snapshot_bytes=data, named=meta_of(data, s.snapshot.version + 2))


def snapshot_newer_than_timestamp_names(s: Simulator, b: Bundle) -> Bundle:
    snap = next_snapshot(s)
    snap.version += 1
    data = sign(snap, s.signers["snapshot"])
    return top(s, b, snapshot_bytes=data, named=meta_of(data, s.snapshot.version + 1))


def snapshot_length_mismatch(s: Simulator, b: Bundle) -> Bundle:
    data = sign(next_snapshot(s), s.signers["snapshot"])
    good = meta_of(data, s.snapshot.version + 1)
    named = MetaFile(good.version, length=len(data) + 1, hashes=good.hashes)
    return top(s, b, snapshot_bytes=data, named=named)


def snapshot_hash_mismatch(s: Simulator, b: Bundle) -> Bundle:
    data = sign(next_snapshot(s), s.signers["snapshot"])
    named = MetaFile(s.snapshot.version + 1, length=len(data), hashes={"sha256": "ab" * 32})
    return top(s, b, snapshot_bytes=data, named=named)


def timestamp_served_as_snapshot(s: Simulator, b: Bundle) -> Bundle:
    data = s.signed["timestamp"][1]
    return top(s, b, snapshot_bytes=data, named=meta_of(data, s.snapshot.version + 1))


def timestamp_served_as_root(s: Simulator, b: Bundle) -> Bundle:
    files = (BundleFile("root", 2, s.latest("timestamp")), *b.files)
    return Bundle(b.device, files, b.evidence)


def root_declared_version(s: Simulator, b: Bundle) -> Bundle:
    root2 = s.rotate_root()
    return Bundle(b.device, (BundleFile("root", 3, root2), *b.files), b.evidence)


def targets_newer_than_snapshot_names(s: Simulator, b: Bundle) -> Bundle:
    targets = copy.deepcopy(s.targets)
    targets.version += 1
    return with_files(b, {"targets": (targets.version, sign(targets, s.signers["targets"]))})


def _listed(
    role: str, *, version_delta: int = 0, length_delta: int = 0, bad_hash: bool = False
) -> Callable[[dict[str, MetaFile], Simulator], None]:
    """Snapshot lists ``role`` at another version or length, or with a bad hash."""

    def edit(meta: dict[str, MetaFile], s: Simulator) -> None:
        data = s.latest(role)
        version = meta[f"{role}.json"].version + version_delta
        hashes = {"sha256": "cd" * 32} if bad_hash else None
        meta[f"{role}.json"] = MetaFile(version, length=len(data) + length_delta, hashes=hashes)

    return edit


def _unlisted(role: str) -> Callable[[dict[str, MetaFile], Simulator], None]:
    def edit(meta: dict[str, MetaFile], s: Simulator) -> None:
        del meta[f"{role}.json"]

    return edit


CASES: dict[str, Case] = {
    # timestamp versus the trusted timestamp
    "timestamp-older-version": Case(timestamp_older_version, Reason.ROLLBACK),
    "timestamp-same-version-other-bytes": Case(
        timestamp_same_version_other_bytes, Reason.TIMESTAMP_INVALID
    ),
    "timestamp-names-older-snapshot": Case(timestamp_names_older_snapshot, Reason.ROLLBACK),
    # snapshot versus the trusted snapshot
    "snapshot-drops-trusted-role": Case(_snapshot_edit(_unlisted("wave.w1")), Reason.ROLLBACK),
    "snapshot-lists-older-targets": Case(
        _snapshot_edit(_listed("targets", version_delta=-1)), Reason.ROLLBACK
    ),
    "snapshot-lists-older-rollout": Case(
        _snapshot_edit(_listed("rollout.w1", version_delta=-1)), Reason.ROLLBACK
    ),
    # snapshot versus the timestamp
    "snapshot-older-than-timestamp-names": Case(
        snapshot_older_than_timestamp_names, Reason.ROLLBACK
    ),
    "snapshot-newer-than-timestamp-names": Case(
        snapshot_newer_than_timestamp_names, Reason.SNAPSHOT_INVALID
    ),
    "snapshot-length-mismatch": Case(snapshot_length_mismatch, Reason.SNAPSHOT_INVALID),
    "snapshot-hash-mismatch": Case(snapshot_hash_mismatch, Reason.SNAPSHOT_INVALID),
    # a role missing from the snapshot (a device with no trusted snapshot yet:
    # for a trusting device a dropped role is a rollback, above)
    "targets-not-in-snapshot": Case(
        _snapshot_edit(_unlisted("targets")), Reason.TARGETS_INVALID, trusted=False
    ),
    "wave-not-in-snapshot": Case(
        _snapshot_edit(_unlisted("wave.w1")), Reason.DELEGATION_INVALID, trusted=False
    ),
    "rollout-not-in-snapshot": Case(
        _snapshot_edit(_unlisted("rollout.w1")), Reason.DELEGATION_INVALID, trusted=False
    ),
    "ripple-not-in-snapshot": Case(
        _snapshot_edit(_unlisted("ripple.w1.1")), Reason.DELEGATION_INVALID, trusted=False
    ),
    # targets and delegated roles versus the snapshot
    "targets-length-mismatch": Case(
        _snapshot_edit(_listed("targets", length_delta=1)), Reason.TARGETS_INVALID
    ),
    "targets-hash-mismatch": Case(
        _snapshot_edit(_listed("targets", bad_hash=True)), Reason.TARGETS_INVALID
    ),
    "wave-length-mismatch": Case(
        _snapshot_edit(_listed("wave.w1", length_delta=-1)), Reason.DELEGATION_INVALID
    ),
    "rollout-hash-mismatch": Case(
        _snapshot_edit(_listed("rollout.w1", bad_hash=True)), Reason.DELEGATION_INVALID
    ),
    "ripple-hash-mismatch": Case(
        _snapshot_edit(_listed("ripple.w1.1", bad_hash=True)), Reason.DELEGATION_INVALID
    ),
    "targets-older-than-snapshot-names": Case(
        _snapshot_edit(_listed("targets", version_delta=1)), Reason.ROLLBACK
    ),
    "targets-newer-than-snapshot-names": Case(
        targets_newer_than_snapshot_names, Reason.TARGETS_INVALID
    ),
    "rollout-older-than-snapshot-names": Case(
        _snapshot_edit(_listed("rollout.w1", version_delta=1)), Reason.ROLLBACK
    ),
    # metadata of the wrong type
    "timestamp-served-as-root": Case(timestamp_served_as_root, Reason.ROOT_INVALID),
    "snapshot-served-as-timestamp": Case(
        _served_as("timestamp", "snapshot"), Reason.TIMESTAMP_INVALID
    ),
    "timestamp-served-as-snapshot": Case(timestamp_served_as_snapshot, Reason.SNAPSHOT_INVALID),
    "snapshot-served-as-targets": Case(_served_as("targets", "snapshot"), Reason.TARGETS_INVALID),
    "timestamp-served-as-wave": Case(_served_as("wave.w1", "timestamp"), Reason.DELEGATION_INVALID),
    "snapshot-served-as-ripple": Case(
        _served_as("ripple.w1.1", "snapshot"), Reason.DELEGATION_INVALID
    ),
    # the version the bundle declares for a file is not the file's
    "root-declared-version": Case(root_declared_version, Reason.ROOT_INVALID),
    "timestamp-declared-version": Case(_declared("timestamp"), Reason.TIMESTAMP_INVALID),
    "snapshot-declared-version": Case(_declared("snapshot"), Reason.SNAPSHOT_INVALID),
    "targets-declared-version": Case(_declared("targets", -1), Reason.TARGETS_INVALID),
    "ripple-declared-version": Case(_declared("ripple.w1.1"), Reason.DELEGATION_INVALID),
    # a file over its size cap
    "timestamp-over-cap": Case(
        _over_cap("timestamp", LIMITS.timestamp_bytes), Reason.BUNDLE_TOO_LARGE
    ),
    "snapshot-over-cap": Case(
        _over_cap("snapshot", LIMITS.snapshot_bytes), Reason.BUNDLE_TOO_LARGE
    ),
    "rollout-over-cap": Case(
        _over_cap("rollout.w1", LIMITS.targets_bytes), Reason.BUNDLE_TOO_LARGE
    ),
}


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
def test_inconsistent_metadata_is_refused_and_state_kept(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    sim = repository()
    (tmp_path / "root.json").write_bytes(sim.trusted_root())
    current = sim.bundle(MEMBER)
    if case.trusted:
        first = Verifier.from_state_dir(tmp_path).decide(current, IDENTITY, NOW)
        assert first.reason is Reason.ALLOWED_RIPPLE
    before = tree_digest(tmp_path)

    verifier = Verifier.from_state_dir(tmp_path)
    forged = case.build(sim, current)
    decision = verifier.decide(forged, IDENTITY, NOW)

    assert decision.reason is case.reason, decision.message
    assert not decision.allowed and decision.artifact is None
    assert tree_digest(tmp_path) == before, "a refused bundle changed the trust state"
    assert verifier.trusted_root_version == 1
    # Nothing of the forged bundle stuck: the genuine bundle still passes.
    assert verifier.decide(current, IDENTITY, NOW).reason is Reason.ALLOWED_RIPPLE


def test_cases_cover_every_consistency_reason() -> None:
    reasons = {c.reason for c in CASES.values()}
    assert {
        Reason.ROLLBACK,
        Reason.TIMESTAMP_INVALID,
        Reason.SNAPSHOT_INVALID,
        Reason.TARGETS_INVALID,
        Reason.DELEGATION_INVALID,
        Reason.ROOT_INVALID,
        Reason.BUNDLE_TOO_LARGE,
    } <= reasons


# -- root rotation bounds --------------------------------------------------------


def test_one_update_walks_the_most_root_rotations() -> None:
    sim = repository()
    for _ in range(LIMITS.root_files):
        sim.rotate_root()
    bundle = sim.bundle(MEMBER)
    assert len(bundle.roots()) == LIMITS.root_files
    verifier = Verifier.from_trusted_root(sim.trusted_root())
    decision = verifier.decide(bundle, IDENTITY, NOW)
    assert decision.reason is Reason.ALLOWED_RIPPLE
    assert verifier.trusted_root_version == 1 + LIMITS.root_files


def test_one_root_file_too_many_is_too_large() -> None:
    sim = repository()
    for _ in range(LIMITS.root_files + 1):
        sim.rotate_root()
    raw = sim.bundle(MEMBER, trusted_root=2).to_dict()  # roots v3.., then v2 in front
    raw["files"].insert(0, BundleFile("root", 2, sim.trusted_root(2)).to_dict())
    verifier = Verifier.from_trusted_root(sim.trusted_root())
    decision = verifier.decide(json.dumps(raw).encode(), IDENTITY, NOW)
    assert decision.reason is Reason.BUNDLE_TOO_LARGE
    assert verifier.trusted_root_version == 1
