"""No single mutation of a valid bundle for a member device is ever allowed.

The base bundle: root v2 and v3 (each rotating the timestamp key), timestamp,
snapshot, targets, wave ``w1`` (the device is in its Merkle ripple) and wave
``w2`` (another tag, no ripples). Wave ``w3`` shares ``w1``'s rollout keys, has
a ripple naming the device and was cancelled; it is not in the base bundle but
its files are material for replays. Every file in the base bundle is needed,
so every mutation below must turn the decision into a denial, and no
exception may escape ``decide``.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tuf.api.metadata import Metadata

from tests.simulator import NOW, PAST, Simulator, device
from tufwaves.device.bundle import Bundle, BundleFile
from tufwaves.verify import DeviceIdentity, Reason, Verifier

D = device(7)
OTHER_MEMBER = device(8)
IDENTITY = DeviceIdentity(D, "hw-a", "main", 5)


@dataclass(frozen=True)
class Scenario:
    sim: Simulator
    root1: bytes
    bundle: Bundle
    pre_cancel_rollout: BundleFile
    w3_wave: BundleFile
    w3_ripple: BundleFile
    expired_timestamp: bytes


@functools.cache
def scenario() -> Scenario:
    sim = Simulator()
    sim.add_production(5)
    sim.rotate_root(keys={"timestamp": ["timestamp-2"]})
    sim.publish()
    sim.rotate_root(keys={"timestamp": ["timestamp-3"]})
    sim.add_wave("w1", 7)
    sim.publish()
    sim.add_merkle_ripple("w1", [device(i) for i in range(1, 40)])
    sim.add_wave("w2", 9, tag="other")
    sim.add_wave("w3", 8, rollout_key_name="w1")
    sim.add_list_ripple("w3", [D, OTHER_MEMBER])
    sim.publish()
    w3 = sim.waves["w3"]
    pre_cancel = BundleFile("rollout.w3", w3.rollout.signed.version, sim.latest("rollout.w3"))
    sim.set_state("w3", "cancelled")
    bundle = sim.bundle(D, waves=["w1", "w2"])
    ts = copy.deepcopy(sim.timestamp)
    ts.expires = PAST
    md = Metadata(ts)
    md.sign(sim.signers["timestamp"][0])
    return Scenario(
        sim,
        sim.trusted_root(1),
        bundle,
        pre_cancel,
        BundleFile("wave.w3", 1, sim.latest("wave.w3")),
        BundleFile("ripple.w3.1", 1, sim.latest("ripple.w3.1")),
        md.to_bytes(),
    )


def decide(bundle: Bundle | bytes) -> Reason:
    verifier = Verifier.from_trusted_root(scenario().root1)
    return verifier.decide(bundle, IDENTITY, NOW).reason


def test_base_bundle_is_allowed() -> None:
    s = scenario()
    assert decide(s.bundle) is Reason.ALLOWED_RIPPLE
    assert decide(s.bundle.to_bytes()) is Reason.ALLOWED_RIPPLE
    assert [f.role for f in s.bundle.files] == [
        "root",
        "root",
        "timestamp",
        "snapshot",
        "targets",
        "wave.w1",
        "rollout.w1",
        "ripple.w1.1",
        "wave.w2",
        "rollout.w2",
    ]


# -- mutations ---------------------------------------------------------------

Mutation = Callable[[Scenario], Bundle | bytes]


def _with_files(s: Scenario, files: list[BundleFile]) -> bytes:
    """Serialise without the Bundle constructor's checks (they may refuse)."""
    b = s.bundle
    raw = b.to_dict()
    raw["files"] = [f.to_dict() for f in files]
    return json.dumps(raw).encode()


def _index(s: Scenario, role: str) -> int:
    return [f.role for f in s.bundle.files].index(role)


def flip(i: int, pos: int, mask: int) -> Mutation:
    def m(s: Scenario) -> bytes:
        files = list(s.bundle.files)
        f = files[i % len(files)]
        data = bytearray(f.data)
        data[pos % len(data)] ^= mask
        files[i % len(files)] = BundleFile(f.role, f.version, bytes(data))
        return _with_files(s, files)

    return m


def remove(i: int) -> Mutation:
    def m(s: Scenario) -> bytes:
        files = list(s.bundle.files)
        del files[i % len(files)]
        return _with_files(s, files)

    return m


def duplicate(i: int) -> Mutation:
    def m(s: Scenario) -> bytes:
        files = list(s.bundle.files)
        j = i % len(files)
        files.insert(j, files[j])
        return _with_files(s, files)

    return m


def swap_wave(role: str, other: str, keep_version: bool) -> Mutation:
    def m(s: Scenario) -> bytes:
        files = list(s.bundle.files)
        mine, theirs = files[_index(s, role)], files[_index(s, other)]
        version = mine.version if keep_version else theirs.version
        files[_index(s, role)] = BundleFile(role, version, theirs.data)
        return _with_files(s, files)

    return m


