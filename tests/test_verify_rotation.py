"""Root rotation: several versions, key and threshold changes, both thresholds."""

from __future__ import annotations

import pytest

from tests.simulator import NOW, Simulator, device, signer
from tufwaves.verify import DeviceIdentity, Reason, Verifier

D = device(1)
ME = DeviceIdentity(D, "hw-a", "main", 4)


def sim_with_wave(**kw: int) -> Simulator:
    sim = Simulator(**kw)
    sim.add_wave("w1", 7)
    sim.add_list_ripple("w1", [D])
    return sim


def test_rotation_over_several_versions_in_one_bundle() -> None:
    sim = sim_with_wave()
    sim.rotate_root(keys={"root": ["r2"]})
    sim.rotate_root(keys={"timestamp": ["t3"], "snapshot": ["s3"]})
    sim.rotate_root(keys={"targets": ["g4"]})
    sim.rotate_root(keys={"root": ["r5a", "r5b"]}, thresholds={"root": 2})
    verifier = Verifier.from_trusted_root(sim.trusted_root())
    d = verifier.decide(sim.bundle(D), ME, NOW)
    assert d.reason is Reason.ALLOWED_RIPPLE, d.message
    assert verifier.trusted_root_version == 5


def test_rotation_across_bundles() -> None:
    sim = sim_with_wave()
    verifier = Verifier.from_trusted_root(sim.trusted_root())
    for version in range(2, 6):
        sim.rotate_root(keys={"root": [f"root-v{version}"], "timestamp": [f"t{version}"]})
        d = verifier.decide(sim.bundle(D, trusted_root=version - 1), ME, NOW)
        assert d.allowed, d.message
        assert verifier.trusted_root_version == version


def test_threshold_raised_then_lowered() -> None:
    sim = sim_with_wave()
    sim.rotate_root(keys={"root": ["a", "b", "c"]}, thresholds={"root": 2})
    # v3: signed by 2 of 3 old keys (old threshold) and 2 of 3 new keys.
    sim.rotate_root(thresholds={"root": 1}, sign_with=[signer("a"), signer("b")])
    verifier = Verifier.from_trusted_root(sim.trusted_root())
    d = verifier.decide(sim.bundle(D), ME, NOW)
    assert d.allowed, d.message
    assert verifier.trusted_root_version == 3


ROOT_FAILURES = {
    # v2 raises the threshold to 2 but carries one new signature only.
    "new-threshold-unmet": (
        {"keys": {"root": ["a", "b"]}, "thresholds": {"root": 2}},
        ["root-0", "a"],
    ),
    # v2 is signed by its new key only: the trusted root's threshold is unmet.
    "old-threshold-unmet": ({"keys": {"root": ["a"]}}, ["a"]),
    # v2 is signed by the old key only: its own threshold is unmet.
    "not-self-signed": ({"keys": {"root": ["a"]}}, ["root-0"]),
}


@pytest.mark.parametrize(
    ("change", "signers"), list(ROOT_FAILURES.values()), ids=list(ROOT_FAILURES)
)
def test_root_thresholds_are_both_enforced(change: dict, signers: list[str]) -> None:
    sim = sim_with_wave()
    sim.rotate_root(**change, sign_with=[signer(n) for n in signers])
    verifier = Verifier.from_trusted_root(sim.trusted_root())
    assert verifier.decide(sim.bundle(D), ME, NOW).reason is Reason.ROOT_INVALID
    assert verifier.trusted_root_version == 1


def test_old_root_threshold_counts_distinct_keys() -> None:
    sim = sim_with_wave(root_keys=3, root_threshold=2)
    sim.rotate_root(sign_with=[signer("root-0")])  # 1 of the 2 needed
    verifier = Verifier.from_trusted_root(sim.trusted_root())
    assert verifier.decide(sim.bundle(D), ME, NOW).reason is Reason.ROOT_INVALID
    sim2 = sim_with_wave(root_keys=3, root_threshold=2)
    sim2.rotate_root(sign_with=[signer("root-0"), signer("root-2")])
    verifier = Verifier.from_trusted_root(sim2.trusted_root())
    assert verifier.decide(sim2.bundle(D), ME, NOW).allowed


def test_skipped_root_version_is_refused() -> None:
    sim = sim_with_wave()
    sim.rotate_root()
    sim.rotate_root()
    bundle = sim.bundle(D, trusted_root=2)  # holds root v3 only
    verifier = Verifier.from_trusted_root(sim.trusted_root())
    assert verifier.decide(bundle, ME, NOW).reason is Reason.ROOT_INVALID


def test_expired_final_root_is_refused_but_intermediate_is_fine() -> None:
    sim = sim_with_wave()
    sim.root.expires = sim.root.expires.replace(year=2029)
    sim.rotate_root()  # v2 expired
    sim.root.expires = sim.root.expires.replace(year=2100)
    sim.rotate_root()  # v3 valid
    verifier = Verifier.from_trusted_root(sim.trusted_root())
    assert verifier.decide(sim.bundle(D), ME, NOW).allowed
    sim = sim_with_wave()
    sim.root.expires = sim.root.expires.replace(year=2029)
    sim.rotate_root()
    verifier = Verifier.from_trusted_root(sim.trusted_root())
    d = verifier.decide(sim.bundle(D), ME, NOW)
    assert d.reason is Reason.METADATA_EXPIRED


def test_timestamp_key_rotation_forgets_timestamp_versions() -> None:
    """Fast-forward recovery: a repository that lost its timestamp key."""
    sim = sim_with_wave()
    verifier = Verifier.from_trusted_root(sim.trusted_root())
    sim.timestamp.version = 1000  # an attacker-inflated timestamp
    assert verifier.decide(sim.bundle(D), ME, NOW).allowed
    sim.timestamp.version = 1
    assert verifier.decide(sim.bundle(D), ME, NOW).reason is Reason.ROLLBACK
    sim.rotate_root(keys={"timestamp": ["new-timestamp"]})
    assert verifier.decide(sim.bundle(D), ME, NOW).allowed
