"""Health gates of a planned wave, evaluated from device-signed reports.

:func:`evaluate_gates` is pure: it takes what the inventory and the published
metadata say (:class:`GateInputs`) and returns a :class:`GateEvaluation`,
the figures, every check and the one action the controller should take.
No I/O, no clock of its own, integer arithmetic only; ``specs/gates.md``
is the normative definition of every formula and boundary here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from tufwaves.device.plan import PPM, Plan, Stage, format_time
from tufwaves.server.inventory import StoredReport

__all__ = [
    "ACTIONS",
    "Check",
    "GateEvaluation",
    "GateInputs",
    "GateReason",
    "StageFigures",
    "evaluate_gates",
]

ACTIONS: Final = ("advance", "complete", "pause", "cancel", "wait", "none")
"""What an evaluation can decide; the first four act (sign something)."""
ACTING: Final = frozenset({"advance", "complete", "pause", "cancel"})
SUCCESS: Final = "installed"
FAILURES: Final = frozenset({"failed", "rolled_back"})
TERMINAL: Final = frozenset({SUCCESS, *FAILURES})


def _time(t: datetime | None) -> str | None:
    return None if t is None else format_time(t)


@dataclass(frozen=True)
class GateInputs:
    """Everything a gate evaluation reads (``specs/gates.md`` §2).

    Attributes:
        wave: The wave's name.
        plan: Its signed plan.
        state: The published rollout state: ``active``, ``paused``,
            ``cancelled`` or ``complete``.
        accounting: (stage, size) of ripple 1, 2, ... as the rollout role signs it.
        ripples: Publication time of each published ripple, by index.
        starts: Start time of each started stage (its first ripple's publication).
        offered: For every device a published ripple offered the wave to, the
            index of that ripple (the one a report from it is stored under).
        reports: The latest stored report (highest counter) of each device
            for the wave; only stored reports, whose signatures were verified.
        now: The evaluation time (the repository clock).
        expires: The wave's expiry (None: not checked).
        online_complete: Whether the signed policy lets the online keys complete.
    """

    wave: str
    plan: Plan
    state: str
    accounting: tuple[tuple[int, int], ...]
    ripples: Mapping[int, datetime]
    starts: Mapping[int, datetime]
    offered: Mapping[str, int]
    reports: Sequence[StoredReport]
    now: datetime
    expires: datetime | None = None
    online_complete: bool = True


@dataclass(frozen=True)
class StageFigures:
    """The devices a stage's ripples offered, counted by their latest report.

    Attributes:
        stage: The stage number.
        name: Its name.
        offered: Devices its ripples offered.
        reported: ``installed + failed + timed_out``: the reports the rates use.
        installed: Latest report ``installed``.
        failed: Latest report ``failed`` or ``rolled_back``.
        timed_out: No ``installed``/``failed``/``rolled_back`` report and more
            than the stage's ``timeout_seconds`` since the device's ripple was
            published (they count as failures).
        in_progress: Latest report ``downloading``/``installing``, not timed out.
        silent: No report at all, not timed out.
        ignored: Latest reports for the wave from devices this stage did not offer.
        codes: The failure codes of the ``failed`` reports, sorted, each once.
    """

    stage: int
    name: str
    offered: int
    reported: int
    installed: int
    failed: int
    timed_out: int
    in_progress: int
    silent: int
    ignored: int
    codes: tuple[str, ...]

    @property
    def failures(self) -> int:
        """``failed + timed_out``."""
        return self.failed + self.timed_out

    @property
    def installed_ppm(self) -> int | None:
        """installed / offered in ppm, rounded down (for people; None: nothing offered)."""
        return None if not self.offered else self.installed * PPM // self.offered

    @property
    def failed_ppm(self) -> int | None:
        """failures / reported in ppm, rounded down (for people; None: no report)."""
        return None if not self.reported else self.failures * PPM // self.reported

    def to_dict(self) -> dict[str, Any]:
        """JSON form.

        Returns:
            A dict of JSON types.
        """
        return {
            "stage": self.stage,
            "name": self.name,
            "offered": self.offered,
            "reported": self.reported,
            "installed": self.installed,
            "failed": self.failed,
            "timed_out": self.timed_out,
            "failures": self.failures,
            "in_progress": self.in_progress,
            "silent": self.silent,
            "ignored": self.ignored,
            "codes": list(self.codes),
            "installed_ppm": self.installed_ppm,
            "failed_ppm": self.failed_ppm,
        }


@dataclass(frozen=True)
class Check:
    """One threshold or schedule condition and its outcome.

    Attributes:
        name: ``success.min_reports``, ``success.min_installed``,
            ``abort.min_reports``, ``abort.max_failed``, ``abort.codes``,
            ``not_before``, ``soak`` or ``complete.not_before``.
        stage: The stage of the plan whose field it is.
        passed: True when it lets the wave go on: a success or schedule
            condition that holds, an abort condition that does not.
        value: What was measured (a count, a rate in ppm, a time, codes).
        required: What the plan asks.
        message: For people.
    """

    name: str
    stage: int
    passed: bool
    value: Any
    required: Any
    message: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form.

        Returns:
            A dict of JSON types.
        """
        return {
            "name": self.name,
            "stage": self.stage,
            "passed": self.passed,
            "value": self.value,
            "required": self.required,
            "message": self.message,
        }


@dataclass(frozen=True)
class GateReason:
    """Why an evaluation waits, aborts or does nothing: a code and a sentence.

    Codes (``specs/gates.md`` §6): ``abort-rate``, ``abort-code`` (pause or
    cancel); ``too-few-reports``, ``gate-not-met``, ``not-before``, ``soak``
    (wait); ``not-started``, ``paused``, ``cancelled``, ``complete``,
    ``expired``, ``plan-end``, ``offline-complete`` (none).
    """

    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        """JSON form.

        Returns:
            A dict of JSON types.
        """
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class GateEvaluation:
    """The result of :func:`evaluate_gates`.

    Attributes:
        wave: The wave's name.
        at: The evaluation time.
        state: The published rollout state.
        stage: The current stage (that of the last ripple; 1 before any).
        stage_name: Its name.
        stages: How many stages the plan has.
        next_stage: The stage ``advance`` signs (None on the last stage).
        action: ``advance``, ``complete``, ``pause``, ``cancel``, ``wait`` or ``none``.
        reasons: Why (empty for ``advance`` and ``complete``).
        figures: The current stage's figures.
        checks: Every check evaluated, abort checks first.
        stage_figures: The figures of every started stage, by stage.
        ignored: Latest reports for the wave from devices no published ripple offered.
    """

    wave: str
    at: datetime
    state: str
    stage: int
    stage_name: str
    stages: int
    next_stage: int | None
    action: str
    reasons: tuple[GateReason, ...]
    figures: StageFigures
    checks: tuple[Check, ...] = ()
    stage_figures: tuple[StageFigures, ...] = field(default=())
    ignored: int = 0

    @property
    def acts(self) -> bool:
        """Whether the action signs something (advance, complete, pause, cancel)."""
        return self.action in ACTING

    @property
    def reason(self) -> str | None:
        """The first reason's code, or None."""
        return self.reasons[0].code if self.reasons else None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (what ``waves advance --json`` prints as ``evaluation``).

        Returns:
            A dict of JSON types.
        """
        return {
            "wave": self.wave,
            "at": _time(self.at),
            "state": self.state,
            "stage": self.stage,
            "stage_name": self.stage_name,
            "stages": self.stages,
            "next_stage": self.next_stage,
            "action": self.action,
            "reasons": [r.to_dict() for r in self.reasons],
            "figures": self.figures.to_dict(),
            "checks": [c.to_dict() for c in self.checks],
            "stage_figures": [f.to_dict() for f in self.stage_figures],
            "ignored": self.ignored,
        }


def _members(inputs: GateInputs) -> dict[int, list[str]]:
    """The offered devices of each stage (through their ripple's accounting entry)."""
    stage_of = {k: s for k, (s, _size) in enumerate(inputs.accounting, 1)}
    out: dict[int, list[str]] = {}
    for device, ripple in inputs.offered.items():
        stage = stage_of.get(ripple)
        if stage is not None:
            out.setdefault(stage, []).append(device)
    return out


def _figures(
    inputs: GateInputs,
    stage: int,
    members: Sequence[str],
    by_device: Mapping[str, StoredReport],
) -> StageFigures:
    """Count the devices of ``stage`` (specs/gates.md §3)."""
    st = inputs.plan.stage(stage)
    timeout = None if st.timeout_seconds is None else timedelta(seconds=st.timeout_seconds)
    installed = failed = timed_out = in_progress = silent = 0
    codes: set[str] = set()
    for device in members:
        report = by_device.get(device)
        status = report.status if report is not None else None
        if status == SUCCESS:
            installed += 1
            continue
        if status in FAILURES:
            failed += 1
            if report is not None and report.code is not None:
                codes.add(report.code)
            continue
        published = inputs.ripples.get(inputs.offered[device])
        if timeout is not None and published is not None and inputs.now - published > timeout:
            timed_out += 1
        elif status is None:
            silent += 1
        else:
            in_progress += 1
    member_set = set(members)
    ignored = sum(1 for d in by_device if d not in member_set)
    return StageFigures(
        stage,
        st.name,
        len(members),
        installed + failed + timed_out,
        installed,
        failed,
        timed_out,
        in_progress,
        silent,
        ignored,
        tuple(sorted(codes)),
    )


def _abort_checks(st: Stage, stage: int, f: StageFigures) -> list[Check]:
    gate = st.abort
    if gate is None:
        return []
    enough = f.reported >= gate.min_reports
    # failures / reported > max_failed_ppm / 10^6, cross-multiplied
    over = enough and f.failures * PPM > gate.max_failed_ppm * f.reported
    listed = sorted(set(f.codes) & set(gate.codes))
    return [
        Check(
            "abort.min_reports",
            stage,
            True,
            f.reported,
            gate.min_reports,
            f"{f.reported} report(s) of stage {stage}; the failure rate is judged from "
            f"{gate.min_reports}",
        ),
        Check(
            "abort.max_failed",
            stage,
            not over,
            f.failed_ppm,
            gate.max_failed_ppm,
            (
                f"{f.failures} failure(s) of {f.reported} report(s) "
                f"({_pct(f.failed_ppm)}), above the {_pct(gate.max_failed_ppm)} allowed"
                if over
                else f"{f.failures} failure(s) of {f.reported} report(s) "
                f"({_pct(f.failed_ppm)}); at most {_pct(gate.max_failed_ppm)} allowed"
                + ("" if enough else f" (too few reports to judge: {gate.min_reports} needed)")
            ),
        ),
        Check(
            "abort.codes",
            stage,
            not listed,
            list(f.codes),
            list(gate.codes),
            (
                f"failure code(s) {', '.join(listed)} reported; the plan aborts on them"
                if listed
                else "no failure code the plan aborts on"
            ),
        ),
    ]


def _pct(ppm: int | None) -> str:
    if ppm is None:
        return "n/a"
    whole, part = divmod(ppm, 10_000)
    return f"{whole}.{part:04d}".rstrip("0").rstrip(".") + "%"


def _success_checks(prefix: str, st: Stage, stage: int, f: StageFigures) -> list[Check]:
    gate = st.success
    if gate is None:
        return []
    enough = f.reported >= gate.min_reports
    # installed / offered >= min_installed_ppm / 10^6, cross-multiplied
    met = f.installed * PPM >= gate.min_installed_ppm * f.offered
    return [
        Check(
            f"{prefix}.min_reports",
            stage,
            enough,
            f.reported,
            gate.min_reports,
            f"{f.reported} report(s) from stage {f.stage}'s {f.offered} device(s); "
            f"{gate.min_reports} needed",
        ),
        Check(
            f"{prefix}.min_installed",
            stage,
            met,
            f.installed_ppm,
            gate.min_installed_ppm,
            f"{f.installed} of {f.offered} device(s) of stage {f.stage} installed "
            f"({_pct(f.installed_ppm)}); {_pct(gate.min_installed_ppm)} needed",
        ),
    ]


def _covers_fleet(plan: Plan, st: Stage) -> bool:
    if st.is_fraction:
        return st.amount == PPM
    return st.cap(plan.eligible) >= plan.eligible


def evaluate_gates(inputs: GateInputs) -> GateEvaluation:
    """Evaluate a planned wave's gates and schedule and decide the one action.

    Precedence (``specs/gates.md`` §5): a wave that is not active, expired
    or not started yet: ``none``; the current stage's abort gate tripped:
    ``pause`` or ``cancel`` (abort wins over everything else); on the last
    stage: ``complete`` when it covers the whole fleet, its success gate
    holds over its own devices and the plan's last ``not_before`` passed;
    otherwise the next stage's success gate over the current stage's devices,
    its ``not_before`` and its soak: all hold, ``advance``; else ``wait``.

    Args:
        inputs: What the inventory and the published metadata say.

    Returns:
        The evaluation.
    """
    plan = inputs.plan
    current = inputs.accounting[-1][0] if inputs.accounting else 1
    st = plan.stage(current)
    last = len(plan.stages)
    next_stage = current + 1 if current < last else None
    by_device = {r.device: r for r in inputs.reports}
    started = sorted({s for s, _ in inputs.accounting})
    members = _members(inputs)
    stage_figures = tuple(_figures(inputs, s, members.get(s, []), by_device) for s in started)
    figures = next((f for f in stage_figures if f.stage == current), None) or _figures(
        inputs, current, [], by_device
    )
    ignored = sum(1 for d in by_device if d not in inputs.offered)
    now = inputs.now

    def result(
        action: str, reasons: Sequence[GateReason] = (), checks: Sequence[Check] = ()
    ) -> GateEvaluation:
        return GateEvaluation(
            inputs.wave,
            now,
            inputs.state,
            current,
            st.name,
            last,
            next_stage,
            action,
            tuple(reasons),
            figures,
            tuple(checks),
            stage_figures,
            ignored,
        )

    if inputs.state != "active":
        return result(
            "none",
            [GateReason(inputs.state, f"wave {inputs.wave} is {inputs.state}; nothing to decide")],
        )
    if inputs.expires is not None and inputs.expires <= now:
        return result(
            "none",
            [GateReason("expired", f"wave {inputs.wave} expired at {_time(inputs.expires)}")],
        )
    if not inputs.accounting:
        return result(
            "none",
            [
                GateReason(
                    "not-started",
                    f"wave {inputs.wave} has no ripple yet; start stage 1 with "
                    f"'tufwaves waves rollout {inputs.wave} --stage 1'",
                )
            ],
        )
    checks = _abort_checks(st, current, figures)
    tripped = [c for c in checks if not c.passed]
    if tripped:
        assert st.abort is not None  # noqa: S101 - only an abort gate trips
        aborts = [
            GateReason("abort-rate" if c.name == "abort.max_failed" else "abort-code", c.message)
            for c in tripped
        ]
        return result(st.abort.action, aborts, checks)

    reasons: list[GateReason] = []
    if next_stage is None:
        if not _covers_fleet(plan, st):
            return result(
                "none",
                [
                    GateReason(
                        "plan-end",
                        f"stage {current} ({st.name}) is the plan's last and does not cover "
                        "the whole fleet; the controller does not complete the wave",
                    )
                ],
                checks,
            )
        if not inputs.online_complete:
            return result(
                "none",
                [
                    GateReason(
                        "offline-complete",
                        f"wave {inputs.wave}'s signed policy needs an offline ceremony to "
                        "complete it ('waves complete --offline')",
                    )
                ],
                checks,
            )
        gate_checks = _success_checks("success", st, current, figures)
        schedule = []
        if plan.last_not_before is not None:
            schedule.append(
                Check(
                    "complete.not_before",
                    current,
                    now >= plan.last_not_before,
                    _time(now),
                    _time(plan.last_not_before),
                    f"the plan lets the wave complete from {_time(plan.last_not_before)}",
                )
            )
        action = "complete"
    else:
        nxt = plan.stage(next_stage)
        gate_checks = _success_checks("success", nxt, next_stage, figures)
        schedule = []
        if nxt.not_before is not None:
            schedule.append(
                Check(
                    "not_before",
                    next_stage,
                    now >= nxt.not_before,
                    _time(now),
                    _time(nxt.not_before),
                    f"stage {next_stage} ({nxt.name}) may start from {_time(nxt.not_before)}",
                )
            )
        if nxt.soak_seconds:
            start = inputs.starts.get(current)
            soaked = start is not None and now - start >= timedelta(seconds=nxt.soak_seconds)
            ready = None if start is None else start + timedelta(seconds=nxt.soak_seconds)
            schedule.append(
                Check(
                    "soak",
                    next_stage,
                    soaked,
                    None if start is None else int((now - start).total_seconds()),
                    nxt.soak_seconds,
                    f"stage {next_stage} ({nxt.name}) needs {nxt.soak_seconds} s after stage "
                    f"{current} started; ready at {_time(ready)}",
                )
            )
        action = "advance"
    for c in gate_checks:
        if not c.passed:
            code = "too-few-reports" if c.name.endswith("min_reports") else "gate-not-met"
            reasons.append(GateReason(code, c.message))
    for c in schedule:
        if not c.passed:
            code = "soak" if c.name == "soak" else "not-before"
            reasons.append(GateReason(code, c.message))
    all_checks = [*checks, *gate_checks, *schedule]
    if reasons:
        return result("wait", reasons, all_checks)
    return result(action, (), all_checks)
