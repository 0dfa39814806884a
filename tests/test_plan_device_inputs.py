"""Malformed plans and plan fields the device refuses, each by name.

The plan parser is shared by the writer and the verifier
(``tufwaves.device.plan``); the accounting and ripple ``stage`` fields are
forged here with the online rollout keys, as in tests/test_plan_device.py.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.simulator import device
from tests.test_plan_device import DAY1, PLAN, Planned, stage
from tufwaves.device.plan import parse_plan
from tufwaves.errors import InputError
from tufwaves.verify import Reason


def plan_with(**changes: Any) -> dict[str, Any]:
    """PLAN with stage 2's fields changed."""
    plan = copy.deepcopy(PLAN)
    plan["stages"][1].update(changes)
    return plan


ABORT = {"max_failed_ppm": 100_000, "min_reports": 5, "codes": [], "action": "cancel"}


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (plan_with(not_before="2030-02-30T00:00:00Z"), "is not a valid time"),
        (plan_with(not_before="2029-12-31T00:00:00Z"), "not_before is before an earlier stage's"),
        (plan_with(abort={**ABORT, "codes": "hash-mismatch"}), "codes must be a list"),
        (plan_with(abort={**ABORT, "codes": ["Bad Code"]}), "'Bad Code' is not a report"),
        (plan_with(abort={**ABORT, "codes": ["e1", "e1"]}), "codes lists a code twice"),
        (plan_with(abort={**ABORT, "action": "stop"}), "action 'stop' must be 'pause' or 'cancel'"),
    ],
)  # fmt: skip
def test_malformed_plan_is_refused_by_name(plan: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match="plan stage 2 \\(ten\\)") as e:
        parse_plan(plan)
    assert message in str(e.value)


def test_stage_numbers_are_checked_and_caps_are_cumulative() -> None:
    plan = parse_plan(PLAN)
    assert [plan.cap(n) for n in (1, 2, 3)] == [2, 10, 100]
    for bad in (0, 4, True, "1"):
        with pytest.raises(InputError, match="the plan has stages 1 to 3"):
            plan.stage(bad)  # type: ignore[arg-type]


def test_merkle_ripple_is_accounted_by_its_signed_size() -> None:
    p = Planned()
    k = p.sim.add_merkle_ripple("w1", [device(1), device(2)])
    p.sim.waves["w1"].ripples[k].signed.unrecognized_fields["x-tufwaves-ripple"]["stage"] = 1
    p.rollout()["accounting"].append({"stage": 1, "size": 2})
    assert p.decide(device(1)) is Reason.ALLOWED_RIPPLE
    p.rollout()["accounting"][0]["size"] = 1  # understated
    assert p.decide(device(1)) is Reason.PLAN_VIOLATION


@pytest.mark.parametrize(
    "accounting",
    [
        {"stage": 1, "size": 1},  # not a list
        [],  # one entry short
        [[1, 1]],  # an entry that is not {stage, size}
        [{"stage": 1, "size": 1, "note": "x"}],
        [{"stage": 0, "size": 1}],
        [{"stage": 4, "size": 1}],  # the plan has 3 stages
        [{"stage": True, "size": 1}],
        [{"stage": 1, "size": -1}],
        [{"stage": 1, "size": "1"}],
    ],
)
def test_malformed_accounting_makes_the_wave_invalid(accounting: object) -> None:
    p = Planned()
    p.ripple(1, [device(1)])
    p.rollout()["accounting"] = accounting
    assert p.decide(device(1)) is Reason.WAVE_INVALID


def test_stages_never_go_back_in_the_accounting() -> None:
    p = Planned()
    p.ripple(2, [device(1)])
    p.ripple(1, [device(2)])
    assert p.decide(device(2), DAY1.replace(day=3)) is Reason.WAVE_INVALID


@pytest.mark.parametrize("bad", [0, 65, "1", None, True])
def test_ripple_with_a_bad_stage_is_invalid(bad: object) -> None:
    p = Planned()
    k = p.ripple(1, [device(1)])
    p.sim.waves["w1"].ripples[k].signed.unrecognized_fields["x-tufwaves-ripple"]["stage"] = bad
    assert p.decide(device(1)) is Reason.RIPPLE_INVALID


def test_a_single_stage_plan_uses_the_stage_helper() -> None:
    plan = parse_plan({"eligible": 4, "stages": [stage("all", {"percent_ppm": 500_000}, None)]})
    assert plan.cap(1) == 2 and plan.last_not_before is None


def test_stage_names_are_unique() -> None:
    with pytest.raises(InputError, match=r"plan stage 2 \(canary\)\.name is used by an earlier"):
        parse_plan(plan_with(name="canary"))
