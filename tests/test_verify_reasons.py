"""One named case per reason code of the verifier, built with the simulator."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata

from tests.simulator import NOW, Simulator, device, signer
from tufwaves.device import verifier as verify_module
from tufwaves.device.bundle import Bundle, BundleFile
from tufwaves.verify import Decision, DeviceIdentity, Reason, Verifier

MEMBER = device(1)
MERKLE_MEMBER = device(20)
OUTSIDER = device(3)


def identity(uuid: str = MEMBER, installed: int = 4, hw: str = "hw-a") -> DeviceIdentity:
    return DeviceIdentity(uuid, hw, "main", installed)


def base(**wave: object) -> Simulator:
    """Production v5; wave w1 v7 with a list ripple and a Merkle ripple."""
    sim = Simulator()
    sim.add_production(5)
    sim.add_wave("w1", 7, **wave)  # type: ignore[arg-type]
    sim.add_list_ripple("w1", [MEMBER, device(2)])
    sim.add_merkle_ripple("w1", [device(i) for i in range(10, 40)])
    return sim


@dataclass(frozen=True)
class Case:
    """What to decide: a verifier, a bundle (object or bytes), a device."""

    verifier: Verifier
    bundle: Bundle | bytes
    device: DeviceIdentity


def fresh(sim: Simulator, uuid: str = MEMBER, **kw: object) -> Case:
    installed = kw.pop("installed", 4)
    hw = kw.pop("hw", "hw-a")
    return Case(
        Verifier.from_trusted_root(sim.trusted_root()),
        sim.bundle(uuid, **kw),  # type: ignore[arg-type]
        identity(uuid, installed, hw),  # type: ignore[arg-type]
    )


def replace_file(bundle: Bundle, role: str, data: bytes) -> Bundle:
    files = tuple(
        BundleFile(f.role, f.version, data) if f.role == role else f for f in bundle.files
    )
    return Bundle(bundle.device, files, bundle.evidence)


def edit_signed(sim: Simulator, role: str, edit: Callable[[dict], None]) -> None:
    """Change ``role``'s tufwaves data in place (re-signed at the next publish)."""
    edit(sim.signed_of(role).unrecognized_fields)


# -- case builders -------------------------------------------------------------


def c_allowed_production() -> Case:
    return fresh(base(), OUTSIDER)


def c_allowed_ripple() -> Case:
    return fresh(base(), MERKLE_MEMBER)


def c_allowed_fraction() -> Case:
    sim = base()
    sim.add_fraction_ripple("w1", 1_000_000)
    return fresh(sim, OUTSIDER)


def c_allowed_complete() -> Case:
    sim = base()
    sim.set_state("w1", "complete")
    return fresh(sim, OUTSIDER)


def c_bundle_malformed() -> Case:
    case = fresh(base())
    data = json.loads(case.bundle.to_bytes())  # type: ignore[union-attr]
    data["files"] = list(reversed(data["files"]))
    return Case(case.verifier, json.dumps(data).encode(), case.device)


def c_bundle_too_large() -> Case:
    case = fresh(base())
    data = json.loads(case.bundle.to_bytes())  # type: ignore[union-attr]
    data["files"][0]["data"] = base64.b64encode(b" " * 20_000).decode()
    return Case(case.verifier, json.dumps(data).encode(), case.device)


def c_device_mismatch() -> Case:
    case = fresh(base())
    return Case(case.verifier, case.bundle, identity(device(2)))


def c_root_invalid() -> Case:
    sim = base()
    sim.rotate_root(keys={"root": ["root-new"]}, sign_with=[signer("root-new")])
    return fresh(sim)


def c_root_rollback() -> Case:
    sim = base()
    sim.rotate_root(keys={"root": ["root-new"]})
    # The device already trusts root v2; the bundle also carries a root v1
    # that is not the one it trusted.
    verifier = Verifier.from_trusted_root(sim.trusted_root(2))
    bundle = sim.bundle(MEMBER, trusted_root=0)
    forged = Metadata.from_bytes(bundle.files[0].data)
    forged.signed.unrecognized_fields["x-other"] = 1
    files = (BundleFile("root", 1, forged.to_bytes()), *bundle.files[1:])
    return Case(verifier, Bundle(MEMBER, files, bundle.evidence), identity())


def c_timestamp_invalid() -> Case:
    sim = base()
    sim.signers["timestamp"] = [signer("not-the-timestamp-key")]
    return fresh(sim)


def c_snapshot_invalid() -> Case:
    sim = base()
    sim.signers["snapshot"] = [signer("not-the-snapshot-key")]
    return fresh(sim)


def c_targets_invalid() -> Case:
    sim = base()
    sim.signers["targets"] = [signer("not-the-targets-key")]
    sim.targets.version += 1
    return fresh(sim)


