"""The device enforces a wave's signed rollout plan (specs/verifier.md 4.3).

The ripples and rollout roles here are signed with the wave's online rollout
keys by the simulator, bypassing every server-side refusal: what a holder of
the online keys could publish.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.simulator import Simulator, device
from tufwaves.device.plan import parse_plan
from tufwaves.verify import DeviceIdentity, Reason, Verifier

DAY1 = datetime(2030, 1, 1, 12, tzinfo=UTC)


def stage(name: str, size: dict[str, int], not_before: str | None, **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "size": size,
        "group": None,
        "not_before": not_before,
        "soak_seconds": None,
        "success": None,
        "abort": None,
        "timeout_seconds": None,
    }
    out.update(kw)
    return out


PLAN = {
    "eligible": 100,
    "stages": [
        stage("canary", {"devices": 2}, "2030-01-01T00:00:00Z"),
        stage("ten", {"percent_ppm": 100_000}, "2030-01-02T00:00:00Z"),
        stage("all", {"devices": 100}, "2030-01-03T00:00:00Z"),
    ],
}


class Planned:
    """A simulated repository with planned wave w1 and ripples forged at will."""

    def __init__(self, plan: dict[str, Any] = PLAN) -> None:
        self.sim = Simulator()
        self.sim.add_production(5)
        self.sim.add_wave("w1", 7, policy={"plan": plan})
        self.rollout()["accounting"] = []

    def rollout(self) -> dict[str, Any]:
        field: dict[str, Any] = self.sim.waves["w1"].rollout.signed.unrecognized_fields[
            "x-tufwaves-rollout"
        ]
        return field

    def ripple(
        self, stage_no: int, uuids: list[str] | None = None, ppm: int | None = None, **acc: int
    ) -> int:
        """A ripple of ``stage_no``; the accounting says ``acc`` (default: the truth)."""
        if ppm is not None:
            k = self.sim.add_fraction_ripple("w1", ppm)
            size = ppm
        else:
            assert uuids is not None
            k = self.sim.add_list_ripple("w1", uuids)
            size = len(set(uuids))
        field = self.sim.waves["w1"].ripples[k].signed.unrecognized_fields["x-tufwaves-ripple"]
        field["stage"] = stage_no
        self.rollout()["accounting"].append(
            {"stage": acc.get("stage", stage_no), "size": acc.get("size", size)}
        )
        return k

    def state(self, state: str) -> None:
        self.sim.set_state("w1", state)

    def decide(self, uuid: str, at: datetime = DAY1) -> Reason:
        verifier = Verifier.from_trusted_root(self.sim.trusted_root())
        d = verifier.decide(self.sim.bundle(uuid), DeviceIdentity(uuid, "hw-a", "main", 5), at)
        return d.reason


def test_stage_1_within_its_cap_is_allowed() -> None:
    p = Planned()
    p.ripple(1, [device(1), device(2)])
    assert p.decide(device(1)) is Reason.ALLOWED_RIPPLE


def test_online_keys_sign_stage_3_on_day_1_and_the_device_denies_it() -> None:
    p = Planned()
    p.ripple(1, [device(1), device(2)])
    p.ripple(3, [device(i) for i in range(3, 60)])
    assert p.decide(device(1)) is Reason.ALLOWED_RIPPLE
    assert p.decide(device(10)) is Reason.PLAN_NOT_STARTED
    assert p.decide(device(10), DAY1 + timedelta(days=2)) is Reason.ALLOWED_RIPPLE


def test_ripple_understated_in_the_accounting_denies_its_own_devices() -> None:
    p = Planned()
    p.ripple(1, [device(i) for i in range(1, 30)], size=2)  # accounted as 2 devices
    assert p.decide(device(1)) is Reason.PLAN_VIOLATION


def test_ripple_accounted_in_another_stage_is_denied() -> None:
    p = Planned()
    p.ripple(2, [device(1)], stage=1)
    assert p.decide(device(1), DAY1 + timedelta(days=1)) is Reason.PLAN_VIOLATION


def test_ripple_past_the_cumulative_stage_cap_is_denied() -> None:
    p = Planned()
    p.ripple(1, [device(1), device(2)])
    p.ripple(1, [device(3)])  # 3 > 2 of stage 1
    assert p.decide(device(1)) is Reason.ALLOWED_RIPPLE
    assert p.decide(device(3)) is Reason.PLAN_VIOLATION
    later = DAY1 + timedelta(days=1)
    p2 = Planned()
    p2.ripple(1, [device(1), device(2)])
    p2.ripple(2, [device(i) for i in range(3, 11)])  # 10 = 10 % of 100
    p2.ripple(2, [device(11)])  # 11 > 10
    assert p2.decide(device(10), later) is Reason.ALLOWED_RIPPLE
    assert p2.decide(device(11), later) is Reason.PLAN_VIOLATION


def test_paused_wave_is_denied_and_resumes() -> None:
    p = Planned()
    p.ripple(1, [device(1)])
    p.state("paused")
    assert p.decide(device(1)) is Reason.WAVE_PAUSED
    assert p.decide(device(50)) is Reason.WAVE_PAUSED
    p.state("active")
    assert p.decide(device(1)) is Reason.ALLOWED_RIPPLE


def test_cancel_of_a_paused_wave_is_final() -> None:
    p = Planned()
    p.ripple(1, [device(1)])
    p.state("paused")
    p.state("cancelled")
    assert p.decide(device(1)) is Reason.WAVE_CANCELLED


def test_complete_before_the_last_stage_is_denied() -> None:
    p = Planned()
    p.ripple(1, [device(1)])
    p.state("complete")
    assert p.decide(device(50)) is Reason.PLAN_NOT_STARTED
    assert p.decide(device(50), DAY1 + timedelta(days=2)) is Reason.ALLOWED_COMPLETE


def test_planned_wave_without_accounting_is_invalid() -> None:
    p = Planned()
    p.ripple(1, [device(1)])
    del p.rollout()["accounting"]
    assert p.decide(device(1)) is Reason.WAVE_INVALID


def test_unplanned_wave_with_accounting_is_invalid() -> None:
    sim = Simulator()
    sim.add_production(5)
    sim.add_wave("w1", 7)
    sim.add_list_ripple("w1", [device(1)])
    sim.waves["w1"].rollout.signed.unrecognized_fields["x-tufwaves-rollout"]["accounting"] = [
        {"stage": 1, "size": 1}
    ]
    verifier = Verifier.from_trusted_root(sim.trusted_root())
    d = verifier.decide(sim.bundle(device(1)), DeviceIdentity(device(1), "hw-a", "main", 5), DAY1)
    assert d.reason is Reason.WAVE_INVALID


def test_fraction_stage_caps_fraction_ripples() -> None:
    plan = {
        "eligible": 10,
        "stages": [
            stage("one", {"fraction_ppm": 10_000}, None),
            stage("half", {"fraction_ppm": 500_000}, "2030-01-02T00:00:00Z"),
        ],
    }
    p = Planned(plan)
    p.ripple(1, ppm=20_000)  # over stage 1's 1 %
    members = [device(i) for i in range(200) if p.decide(device(i)) is not Reason.NOT_MEMBER]
    assert members and all(p.decide(u) is Reason.PLAN_VIOLATION for u in members[:3])
    q = Planned(plan)
    q.ripple(1, [device(1)])  # a device-set ripple in a fraction stage
    assert q.decide(device(1)) is Reason.PLAN_VIOLATION


# --------------------------------------------------------------------------
# Random plans and ripple sequences against an independent model of the rule.

BASE = datetime(2030, 1, 1, tzinfo=UTC)


def _time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def model(
    plan: dict[str, Any],
    ripples: list[tuple[int, list[int], int]],
    uuid: int,
    hour: int,
    state: str = "active",
) -> str:
    """What the plan allows for device ``uuid`` at BASE + ``hour`` hours (list ripples only).

    ``ripples`` are (stage, device numbers, accounted size). Written from the
    contract, not from the verifier's code.
    """
    at = BASE + timedelta(hours=hour)
    stages = plan["stages"]
    if state == "complete":
        starts = [_time(s["not_before"]) for s in stages if s["not_before"] is not None]
        return "plan_not_started" if starts and at < max(starts) else "allowed_complete"
    first_denial = None
    total = 0
    for stage_no, members, accounted in ripples:
        total += accounted
        if uuid not in members:
            continue
        s = stages[stage_no - 1]
        if accounted != len(set(members)):
            why = "plan_violation"
        elif s["not_before"] is not None and at < _time(s["not_before"]):
            why = "plan_not_started"
        else:
            size = s["size"]
            cap = size.get("devices") or -(-size["percent_ppm"] * plan["eligible"] // 1_000_000)
            why = "allowed_ripple" if total <= cap else "plan_violation"
        if why == "allowed_ripple":
            return "wave_paused" if state == "paused" else why
        first_denial = first_denial or why
    if first_denial is None and state == "paused":
        return "wave_paused"
    return first_denial or "not_member"


@st.composite
def plans_and_ripples(draw: st.DrawFn) -> tuple[dict[str, Any], list[tuple[int, list[int], int]]]:
    n = draw(st.integers(1, 4))
    eligible = draw(st.integers(1, 40))
    stages = []
    cap, hour = 0, 0
    for i in range(n):
        hour += draw(st.integers(0, 30))
        nb = (BASE + timedelta(hours=hour)).strftime("%Y-%m-%dT%H:%M:%SZ")
        if draw(st.booleans()):
            cap = max(cap, draw(st.integers(1, 20)))
            size = {"devices": cap}
        else:
            ppm = draw(st.integers(1, 1_000_000))
            if -(-ppm * eligible // 1_000_000) < cap:
                size = {"devices": cap}
            else:
                cap = -(-ppm * eligible // 1_000_000)
                size = {"percent_ppm": ppm}
        stages.append(stage(f"s{i}", size, draw(st.sampled_from([nb, None]))))
    plan = {"eligible": eligible, "stages": stages}
    parse_plan(plan)
    ripples = []
    current = 1
    for _ in range(draw(st.integers(1, 4))):
        current = draw(st.integers(current, n))
        members = draw(st.lists(st.integers(0, 12), min_size=1, max_size=8, unique=True))
        accounted = draw(st.sampled_from([len(members), len(members), max(1, len(members) - 1)]))
        ripples.append((current, members, accounted))
    return plan, ripples


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plans_and_ripples(),
    st.integers(0, 12),
    st.integers(-5, 130),
    st.sampled_from(["active", "active", "paused", "complete"]),
)
def test_device_allows_exactly_what_the_plan_allows(
    case: tuple[dict[str, Any], list[tuple[int, list[int], int]]],
    uuid: int,
    hour: int,
    state: str,
) -> None:
    plan, ripples = case
    p = Planned(plan)
    for stage_no, members, accounted in ripples:
        p.ripple(stage_no, [device(m) for m in members], size=accounted)
    if state != "active":
        p.state(state)
    expected = model(plan, ripples, uuid, hour, state)
    assert p.decide(device(uuid), BASE + timedelta(hours=hour)).value == expected


def test_paused_wave_reports_a_plan_violation_first() -> None:
    p = Planned()
    p.ripple(1, [device(1), device(2), device(3)])  # 3 > 2 of stage 1
    p.state("paused")
    assert p.decide(device(1)) is Reason.PLAN_VIOLATION
    assert p.decide(device(50)) is Reason.WAVE_PAUSED  # in no ripple