def older(role: str, pick: int) -> Mutation:
    def m(s: Scenario) -> bytes:
        files = list(s.bundle.files)
        current = files[_index(s, role)]
        versions = sorted(v for v in s.sim.signed[role] if v < current.version)
        v = versions[pick % len(versions)]
        files[_index(s, role)] = BundleFile(role, v, s.sim.signed[role][v])
        return _with_files(s, files)

    return m


def replay_pre_cancel(with_ripple: bool) -> Mutation:
    def m(s: Scenario) -> bytes:
        files = [*s.bundle.files, s.w3_wave, s.pre_cancel_rollout]
        if with_ripple:
            files.append(s.w3_ripple)
        return _with_files(s, files)

    return m


def ripple_from_other_wave(keep_version: bool) -> Mutation:
    def m(s: Scenario) -> bytes:
        files = list(s.bundle.files)
        i = _index(s, "ripple.w1.1")
        version = files[i].version if keep_version else s.w3_ripple.version
        files[i] = BundleFile("ripple.w1.1", version, s.w3_ripple.data)
        return _with_files(s, files)

    return m


def expired_timestamp(s: Scenario) -> bytes:
    files = list(s.bundle.files)
    i = _index(s, "timestamp")
    files[i] = BundleFile("timestamp", files[i].version, s.expired_timestamp)
    return _with_files(s, files)


def other_devices_proof(s: Scenario) -> Bundle:
    proof = s.sim.evidence("w1", 1, OTHER_MEMBER)
    assert proof is not None
    return Bundle(D, s.bundle.files, (proof,))


def no_proof(s: Scenario) -> Bundle:
    return Bundle(D, s.bundle.files, ())


def for_other_device(s: Scenario) -> Bundle:
    return Bundle(OTHER_MEMBER, s.bundle.files, s.bundle.evidence)


_ROLES_WITH_HISTORY = ["timestamp", "snapshot", "targets", "rollout.w1"]

mutations = st.one_of(
    st.builds(flip, st.integers(0, 9), st.integers(0, 10**6), st.integers(1, 255)),
    st.builds(remove, st.integers(0, 9)),
    st.builds(duplicate, st.integers(0, 9)),
    st.builds(
        swap_wave,
        st.sampled_from(["wave.w1", "rollout.w1", "wave.w2", "rollout.w2"]),
        st.sampled_from(["wave.w1", "rollout.w1", "wave.w2", "rollout.w2"]),
        st.booleans(),
    ),
    st.builds(older, st.sampled_from(_ROLES_WITH_HISTORY), st.integers(0, 20)),
    st.builds(replay_pre_cancel, st.booleans()),
    st.builds(ripple_from_other_wave, st.booleans()),
    st.just(expired_timestamp),
    st.just(other_devices_proof),
    st.just(no_proof),
    st.just(for_other_device),
)


def _check(mutation: Mutation) -> None:
    s = scenario()
    mutated = mutation(s)
    if isinstance(mutated, bytes) and json.loads(mutated) == s.bundle.to_dict():
        return  # e.g. a wave swapped with itself: not a mutation
    reason = decide(mutated)
    assert not reason.allowed, reason


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(mutations)
def test_no_single_mutation_is_allowed(mutation: Mutation) -> None:
    _check(mutation)


_many = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])(
    given(mutations)(_check)
)


@pytest.mark.slow
def test_no_single_mutation_is_allowed_many() -> None:
    _many()


EXPECTED: dict[str, tuple[Mutation, Reason]] = {
    "replayed-pre-cancel-rollout": (replay_pre_cancel(True), Reason.ROLLBACK),
    "ripple-of-other-wave": (ripple_from_other_wave(True), Reason.RIPPLE_INVALID),
    "expired-timestamp": (expired_timestamp, Reason.METADATA_EXPIRED),
    "other-devices-proof": (other_devices_proof, Reason.EVIDENCE_INVALID),
    "no-proof": (no_proof, Reason.NOT_MEMBER),
    "for-other-device": (for_other_device, Reason.DEVICE_MISMATCH),
    "wave-swapped": (
        swap_wave("wave.w1", "wave.w2", True),
        Reason.DELEGATION_INVALID,
    ),
    "rollout-swapped": (
        swap_wave("rollout.w1", "rollout.w2", True),
        Reason.DELEGATION_INVALID,
    ),
    "older-rollout": (older("rollout.w1", 0), Reason.ROLLBACK),
    "older-timestamp": (older("timestamp", 0), Reason.TIMESTAMP_INVALID),
    "removed-last-root": (remove(1), Reason.TIMESTAMP_INVALID),
    "removed-first-root": (remove(0), Reason.ROOT_INVALID),
    "duplicated-ripple": (duplicate(7), Reason.BUNDLE_MALFORMED),
}


@pytest.mark.parametrize(("mutation", "reason"), list(EXPECTED.values()), ids=list(EXPECTED))
def test_named_mutations(mutation: Mutation, reason: Reason) -> None:
    assert decide(mutation(scenario())) is reason