def c_delegation_invalid() -> Case:
    sim = base()
    sim.waves["w1"].rollout_signers = [signer("not-a-rollout-key")]
    sim.waves["w1"].rollout.signed.version += 1
    return fresh(sim)


def c_metadata_expired() -> Case:
    sim = base()
    sim.expire("timestamp")
    return fresh(sim)


def c_rollback() -> Case:
    sim = base()
    old = sim.bundle(MEMBER)
    sim.publish()
    verifier = Verifier.from_trusted_root(sim.trusted_root())
    assert verifier.decide(sim.bundle(MEMBER), identity(), NOW).allowed
    return Case(verifier, old, identity())


def c_wave_invalid() -> Case:
    sim = base()
    edit_signed(sim, "wave.w1", lambda f: f["x-tufwaves-wave"].update(name="w9"))
    return fresh(sim)


def c_ripple_invalid() -> Case:
    sim = base()
    edit_signed(sim, "ripple.w1.1", lambda f: f["x-tufwaves-ripple"].update(index=2))
    return fresh(sim)


def c_policy_unsupported() -> Case:
    return fresh(base(policy={"max_per_hour": 10}))


def c_policy_violation() -> Case:
    return fresh(base(policy={"max_ripple_size": 2}), MERKLE_MEMBER)


def c_evidence_invalid() -> Case:
    sim = base()
    bundle = sim.bundle(MERKLE_MEMBER)
    other = sim.evidence("w1", 2, device(21))
    assert other is not None
    verifier = Verifier.from_trusted_root(sim.trusted_root())
    forged = Bundle(MERKLE_MEMBER, bundle.files, (other,))
    return Case(verifier, forged, identity(MERKLE_MEMBER))


def c_no_matching_artifact() -> Case:
    return fresh(base(), hw="hw-z")


def c_not_newer() -> Case:
    return fresh(base(), installed=7)


def c_wave_cancelled() -> Case:
    sim = base()
    sim.set_state("w1", "cancelled")
    return fresh(sim, installed=5)


def c_not_member() -> Case:
    return fresh(base(), OUTSIDER, installed=5)


def planned(not_before: str | None, accounted: int = 1) -> Simulator:
    """Wave w1 with a one-stage plan (1 device) and a list ripple naming MEMBER."""
    stage = {
        "name": "canary",
        "size": {"devices": 1},
        "group": None,
        "not_before": not_before,
        "soak_seconds": None,
        "success": None,
        "abort": None,
        "timeout_seconds": None,
    }
    sim = Simulator()
    sim.add_production(5)
    sim.add_wave("w1", 7, policy={"plan": {"eligible": 10, "stages": [stage]}})
    k = sim.add_list_ripple("w1", [MEMBER])
    sim.signed_of(f"ripple.w1.{k}").unrecognized_fields["x-tufwaves-ripple"]["stage"] = 1
    rollout = sim.signed_of("rollout.w1").unrecognized_fields["x-tufwaves-rollout"]
    rollout["accounting"] = [{"stage": 1, "size": accounted}]
    return sim


def c_plan_not_started() -> Case:
    return fresh(planned("2031-01-01T00:00:00Z"), installed=5)


def c_plan_violation() -> Case:
    return fresh(planned(None, accounted=0), installed=5)


def c_wave_paused() -> Case:
    sim = planned(None)
    sim.set_state("w1", "paused")
    return fresh(sim, installed=5)


CASES: dict[Reason, Callable[[], Case]] = {
    Reason.ALLOWED_PRODUCTION: c_allowed_production,
    Reason.ALLOWED_COMPLETE: c_allowed_complete,
    Reason.ALLOWED_RIPPLE: c_allowed_ripple,
    Reason.ALLOWED_FRACTION: c_allowed_fraction,
    Reason.BUNDLE_MALFORMED: c_bundle_malformed,
    Reason.BUNDLE_TOO_LARGE: c_bundle_too_large,
    Reason.DEVICE_MISMATCH: c_device_mismatch,
    Reason.ROOT_INVALID: c_root_invalid,
    Reason.ROOT_ROLLBACK: c_root_rollback,
    Reason.TIMESTAMP_INVALID: c_timestamp_invalid,
    Reason.SNAPSHOT_INVALID: c_snapshot_invalid,
    Reason.TARGETS_INVALID: c_targets_invalid,
    Reason.DELEGATION_INVALID: c_delegation_invalid,
    Reason.METADATA_EXPIRED: c_metadata_expired,
    Reason.ROLLBACK: c_rollback,
    Reason.WAVE_INVALID: c_wave_invalid,
    Reason.RIPPLE_INVALID: c_ripple_invalid,
    Reason.POLICY_UNSUPPORTED: c_policy_unsupported,
    Reason.POLICY_VIOLATION: c_policy_violation,
    Reason.EVIDENCE_INVALID: c_evidence_invalid,
    Reason.NO_MATCHING_ARTIFACT: c_no_matching_artifact,
    Reason.NOT_NEWER: c_not_newer,
    Reason.WAVE_CANCELLED: c_wave_cancelled,
    Reason.NOT_MEMBER: c_not_member,
    Reason.PLAN_NOT_STARTED: c_plan_not_started,
    Reason.PLAN_VIOLATION: c_plan_violation,
    Reason.WAVE_PAUSED: c_wave_paused,
}

