"""Gate evaluation (specs/gates.md), table-driven: every boundary of every threshold."""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tufwaves.server import GateInputs, StoredReport, evaluate_gates, plan_from_input

T0 = datetime(2030, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)


def dev(n: int) -> str:
    return str(uuidlib.UUID(int=n * 0x9E3779B97F4A7C15 + 7))


def stored(n: int, status: str, code: str | None = None, ripple: int = 1) -> StoredReport:
    installed = 10 if status == "installed" else None
    return StoredReport(dev(n), "w1", ripple, 10, status, code, installed, n + 1, T0, T0)


@dataclass
class Case:
    """Stage 1 of ``size`` devices (ripple 1, published at T0) and its reports."""

    statuses: dict[int, str | tuple[str, str]] = field(default_factory=dict)
    size: int = 20
    stage1: dict[str, Any] = field(default_factory=dict)
    stage2: dict[str, Any] = field(default_factory=dict)
    now: datetime = T0 + 3 * H
    state: str = "active"
    extra_reports: tuple[StoredReport, ...] = ()


def inputs(case: Case) -> GateInputs:
    plan = plan_from_input(
        {
            "eligible": 1000,
            "stages": [
                {"name": "canary", "size": {"devices": case.size}, **case.stage1},
                {"name": "more", "size": {"devices": 500}, **case.stage2},
            ],
        }
    )
    reports = []
    for n, given in case.statuses.items():
        status, code = given if isinstance(given, tuple) else (given, None)
        reports.append(stored(n, status, code))
    return GateInputs(
        wave="w1",
        plan=plan,
        state=case.state,
        accounting=((1, case.size),),
        ripples={1: T0},
        starts={1: T0},
        offered={dev(n): 1 for n in range(case.size)},
        reports=[*reports, *case.extra_reports],
        now=case.now,
        expires=T0 + 1000 * H,
    )


def installed(k: int, failed: int = 0, code: str = "boom") -> dict[int, str | tuple[str, str]]:
    out: dict[int, str | tuple[str, str]] = dict.fromkeys(range(k), "installed")
    out.update({k + i: ("failed", code) for i in range(failed)})
    return out


SUCCESS_95 = {"success": {"min_installed": "95%", "min_reports": 2}}
ABORT_10 = {"abort": {"max_failed": "10%", "min_reports": 10, "action": "cancel"}}

CASES: dict[str, tuple[Case, str, str | None]] = {
    # success gate: installed * 10^6 >= min_installed_ppm * offered (19 of 20 = 95 %)
    "success exactly at 95%": (Case(installed(19), stage2=SUCCESS_95), "advance", None),
    "success one device below": (Case(installed(18), stage2=SUCCESS_95), "wait", "gate-not-met"),
    "success one device above": (Case(installed(20), stage2=SUCCESS_95), "advance", None),
    "success one ppm above 19/20": (
        Case(installed(19), stage2={"success": {"min_installed_ppm": 950_001, "min_reports": 2}}),
        "wait",
        "gate-not-met",
    ),
    "success one ppm below 19/20": (
        Case(installed(19), stage2={"success": {"min_installed_ppm": 949_999, "min_reports": 2}}),
        "advance",
        None,
    ),
    "success is of the offered, not of the reported": (
        # 2 of 2 reports installed, but only 2 of 20 offered devices
        Case(installed(2), stage2=SUCCESS_95),
        "wait",
        "gate-not-met",
    ),
    # min_reports counts installed + failed + timed out
    "min_reports exactly": (
        Case(installed(2), size=2, stage2={"success": {"min_installed": "0%", "min_reports": 2}}),
        "advance",
        None,
    ),
    "min_reports one below": (
        Case(installed(1), size=2, stage2={"success": {"min_installed": "0%", "min_reports": 2}}),
        "wait",
        "too-few-reports",
    ),
    "min_reports one above": (
        Case(installed(3), size=3, stage2={"success": {"min_installed": "0%", "min_reports": 2}}),
        "advance",
        None,
    ),
    "in-progress reports are not reports": (
        Case(
            {0: "installed", 1: "downloading", 2: "installing"},
            size=3,
            stage2={"success": {"min_installed": "0%", "min_reports": 2}},
        ),
        "wait",
        "too-few-reports",
    ),
    "no success gate: the schedule alone": (Case(), "advance", None),
    # abort rate: failures * 10^6 > max_failed_ppm * reported (1 of 10 = 10 %)
    "abort exactly at 10%": (Case(installed(9, 1), stage1=ABORT_10), "advance", None),
    "abort one failure above": (Case(installed(8, 2), stage1=ABORT_10), "cancel", "abort-rate"),
    "abort one report more at the rate": (
        Case(installed(10, 1), stage1=ABORT_10),  # 1 of 11 < 10 %
        "advance",
        None,
    ),
    "abort one ppm below 1/10": (
        Case(
            installed(9, 1),
            stage1={"abort": {"max_failed_ppm": 99_999, "min_reports": 10, "action": "pause"}},
        ),
        "pause",
        "abort-rate",
    ),
    "abort one ppm above 1/10": (
        Case(
            installed(9, 1),
            stage1={"abort": {"max_failed_ppm": 100_001, "min_reports": 10, "action": "pause"}},
        ),
        "advance",
        None,
    ),
    "abort min_reports one below": (
        Case(installed(0, 9), stage1=ABORT_10),  # 9 failures of 9 reports, 10 needed
        "advance",
        None,
    ),
    "abort min_reports exactly": (Case(installed(0, 10), stage1=ABORT_10), "cancel", "abort-rate"),
    "abort default rate is 100%: only codes": (
        Case(installed(0, 20), stage1={"abort": {"codes": ["hash-mismatch"]}}),
        "advance",
        None,
    ),
    # failure codes trip the gate whatever the counts
    "abort on a listed code": (
        Case(
            installed(19, 1, "hash-mismatch"),
            stage1={"abort": {"min_reports": 100, "codes": ["hash-mismatch"]}},
        ),
        "pause",
        "abort-code",
    ),
    "a code not listed does not abort": (
        Case(
            installed(19, 1, "disk-full"),
            stage1={"abort": {"min_reports": 100, "codes": ["hash-mismatch"]}},
        ),
        "advance",
        None,
    ),
    "abort wins over a passing success gate": (
        Case(
            installed(19, 1, "hash-mismatch"),
            stage1={"abort": {"codes": ["hash-mismatch"], "action": "cancel"}},
            stage2=SUCCESS_95,
        ),
        "cancel",
        "abort-code",
    ),
    # the schedule of the next stage
    "not_before exactly now": (
        Case(stage2={"not_before": "2030-01-01T03:00:00Z"}),
        "advance",
        None,
    ),
    "not_before one second ahead": (
        Case(stage2={"not_before": "2030-01-01T03:00:01Z"}),
        "wait",
        "not-before",
    ),
    "soak exactly passed": (Case(stage2={"soak": "3h"}), "advance", None),
    "soak one second short": (Case(stage2={"soak": 3 * 3600 + 1}), "wait", "soak"),
    # states
    "paused: nothing": (Case(state="paused"), "none", "paused"),
    "cancelled: nothing": (Case(state="cancelled"), "none", "cancelled"),
    "complete: nothing": (Case(state="complete"), "none", "complete"),
    "expired: nothing": (Case(now=T0 + 1000 * H), "none", "expired"),
}


