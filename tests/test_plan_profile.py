"""The plan writer and the verifier agree (the style of tests/test_profile.py).

Writer: ``plan_from_input`` (PLAN.json) and the server's builders with a
planned :class:`Policy`. Verifier: the decision rules over the roles, with the
candidate plan put straight into otherwise valid metadata. Whatever the
writer produces the verifier accepts; what the verifier refuses, the writer
refuses.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_profile import EXPIRES, HW, INVALID, NAME, ROLLOUT_KEY, TAG, UUID, VERSION, decide
from tufwaves.device.membership import ListMembership
from tufwaves.device.plan import parse_plan
from tufwaves.errors import InputError
from tufwaves.server.metadata import (
    Policy,
    WaveInfo,
    artifact_target,
    build_ripple,
    build_rollout,
    build_wave,
)
from tufwaves.server.plan import plan_from_input
from tufwaves.verify import Reason

MAX_INT = 2**63 - 1

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.text(max_size=4),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=1),
    st.sampled_from([-1, 0, 1, 10**6, 10**6 + 1, MAX_INT, MAX_INT + 1, "1%", "2h"]),
)
times = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "2030-01-01T00:00:00Z",
            "2030-06-01T00:00:00Z",
            "2031-01-01T00:00:00Z",
            "2030-02-30T00:00:00Z",
            "2030-01-01T00:00:00",
            "2030-01-01 00:00:00Z",
            "2030-01-01T00:00:00Z\n",
        ]
    ),
)
sizes = st.one_of(
    st.sampled_from(["5%", "12.5%", "0%", "100%", "101%", "5", {"percent": "12.5%"}]),
    st.sampled_from([{"percent": 50}, {"fraction": 0.01}, {"fraction": "1%"}, {"x": 1}]),
    st.builds(lambda n: {"devices": n}, st.integers(-1, 50)),
    st.builds(lambda n: {"percent_ppm": n}, st.integers(0, 1_000_001)),
    st.builds(lambda n: {"fraction_ppm": n}, st.integers(0, 1_000_001)),
    junk,
)
gates_s = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {"min_installed_ppm": st.integers(-1, 1_000_001), "min_reports": st.integers(-1, 5)}
    ),
    junk,
)
gates_a = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {
            "max_failed_ppm": st.integers(-1, 1_000_001),
            "min_reports": st.integers(-1, 5),
            "codes": st.lists(st.sampled_from(["a", "hash-mismatch", "B", "", "x y"]), max_size=3),
            "action": st.sampled_from(["pause", "cancel", "stop"]),
        }
    ),
    junk,
)
stage = st.fixed_dictionaries(
    {
        "name": st.one_of(st.sampled_from(["a", "b", "c", "bad name", ""]), junk),
        "size": sizes,
        "group": st.one_of(st.none(), st.sampled_from(["eu", "bad group"])),
        "not_before": times,
        "soak_seconds": st.one_of(st.none(), st.integers(-1, 10**6), junk, st.just("2h")),
        "success": gates_s,
        "abort": gates_a,
        "timeout_seconds": st.one_of(st.none(), st.integers(-1, 10**6), junk),
    }
)


@st.composite
def valid_plans(draw: st.DrawFn) -> dict[str, Any]:
    """A plan that breaks no bound or constraint."""
    n = draw(st.integers(1, 4))
    eligible = draw(st.integers(1, 100))
    stages, count, frac = [], 0, 0
    for i in range(n):
        if draw(st.booleans()):
            size = {"fraction_ppm": (frac := draw(st.integers(max(frac, 1), 1_000_000)))}
        elif draw(st.booleans()):
            size = {"devices": (count := draw(st.integers(max(count, 1), max(count, 1) + 50)))}
        else:
            ppm = draw(st.integers(1, 1_000_000))
            cap = -(-ppm * eligible // 1_000_000)
            if cap < count:
                size = {"devices": count}
            else:
                size, count = {"percent_ppm": ppm}, cap
        stages.append(
            {
                "name": f"s{i}",
                "size": size,
                "group": draw(st.sampled_from([None, "eu"])),
                "not_before": draw(st.sampled_from([None, f"203{i}-01-01T00:00:00Z"])),
                "soak_seconds": draw(st.one_of(st.none(), st.integers(0, 10**6))),
                "success": None
                if i == 0
                else draw(
                    st.one_of(
                        st.none(),
                        st.fixed_dictionaries(
                            {
                                "min_installed_ppm": st.integers(0, 1_000_000),
                                "min_reports": st.integers(0, 5),
                            }
                        ),
                    )
                ),
                "abort": draw(
                    st.one_of(
                        st.none(),
                        st.fixed_dictionaries(
                            {
                                "max_failed_ppm": st.integers(0, 1_000_000),
                                "min_reports": st.integers(0, 5),
                                "codes": st.lists(
                                    st.sampled_from(["a", "hash-mismatch", "e.1"]),
                                    unique=True,
                                    max_size=3,
                                ),
                                "action": st.sampled_from(["pause", "cancel"]),
                            }
                        ),
                    )
                ),
                "timeout_seconds": draw(st.one_of(st.none(), st.integers(1, 10**6))),
            }
        )
    return {"eligible": eligible, "stages": stages}


@st.composite
def plans(draw: st.DrawFn) -> Any:
    """A valid plan, or one with a field replaced, dropped or added."""
    plan: dict[str, Any] = draw(valid_plans())
    what = draw(st.sampled_from(["none", "stage-field", "stage-field", "drop", "top", "swap"]))
    stages = plan["stages"]
    if what == "stage-field":
        chosen = draw(st.sampled_from(stages))
        key = draw(st.sampled_from(sorted(chosen)))
        chosen[key] = draw(stage)[key] if draw(st.booleans()) else draw(junk)
    elif what == "drop":
        del draw(st.sampled_from(stages))[draw(st.sampled_from(sorted(stages[0])))]
    elif what == "top":
        plan[draw(st.sampled_from(["extra", "eligible", "stages"]))] = draw(junk)
    elif what == "swap" and len(stages) > 1:
        stages.reverse()
    return plan


def verified(plan: Any) -> Reason:
    """The verifier's reason for valid roles whose wave policy carries ``plan``."""
    info = WaveInfo(NAME, TAG, VERSION, Policy())
    target = artifact_target(
        f"waves/{NAME}/{HW}/fw.img", b"fw", hardware_ids=[HW], tag=TAG, version=VERSION, name="fw"
    )
    wave = build_wave(info, [target], [ROLLOUT_KEY], 1, EXPIRES).signed
    wave.unrecognized_fields["x-tufwaves-wave"]["policy"]["plan"] = copy.deepcopy(plan)
    keys = {ROLLOUT_KEY.keyid: ROLLOUT_KEY}
    rollout = build_rollout(NAME, "active", 1, list(keys), keys, 1, 1, EXPIRES, [(1, 1)]).signed
    members = ListMembership.from_uuids([UUID]).to_dict()
    ripple = build_ripple(NAME, 1, members, EXPIRES, stage=1).signed
    return decide(wave, rollout, ripple).reason


