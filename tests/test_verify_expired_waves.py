"""One expired wave does not block the others (``specs/verifier.md`` step 5).

An expired ``wave.W`` or ``rollout.W`` leaves its wave out of the decision,
an expired ``ripple.W.K`` that ripple: expired metadata is not trusted, and
leaving a wave out can only take permissions away. Time is injected
(``decide(at=...)``), never waited for.
"""

from __future__ import annotations

from datetime import timedelta

from tests.simulator import NOW, Simulator, device
from tufwaves.device.bundle import Bundle
from tufwaves.verify import DeviceIdentity, Reason, Verifier

D = device(1)
ME = DeviceIdentity(D, "hw-a", "main", 4)


def verifier(sim: Simulator) -> Verifier:
    return Verifier.from_trusted_root(sim.trusted_root())


def test_a_30_day_wave_does_not_block_the_current_release_31_days_later() -> None:
    sim = Simulator()
    sim.add_production(8)
    sim.add_wave("w6", 7)
    sim.add_list_ripple("w6", [D])
    sim.waves["w6"].wave.signed.expires = NOW + timedelta(days=30)
    bundle = sim.bundle(D)
    v = verifier(sim)
    assert v.decide(bundle, ME, NOW).reason is Reason.ALLOWED_PRODUCTION
    d = v.decide(bundle, ME, NOW + timedelta(days=31))
    assert d.reason is Reason.ALLOWED_PRODUCTION, d.message
    assert d.artifact is not None and d.artifact.version == 8


def test_an_expired_rollout_role_leaves_only_its_wave_out() -> None:
    sim = Simulator()
    sim.add_wave("w1", 9)
    sim.add_list_ripple("w1", [D])
    sim.add_wave("w2", 7)
    sim.add_list_ripple("w2", [D])
    sim.expire("rollout.w1")
    d = verifier(sim).decide(sim.bundle(D), ME, NOW)
    assert d.reason is Reason.ALLOWED_RIPPLE, d.message
    assert d.wave == "w2"


def test_an_expired_ripple_leaves_only_that_ripple_out() -> None:
    sim = Simulator()
    sim.add_wave("w1", 7)
    sim.add_list_ripple("w1", [D])
    sim.add_merkle_ripple("w1", [D, device(2)])
    sim.add_list_ripple("w1", [D, device(3)])
    sim.expire("ripple.w1.1")
    sim.expire("ripple.w1.2")  # its evidence goes with it
    d = verifier(sim).decide(sim.bundle(D), ME, NOW)
    assert d.reason is Reason.ALLOWED_RIPPLE, d.message
    assert d.ripple == 3


def test_a_wave_left_out_is_named_in_the_denial() -> None:
    sim = Simulator()
    sim.add_wave("w1", 7)
    sim.add_list_ripple("w1", [D])
    sim.expire("wave.w1")
    d = verifier(sim).decide(sim.bundle(D), ME, NOW)
    assert d.reason is Reason.NO_MATCHING_ARTIFACT
    assert "left out: wave w1, wave.w1 v2 expired" in d.message


def test_an_expired_broken_wave_is_not_read() -> None:
    sim = Simulator()
    sim.add_production(8)
    sim.add_wave("w1", 7)
    sim.waves["w1"].wave.signed.unrecognized_fields["x-tufwaves-wave"]["name"] = "other"
    sim.expire("wave.w1")
    d = verifier(sim).decide(sim.bundle(D), ME, NOW)
    assert d.reason is Reason.ALLOWED_PRODUCTION, d.message


def test_an_expired_wave_is_still_checked_for_rollback() -> None:
    sim = Simulator()
    sim.add_wave("w1", 7)
    sim.add_list_ripple("w1", [D])
    v = verifier(sim)
    old = sim.bundle(D)
    assert v.decide(old, ME, NOW).allowed
    sim.expire("rollout.w1")
    assert v.decide(sim.bundle(D), ME, NOW).reason is Reason.NO_MATCHING_ARTIFACT
    # The pre-expiry rollout role is a replay: snapshot names a newer one.
    replay = sim.bundle(D)
    files = tuple(
        next(f for f in old.files if f.role == "rollout.w1") if f.role == "rollout.w1" else f
        for f in replay.files
    )
    d = v.decide(Bundle(D, files, replay.evidence), ME, NOW)
    assert d.reason is Reason.ROLLBACK


def test_expired_top_level_roles_still_deny() -> None:
    sim = Simulator()
    sim.add_production(8)
    sim.expire("targets")
    d = verifier(sim).decide(sim.bundle(D), ME, NOW)
    assert d.reason is Reason.METADATA_EXPIRED