@pytest.mark.parametrize(("case", "action", "reason"), CASES.values(), ids=CASES.keys())
def test_gate_boundaries(case: Case, action: str, reason: str | None) -> None:
    ev = evaluate_gates(inputs(case))
    assert (ev.action, ev.reason) == (action, reason), ev.to_dict()
    assert ev.acts == (action in ("advance", "complete", "pause", "cancel"))
    assert ev.stage == 1 and ev.stage_name == "canary"


# -- timeouts: a device silent for more than timeout_seconds since its ripple ---

TIMEOUT = {"timeout": "30m", "abort": {"max_failed": "50%", "min_reports": 2}}


@pytest.mark.parametrize(
    ("after", "statuses", "timed_out", "action"),
    [
        (timedelta(minutes=30), {}, 0, "advance"),  # exactly at: not yet
        (timedelta(minutes=30, seconds=1), {}, 2, "pause"),  # both silent ones: 2 of 2 failed
        (timedelta(minutes=31), {0: "installing"}, 2, "pause"),  # in progress also times out
        (timedelta(minutes=31), {0: "installed"}, 1, "advance"),  # 1 failure of 2: 50 %
        (timedelta(days=9), {0: "installed", 1: "rolled_back"}, 0, "advance"),
    ],
    ids=["at the timeout", "one second after", "in progress", "one installed", "all reported"],
)
def test_timeouts(after: timedelta, statuses: dict[int, str], timed_out: int, action: str) -> None:
    case = Case(dict(statuses), size=2, stage1=TIMEOUT, now=T0 + after)
    case.stage2 = {}
    ev = evaluate_gates(replace(inputs(case), expires=None))
    f = ev.figures
    assert f.timed_out == timed_out
    assert f.reported == f.installed + f.failed + f.timed_out
    assert f.failures == f.failed + f.timed_out
    assert f.offered == 2 == f.reported + f.in_progress + f.silent
    assert ev.action == action, ev.to_dict()


def test_reports_from_devices_the_stage_did_not_offer_are_ignored() -> None:
    outsiders = tuple(stored(500 + i, "failed", "hash-mismatch") for i in range(5))
    case = Case(
        installed(19),
        stage1={"abort": {"max_failed": "1%", "codes": ["hash-mismatch"]}},
        stage2=SUCCESS_95,
        extra_reports=outsiders,
    )
    ev = evaluate_gates(inputs(case))
    assert ev.action == "advance"
    assert ev.figures.ignored == 5 and ev.ignored == 5
    assert (ev.figures.offered, ev.figures.reported, ev.figures.failed) == (20, 19, 0)
    assert ev.figures.codes == ()


