"""What the operator API and the dashboard show: waves, ripples, counts.

Published waves are read from one :class:`~tufwaves.http.published.ServedState`
(their summaries are computed once per published state); waves still in their
signing ceremony come from ``staging/``. Ripples and device counts come from
the inventory.

A planned wave also shows its signed plan (``plan``): every stage with its
size, cap, gates and timeout, which stage the wave is in, when each started
and how much of each cap the signed ripples used.

Per-ripple ``installed``, ``failed`` and ``silent`` and the failure list come
from signed device reports (``POST /v1/devices/{uuid}/reports``,
``specs/reports.md``): each device counts by its latest report for the wave.
``silent`` is the ripple's devices without any report; a fraction ripple's
devices are counted from the inventory (as ``waves status`` counts them) once
per published state.
"""

from __future__ import annotations

import re
from typing import Any

from tufwaves.device.plan import Plan, Stage, format_time
from tufwaves.http.problems import bad_request, not_found
from tufwaves.http.published import CachingRepository, ServedState
from tufwaves.server.inventory import Inventory, ReportCounts
from tufwaves.server.rollout import WaveContext, load_wave, ripple_members, stage_starts
from tufwaves.server.staging import pending_ids
from tufwaves.server.waves import WaveSummary, wave_summary

__all__ = ["WAVE_NAME_RE", "wave_detail", "wave_list"]

WAVE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

REPORTS_AVAILABLE = {
    "available": True,
    "detail": (
        "installed, failed and silent count each selected device by its latest "
        "signed report for the wave (failed: failed or rolled_back); silent: no report"
    ),
}
RECENT_FAILURES = 20


def _published(served: ServedState) -> list[str]:
    return sorted(r.removeprefix("wave.") for r in served.state.roles() if r.startswith("wave."))


def _summary(repo: CachingRepository, served: ServedState, name: str) -> WaveSummary:
    if served.state.version_of(f"wave.{name}") is not None:
        summary: WaveSummary = served.memo(
            f"summary:{name}", lambda: wave_summary(repo, name, served.state)
        )
        return summary
    return wave_summary(repo, name, served.state)  # pending: staging changes any time


def _wave_context(repo: CachingRepository, served: ServedState, name: str) -> WaveContext | None:
    """The published wave (memoized per state), or None while it is pending."""
    if served.state.version_of(f"wave.{name}") is None:
        return None
    ctx: WaveContext = served.memo(f"wave:{name}", lambda: load_wave(repo, name, served.state))
    return ctx


def _plan_brief(wave: WaveContext | None, summary: WaveSummary) -> dict[str, Any] | None:
    """Where a planned wave is in its plan: ``stage_count``, ``current_stage`` and its name."""
    plan = wave.plan if wave is not None else summary.policy.plan
    if plan is None:
        return None
    current = wave.current_stage if wave is not None else None
    return {
        "stage_count": len(plan.stages),
        "current_stage": current,
        "current_stage_name": None if current is None else plan.stage(current).name,
        "started": bool(wave is not None and wave.accounting),
    }


def _brief(summary: WaveSummary, wave: WaveContext | None = None) -> dict[str, Any]:
    return {
        "name": summary.name,
        "tag": summary.tag,
        "version": str(summary.version),
        "status": summary.status,
        "expires": f"{summary.expires:%Y-%m-%dT%H:%M:%SZ}",
        "ripple_count": summary.ripples,
        "plan": _plan_brief(wave, summary),
        "href": f"/v1/waves/{summary.name}",
    }


def _state_info(served: ServedState) -> dict[str, Any]:
    return {
        "timestamp_version": served.state.timestamp.signed.version,
        "snapshot_version": served.state.snapshot.signed.version,
        "root_version": served.state.root_version,
    }


def wave_list(repo: CachingRepository, served: ServedState) -> dict[str, Any]:
    names = set(_published(served))
    names |= {c.removeprefix("wave.") for c in pending_ids(repo) if c.startswith("wave.")}
    return {
        "published": _state_info(served),
        "waves": [
            _brief(_summary(repo, served, name), _wave_context(repo, served, name))
            for name in sorted(names)
        ],
    }