# Two reasons need a fault injected into the verifier itself: see below.
INJECTED = {Reason.STATE_WRITE_FAILED, Reason.INTERNAL_ERROR}


def test_every_reason_has_a_case() -> None:
    assert set(CASES) | INJECTED == set(Reason)


@pytest.mark.parametrize("reason", list(CASES), ids=[r.value for r in CASES])
def test_reason(reason: Reason) -> None:
    case = CASES[reason]()
    decision = case.verifier.decide(case.bundle, case.device, NOW)
    assert decision.reason is reason, decision.message
    assert decision.allowed is reason.allowed
    assert decision.message
    if decision.allowed:
        assert decision.artifact is not None
        assert decision.artifact.version > case.device.installed_version
    else:
        assert decision.artifact is None


def test_allowed_details() -> None:
    case = c_allowed_ripple()
    d = case.verifier.decide(case.bundle, case.device, NOW)
    assert (d.wave, d.ripple) == ("w1", 2)
    assert d.artifact is not None
    assert d.artifact.name == "waves/w1/hw-a/fw-7.bin"
    assert set(d.artifact.hashes) == {"sha256", "sha512"}
    assert d.to_dict()["artifact"]["custom"]["version"] == "7"


def test_state_write_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sim = base()
    (tmp_path / "root.json").write_bytes(sim.trusted_root())
    verifier = Verifier.from_state_dir(tmp_path)

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("tufwaves.device._client.atomic_write", fail)
    d = verifier.decide(sim.bundle(MEMBER), identity(), NOW)
    assert d.reason is Reason.STATE_WRITE_FAILED
    assert not d.allowed


def test_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    case = c_allowed_ripple()

    def boom(*args: object) -> Decision:
        raise RuntimeError("bug")

    monkeypatch.setattr(verify_module, "decide_rules", boom)
    d = case.verifier.decide(case.bundle, case.device, NOW)
    assert d.reason is Reason.INTERNAL_ERROR
    assert not d.allowed


# -- finer points of the rules ------------------------------------------------


def test_ripple_for_another_wave_is_a_denial() -> None:
    sim = base()
    edit_signed(sim, "ripple.w1.1", lambda f: f["x-tufwaves-ripple"].update(wave="w2"))
    case = fresh(sim)
    assert case.verifier.decide(case.bundle, case.device, NOW).reason is (Reason.RIPPLE_INVALID)


def test_complete_without_online_complete_is_a_violation() -> None:
    sim = base(policy={"online_complete": False, "max_fraction_ppm": 0})
    sim.set_state("w1", "complete")
    case = fresh(sim, OUTSIDER, installed=5)
    d = case.verifier.decide(case.bundle, case.device, NOW)
    assert d.reason is Reason.POLICY_VIOLATION


@pytest.mark.parametrize(
    ("policy", "ppm", "reason"),
    [
        ({"max_fraction_ppm": 200_000}, 200_001, Reason.POLICY_VIOLATION),
        ({"online_complete": False, "max_fraction_ppm": 0}, 1, Reason.POLICY_VIOLATION),
        ({"online_complete": False, "max_fraction_ppm": 1_000_000}, 1, Reason.WAVE_INVALID),
        ({"max_fraction_ppm": True}, 1, Reason.WAVE_INVALID),
    ],
    ids=[
        "above-cap",
        "no-fraction-without-online-complete",
        "full-cap-without-complete",
        "bool-cap",
    ],
)
def test_fraction_ripples_respect_the_signed_cap(
    policy: dict[str, object], ppm: int, reason: Reason
) -> None:
    sim = Simulator()
    sim.add_wave("w1", 7, policy=policy)
    sim.add_fraction_ripple("w1", ppm)
    case = fresh(sim, OUTSIDER)
    d = case.verifier.decide(case.bundle, case.device, NOW)
    assert not d.allowed and d.reason is reason


def test_highest_version_wins_and_cancelled_falls_back() -> None:
    sim = base()
    sim.add_wave("w2", 9)
    sim.add_list_ripple("w2", [MEMBER])
    case = fresh(sim)
    d = case.verifier.decide(case.bundle, case.device, NOW)
    assert (d.reason, d.wave, d.artifact and d.artifact.version) == (
        Reason.ALLOWED_RIPPLE,
        "w2",
        9,
    )
    sim.set_state("w2", "cancelled")
    case = fresh(sim)
    d = case.verifier.decide(case.bundle, case.device, NOW)
    assert (d.reason, d.wave) == (Reason.ALLOWED_RIPPLE, "w1")