def written(plan: Any, *, human: bool = False) -> Reason:
    """The writer's roles for ``plan`` (InputError if it refuses), decided.

    The writer takes the signed form (``Plan``, as ``Policy.from_dict`` and
    the ceremony do) or, with ``human``, PLAN.json (``plan_from_input``).
    """
    signed = plan_from_input(plan) if human else parse_plan(plan)
    info = WaveInfo(NAME, TAG, VERSION, Policy(plan=signed))
    target = artifact_target(
        f"waves/{NAME}/{HW}/fw.img", b"fw", hardware_ids=[HW], tag=TAG, version=VERSION, name="fw"
    )
    wave = build_wave(info, [target], [ROLLOUT_KEY], 1, EXPIRES).signed
    keys = {ROLLOUT_KEY.keyid: ROLLOUT_KEY}
    rollout = build_rollout(NAME, "active", 1, list(keys), keys, 1, 1, EXPIRES, [(1, 1)]).signed
    members = ListMembership.from_uuids([UUID]).to_dict()
    ripple = build_ripple(NAME, 1, members, EXPIRES, stage=1).signed
    return decide(wave, rollout, ripple).reason


@settings(max_examples=400, deadline=None)
@given(plans())
def test_plan_writer_and_verifier_agree(plan: Any) -> None:
    try:
        reason = written(plan)
    except InputError:
        writer_ok = False
    else:
        writer_ok = True
        assert reason not in INVALID, reason  # what the writer writes verifies
    if verified(plan) in INVALID:
        assert not writer_ok, "the writer accepts a plan the verifier refuses"


@settings(max_examples=300, deadline=None)
@given(plans())
def test_whatever_plan_json_gives_verifies(plan: Any) -> None:
    try:
        reason = written(plan, human=True)
    except InputError:
        return
    assert reason not in INVALID, reason
    signed = plan_from_input(plan)
    assert parse_plan(signed.to_dict()) == signed
    assert plan_from_input(signed.to_dict()) == signed


def test_valid_plan_is_accepted_and_a_policy_without_it_is_unplanned() -> None:
    plan = {
        "eligible": 10,
        "stages": [
            {
                "name": "a",
                "size": {"devices": 1},
                "group": None,
                "not_before": None,
                "soak_seconds": None,
                "success": None,
                "abort": None,
                "timeout_seconds": None,
            }
        ],
    }
    assert written(plan) is Reason.ALLOWED_RIPPLE
    assert verified(plan) is Reason.ALLOWED_RIPPLE
    bad = copy.deepcopy(plan)
    bad["stages"][0]["success"] = {"min_installed_ppm": 1, "min_reports": 1}
    assert verified(bad) is Reason.WAVE_INVALID