def wave_detail(
    repo: CachingRepository, served: ServedState, inv: Inventory, name: str
) -> dict[str, Any]:
    if WAVE_NAME_RE.fullmatch(name) is None:
        raise bad_request("malformed-wave", "a wave name is 1-64 of A-Z a-z 0-9 _ -")
    published = served.state.version_of(f"wave.{name}") is not None
    if not published and f"wave.{name}" not in pending_ids(repo):
        raise not_found("unknown-wave", f"there is no wave {name}")
    summary = _summary(repo, served, name)
    wave = _wave_context(repo, served, name)
    out = _brief(summary, wave)
    out["policy"] = summary.policy.to_dict()
    out["artifacts"] = [{"path": t.path, "length": t.length} for t in summary.artifacts]
    devices: dict[str, Any] | None = None
    ripples: list[dict[str, Any]] = []
    counts = {c.ripple: c for c in inv.report_counts(name)} if wave is not None else {}
    if wave is not None:
        total = inv.status(wave.eligibility())[-1]
        devices = {
            "total": total.total,
            "eligible": total.eligible,
            "selected": total.selected,
            "updated": total.updated,
        }
        for record in inv.ripples(name):
            if record.index > summary.ripples:
                continue  # recorded, not yet published (a rollout in progress)
            fraction = record.encoding == "fraction"
            selected = (
                served.memo(
                    f"fraction-members:{name}:{record.index}",
                    lambda index=record.index: len(ripple_members(repo, inv, name, index)),
                )
                if fraction
                else record.devices
            )
            ripples.append(
                {
                    "index": record.index,
                    "created": f"{record.created:%Y-%m-%dT%H:%M:%SZ}",
                    "encoding": record.encoding,
                    "selector": record.selector_data,
                    "selected": selected,
                    "fraction": record.size_label if fraction else None,
                    **_report_fields(counts.get(record.index), selected),
                }
            )
    out["devices"] = devices
    if out["plan"] is not None:
        plan = wave.plan if wave is not None else summary.policy.plan
        assert plan is not None  # noqa: S101 - _plan_brief found one
        out["plan"] |= _plan_detail(inv, wave, plan, ripples)
    out["ripples"] = ripples
    out["reports"] = REPORTS_AVAILABLE
    out["recent_failures"] = (
        [
            {
                "device": r.device,
                "ripple": r.ripple,
                "at": f"{r.received:%Y-%m-%dT%H:%M:%SZ}",
                "reason": r.code if r.status == "failed" else r.status,
                "status": r.status,
                "installed_version": r.installed_version,
            }
            for r in inv.recent_failures(name, RECENT_FAILURES)
        ]
        if published
        else []
    )
    out["published"] = _state_info(served)
    return out


def _report_fields(counts: ReportCounts | None, selected: int) -> dict[str, Any]:
    reported = counts.reported if counts else 0
    return {
        "installed": counts.installed if counts else 0,
        "failed": counts.failed if counts else 0,
        "silent": max(selected - reported, 0),
    }


def _size_label(stage: Stage, eligible: int) -> str:
    if stage.kind == "devices":
        return f"{stage.amount:,} devices"
    percent = f"{stage.amount / 10_000:g}%"
    if stage.kind == "fraction_ppm":
        return f"fraction {percent}"
    return f"{percent} of {eligible:,} = {stage.cap(eligible):,} devices"


def _plan_detail(
    inv: Inventory, wave: WaveContext | None, plan: Plan, ripples: list[dict[str, Any]]
) -> dict[str, Any]:
    """The plan's stages and where the wave is in them (``plan`` of the wave detail)."""
    starts = stage_starts(inv, wave) if wave is not None else {}
    accounting = wave.accounting if wave is not None else ()
    current = wave.current_stage if wave is not None else None
    by_index = {r["index"]: r for r in ripples}
    stages = []
    for number, st in enumerate(plan.stages, 1):
        own = [k for k, (s, _n) in enumerate(accounting, 1) if s == number]
        same_kind = [
            n for s, n in accounting if s <= number and plan.stage(s).is_fraction == st.is_fraction
        ]
        allowed = (max(same_kind, default=0) if st.is_fraction else sum(same_kind)) if own else None
        mine = [by_index[k] for k in own if k in by_index]
        started = starts.get(number)
        position = "waiting"
        if current is not None and own:
            position = "current" if number == current else "done"
        stages.append(
            st.to_dict()
            | {
                "number": number,
                "size_label": _size_label(st, plan.eligible),
                "cap": st.cap(plan.eligible),
                "cap_unit": "ppm" if st.is_fraction else "devices",
                "allowed": allowed,
                "started": None if started is None else format_time(started),
                "position": position,
                "ripples": own,
                "selected": sum(int(r["selected"]) for r in mine),
                "installed": sum(int(r["installed"]) for r in mine),
                "failed": sum(int(r["failed"]) for r in mine),
            }
        )
    return {
        "eligible": plan.eligible,
        "stages": stages,
        "stage_starts": {str(k): format_time(t) for k, t in sorted(starts.items())},
    }