def test_stage_two_counts_only_its_own_devices() -> None:
    plan = plan_from_input(
        {
            "eligible": 100,
            "stages": [
                {"name": "a", "size": {"devices": 2}},
                {
                    "name": "b",
                    "size": {"devices": 4},
                    "abort": {"max_failed": "10%", "min_reports": 1, "action": "cancel"},
                },
                {"name": "c", "size": {"devices": 6}, "success": {"min_installed": "100%"}},
            ],
        }
    )
    offered = {dev(0): 1, dev(1): 1, dev(2): 2, dev(3): 2}
    reports = [
        stored(0, "failed", "boom"),  # stage 1's failure: not stage 2's
        stored(1, "failed", "boom"),
        stored(2, "installed", ripple=2),
        stored(3, "installed", ripple=2),
        stored(9, "failed", "boom"),  # offered by nothing
    ]
    ev = evaluate_gates(
        GateInputs(
            "w1",
            plan,
            "active",
            ((1, 2), (2, 2)),
            {1: T0, 2: T0 + H},
            {1: T0, 2: T0 + H},
            offered,
            reports,
            T0 + 2 * H,
        )
    )
    assert (ev.stage, ev.next_stage, ev.action) == (2, 3, "advance")
    assert (ev.figures.offered, ev.figures.installed, ev.figures.failed) == (2, 2, 0)
    assert ev.figures.ignored == 3 and ev.ignored == 1
    assert [(f.stage, f.failed) for f in ev.stage_figures] == [(1, 2), (2, 0)]
    data = ev.to_dict()
    assert data["figures"]["installed_ppm"] == 1_000_000 and data["next_stage"] == 3
    assert {c["name"] for c in data["checks"]} >= {"abort.max_failed", "success.min_installed"}


def _last_stage(size: dict[str, Any], **stage: Any) -> GateInputs:
    plan = plan_from_input(
        {
            "eligible": 4,
            "stages": [
                {"name": "a", "size": {"devices": 1}, "not_before": "2030-01-01T00:00:00Z"},
                {"name": "all", "size": size, **stage},
            ],
        }
    )
    offered = {dev(n): 1 if n == 0 else 2 for n in range(4)}
    reports = [stored(n, "installed", ripple=1 if n == 0 else 2) for n in range(3)]
    fraction = "fraction_ppm" in size or "fraction" in size
    return GateInputs(
        "w1", plan, "active", ((1, 1), (2, 1_000_000 if fraction else 3)),
        {1: T0, 2: T0 + H}, {1: T0, 2: T0 + H}, offered, reports, T0 + 2 * H,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("size", "stage", "online", "action", "reason"),
    [
        ({"percent": "100%"}, {}, True, "complete", None),
        ({"devices": 4}, {}, True, "complete", None),
        ({"fraction": "100%"}, {}, True, "complete", None),
        # the last stage's own success gate holds completion: 2 of 3 devices installed
        ({"devices": 4}, {"success": {"min_installed": "66.6666%"}}, True, "complete", None),
        ({"devices": 4}, {"success": {"min_installed": "66.6667%"}}, True, "wait", "gate-not-met"),
        ({"devices": 3}, {}, True, "none", "plan-end"),
        ({"fraction": "99%"}, {}, True, "none", "plan-end"),
        ({"percent": "100%"}, {}, False, "none", "offline-complete"),
    ],
    ids=[
        "100%",
        "all devices",
        "fraction 100%",
        "gate at",
        "gate one ppm above",
        "not all",
        "fraction below 100%",
        "offline completion",
    ],
)
def test_completion(
    size: dict[str, Any], stage: dict[str, Any], online: bool, action: str, reason: str | None
) -> None:
    ev = evaluate_gates(replace(_last_stage(size, **stage), online_complete=online))
    assert (ev.stage, ev.next_stage) == (2, None)
    assert (ev.action, ev.reason) == (action, reason), ev.to_dict()


def test_not_started_and_reason_messages() -> None:
    ev = evaluate_gates(replace(inputs(Case()), accounting=(), offered={}, starts={}, ripples={}))
    assert (ev.action, ev.reason, ev.stage, ev.next_stage) == ("none", "not-started", 1, 2)
    assert "--stage 1" in ev.reasons[0].message
    assert ev.figures.offered == 0 and ev.stage_figures == ()
    waiting = evaluate_gates(
        inputs(
            Case(
                installed(1),
                stage2={**SUCCESS_95, "soak": "9h", "not_before": "2031-01-01T00:00:00Z"},
            )
        )
    )
    assert [r.code for r in waiting.reasons] == [
        "too-few-reports",
        "gate-not-met",
        "not-before",
        "soak",
    ]
    assert waiting.to_dict()["reasons"][3]["message"].startswith("stage 2 (more) needs 32400 s")