def test_cancelled_outranks_not_member_at_the_same_version() -> None:
    sim = base()
    sim.set_state("w1", "cancelled")
    case = fresh(sim, OUTSIDER, installed=5)
    d = case.verifier.decide(case.bundle, case.device, NOW)
    assert (d.reason, d.wave) == (Reason.WAVE_CANCELLED, "w1")


def test_empty_list_ripple_allows_nobody() -> None:
    sim = Simulator()
    sim.add_wave("w1", 7)
    sim.add_list_ripple("w1", [])
    sim.add_fraction_ripple("w1", 0)
    case = fresh(sim)
    assert case.verifier.decide(case.bundle, case.device, NOW).reason is (Reason.NOT_MEMBER)


def test_rollout_listing_artifacts_is_refused() -> None:
    sim = base()
    rollout = sim.waves["w1"].rollout.signed
    rollout.targets["waves/w1/hw-a/evil.bin"] = sim.artifact(
        "waves/w1/hw-a/evil.bin", 99, ["hw-a"], ["main"]
    )
    case = fresh(sim)
    assert case.verifier.decide(case.bundle, case.device, NOW).reason is (Reason.WAVE_INVALID)


def test_wave_artifact_outside_delegated_paths_is_refused() -> None:
    sim = base()
    wave = sim.waves["w1"].wave.signed
    wave.targets["production/hw-a/fw-8.bin"] = sim.artifact(
        "production/hw-a/fw-8.bin", 7, ["hw-a"], ["main"]
    )
    case = fresh(sim)
    assert case.verifier.decide(case.bundle, case.device, NOW).reason is (Reason.WAVE_INVALID)


def test_known_older_roots_are_accepted_byte_for_byte() -> None:
    sim = base()
    sim.rotate_root(keys={"root": ["root-2"]})
    sim.rotate_root(keys={"timestamp": ["ts-3"]})
    verifier = Verifier.from_trusted_root(sim.trusted_root(2))
    d = verifier.decide(sim.bundle(MEMBER, trusted_root=0), identity(), NOW)
    assert d.reason is Reason.ROOT_ROLLBACK  # root v1 was never seen by it
    d = verifier.decide(sim.bundle(MEMBER, trusted_root=1), identity(), NOW)
    assert d.allowed and verifier.trusted_root_version == 3
    d = verifier.decide(sim.bundle(MEMBER, trusted_root=1), identity(), NOW)
    assert d.allowed


def test_same_timestamp_version_with_other_bytes_is_refused() -> None:
    sim = base()
    verifier = Verifier.from_trusted_root(sim.trusted_root())
    bundle = sim.bundle(MEMBER)
    assert verifier.decide(bundle, identity(), NOW).allowed
    assert verifier.decide(bundle, identity(), NOW).allowed  # same bytes: fine
    ts = copy.deepcopy(sim.timestamp)
    ts.unrecognized_fields["x-note"] = "re-signed"
    md = Metadata(ts)
    md.sign(sim.signers["timestamp"][0])
    other = replace_file(bundle, "timestamp", md.to_bytes())
    assert verifier.decide(other, identity(), NOW).reason is Reason.TIMESTAMP_INVALID


def test_naive_reference_time_is_refused() -> None:
    case = c_allowed_ripple()
    with pytest.raises(verify_module.InputError):
        case.verifier.decide(case.bundle, case.device, NOW.replace(tzinfo=None))


def test_a_cancel_the_device_saw_is_final(tmp_path: Path) -> None:
    """Online keys that re-activate a cancelled wave do not get past a device
    that verified the cancel, across restarts of a state-directory verifier."""
    sim = base()
    (tmp_path / "root.json").write_bytes(sim.trusted_root())
    device = identity(MEMBER, 5, "hw-a")  # production (v5) is not newer
    verifier = Verifier.from_state_dir(tmp_path)
    assert verifier.decide(sim.bundle(MEMBER), device, NOW).reason is Reason.ALLOWED_RIPPLE
    sim.set_state("w1", "cancelled")
    assert verifier.decide(sim.bundle(MEMBER), device, NOW).reason is Reason.WAVE_CANCELLED
    sim.set_state("w1", "active")  # a later, validly signed rollout role
    again = Verifier.from_state_dir(tmp_path)
    d = again.decide(sim.bundle(MEMBER), device, NOW)
    assert not d.allowed and d.reason is Reason.WAVE_CANCELLED
    newcomer = Verifier.from_trusted_root(sim.trusted_root())
    assert newcomer.decide(sim.bundle(MEMBER), device, NOW).allowed
