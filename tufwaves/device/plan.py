"""The signed rollout plan of a wave (``x-tufwaves-wave.policy.plan``).

One parser for the writer (the server builds a plan and signs it offline) and
the verifier (the device enforces it), so that what one side writes the other
accepts. ``specs/metadata.md`` section 12 and ``specs/rollout.md`` "Plans"
define the format; every number is an integer (rates in parts per million).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypeGuard

from tufwaves.errors import InputError

__all__ = [
    "ABORT_ACTIONS",
    "ABORT_KEYS",
    "MAX_CODES",
    "MAX_STAGES",
    "PLAN_KEYS",
    "STAGE_KEYS",
    "SUCCESS_KEYS",
    "AbortGate",
    "Plan",
    "Stage",
    "SuccessGate",
    "format_time",
    "parse_plan",
]

MAX_INT: Final = 2**63 - 1
PPM: Final = 1_000_000
MAX_STAGES: Final = 64
"""The most stages a plan may have."""
MAX_CODES: Final = 64
"""The most failure codes an abort gate may list."""
PLAN_KEYS: Final = frozenset({"eligible", "stages"})
STAGE_KEYS: Final = frozenset(
    {"name", "size", "group", "not_before", "soak_seconds", "success", "abort", "timeout_seconds"}
)
SUCCESS_KEYS: Final = frozenset({"min_installed_ppm", "min_reports"})
ABORT_KEYS: Final = frozenset({"max_failed_ppm", "min_reports", "codes", "action"})
ABORT_ACTIONS: Final = ("pause", "cancel")
SIZE_KINDS: Final = ("devices", "percent_ppm", "fraction_ppm")

_LABEL_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
_CODE_RE: Final = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")  # specs/reports.md `code`
_TIME_RE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _int(where: str, value: object, low: int, high: int) -> int:
    if not _is_int(value) or not low <= value <= high:
        raise InputError(f"{where} {_show(value)} must be an integer from {low} to {high}")
    return value


def _opt_int(where: str, value: object, low: int, high: int) -> int | None:
    return None if value is None else _int(where, value, low, high)


def _exact(where: str, value: object, keys: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or set(value) != keys:
        have = sorted(str(k) for k in value) if isinstance(value, Mapping) else None
        raise InputError(
            f"{where} must be an object with exactly {', '.join(sorted(keys))}"
            + (f"; it has {', '.join(have) or 'none'}" if have is not None else "")
        )
    return value


def format_time(t: datetime) -> str:
    """``t`` as the plan writes times: ``YYYY-MM-DDTHH:MM:SSZ`` (UTC)."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time(where: str, value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _TIME_RE.fullmatch(value):
        raise InputError(f"{where} {_show(value)} must be null or a time YYYY-MM-DDTHH:MM:SSZ")
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise InputError(f"{where} {_show(value)} is not a valid time") from None


@dataclass(frozen=True)
class SuccessGate:
    """The gate to start a stage: of the previous stage's devices, enough installed."""

    min_installed_ppm: int
    min_reports: int

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"min_installed_ppm": self.min_installed_ppm, "min_reports": self.min_reports}


@dataclass(frozen=True)
class AbortGate:
    """The gate that stops a stage: too many failures, or a listed failure code."""

    max_failed_ppm: int
    min_reports: int
    codes: tuple[str, ...]
    action: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "max_failed_ppm": self.max_failed_ppm,
            "min_reports": self.min_reports,
            "codes": list(self.codes),
            "action": self.action,
        }


@dataclass(frozen=True)
class Stage:
    """One stage of a plan. ``kind`` is ``devices``, ``percent_ppm`` or ``fraction_ppm``."""

    name: str
    kind: str
    amount: int
    group: str | None
    not_before: datetime | None
    soak_seconds: int | None
    success: SuccessGate | None
    abort: AbortGate | None
    timeout_seconds: int | None

    @property
    def is_fraction(self) -> bool:
        """Whether this stage holds fraction ripples (else list/Merkle ripples)."""
        return self.kind == "fraction_ppm"

    def cap(self, eligible: int) -> int:
        """The cumulative cap: devices for a count stage, ppm for a fraction stage."""
        if self.kind == "percent_ppm":
            return (self.amount * eligible + PPM - 1) // PPM
        return self.amount

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as signed."""
        return {
            "name": self.name,
            "size": {self.kind: self.amount},
            "group": self.group,
            "not_before": None if self.not_before is None else format_time(self.not_before),
            "soak_seconds": self.soak_seconds,
            "success": None if self.success is None else self.success.to_dict(),
            "abort": None if self.abort is None else self.abort.to_dict(),
            "timeout_seconds": self.timeout_seconds,
        }


@dataclass(frozen=True)
class Plan:
    """A wave's rollout plan: eligible device count and 1..64 ordered stages.

    Construct with :func:`parse_plan` (or from its parts; the constructor
    checks every bound and constraint the same way).

    Raises:
        InputError: a bound or constraint of ``specs/metadata.md`` section 12
            is broken; the message names the stage and field.
    """

    eligible: int
    stages: tuple[Stage, ...]

    def __post_init__(self) -> None:
        _validate(self.to_dict())

    def stage(self, number: int) -> Stage:
        """Stage ``number`` (1-based).

        Raises:
            InputError: no such stage.
        """
        if not _is_int(number) or not 1 <= number <= len(self.stages):
            raise InputError(f"the plan has stages 1 to {len(self.stages)}, not {_show(number)}")
        return self.stages[number - 1]

    def cap(self, number: int) -> int:
        """The cumulative cap of stage ``number`` (devices, or ppm for fraction stages)."""
        return self.stage(number).cap(self.eligible)

    @property
    def last_not_before(self) -> datetime | None:
        """The latest ``not_before`` of the plan (the last stage's), or None."""
        times = [s.not_before for s in self.stages if s.not_before is not None]
        return max(times) if times else None

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as signed into ``policy.plan``."""
        return {"eligible": self.eligible, "stages": [s.to_dict() for s in self.stages]}


def _gate_success(where: str, raw: object) -> SuccessGate | None:
    if raw is None:
        return None
    g = _exact(where, raw, SUCCESS_KEYS)
    return SuccessGate(
        _int(f"{where}.min_installed_ppm", g["min_installed_ppm"], 0, PPM),
        _int(f"{where}.min_reports", g["min_reports"], 0, MAX_INT),
    )


def _gate_abort(where: str, raw: object) -> AbortGate | None:
    if raw is None:
        return None
    g = _exact(where, raw, ABORT_KEYS)
    codes = g["codes"]
    if not isinstance(codes, list | tuple) or len(codes) > MAX_CODES:
        raise InputError(f"{where}.codes must be a list of at most {MAX_CODES} failure codes")
    for c in codes:
        if not isinstance(c, str) or not _CODE_RE.fullmatch(c):
            raise InputError(
                f"{where}.codes: {_show(c)} is not a report failure code "
                "(1-64 of a-z 0-9 _ . -, starting with a letter or digit)"
            )
    if len(set(codes)) != len(codes):
        raise InputError(f"{where}.codes lists a code twice")
    action = g["action"]
    if action not in ABORT_ACTIONS:
        raise InputError(f"{where}.action {_show(action)} must be 'pause' or 'cancel'")
    return AbortGate(
        _int(f"{where}.max_failed_ppm", g["max_failed_ppm"], 0, PPM),
        _int(f"{where}.min_reports", g["min_reports"], 0, MAX_INT),
        tuple(codes),
        action,
    )


def _stage(number: int, raw: object) -> Stage:
    where = f"plan stage {number}"
    s = _exact(where, raw, STAGE_KEYS)
    name = s["name"]
    if not isinstance(name, str) or not _LABEL_RE.fullmatch(name):
        raise InputError(
            f"{where}.name {_show(name)}: use 1-64 of [A-Za-z0-9_.+-], starting with a "
            "letter or digit"
        )
    where = f"plan stage {number} ({name})"
    size = s["size"]
    if not isinstance(size, Mapping) or len(size) != 1 or next(iter(size)) not in SIZE_KINDS:
        raise InputError(
            f"{where}.size must be exactly one of {{'devices': N}}, {{'percent_ppm': P}}, "
            "{'fraction_ppm': F}"
        )
    kind = next(iter(size))
    amount = _int(f"{where}.size.{kind}", size[kind], 1, MAX_INT if kind == "devices" else PPM)
    group = s["group"]
    if group is not None and not (isinstance(group, str) and _LABEL_RE.fullmatch(group)):
        raise InputError(f"{where}.group {_show(group)} must be null or a group name")
    return Stage(
        name,
        kind,
        amount,
        group,
        _time(f"{where}.not_before", s["not_before"]),
        _opt_int(f"{where}.soak_seconds", s["soak_seconds"], 0, MAX_INT),
        _gate_success(f"{where}.success", s["success"]),
        _gate_abort(f"{where}.abort", s["abort"]),
        _opt_int(f"{where}.timeout_seconds", s["timeout_seconds"], 1, MAX_INT),
    )


def _validate(raw: object) -> tuple[int, tuple[Stage, ...]]:
    """The plan signed as ``raw`` (JSON data), checked strictly.

    Bounds: ``eligible`` 1..2**63-1; 1..64 stages with unique names; sizes
    ``devices`` 1..2**63-1, ``percent_ppm`` and ``fraction_ppm`` 1..1e6; rates
    0..1e6 ppm; ``min_reports`` and ``soak_seconds`` 0..2**63-1;
    ``timeout_seconds`` 1..2**63-1. Constraints: ``not_before`` non-decreasing
    (nulls skipped), count caps non-decreasing, fraction caps non-decreasing,
    stage 1 without a ``success`` gate.

    Raises:
        InputError: a bound or constraint is broken; the message names the
            stage and the field.
    """
    p = _exact("plan", raw, PLAN_KEYS)
    eligible = _int("plan.eligible", p["eligible"], 1, MAX_INT)
    stages_raw = p["stages"]
    if not isinstance(stages_raw, list | tuple) or not 1 <= len(stages_raw) <= MAX_STAGES:
        raise InputError(f"plan.stages must be a list of 1 to {MAX_STAGES} stages")
    stages = tuple(_stage(i, s) for i, s in enumerate(stages_raw, 1))
    seen: set[str] = set()
    last_time: datetime | None = None
    last_count = last_fraction = 0
    for i, st in enumerate(stages, 1):
        where = f"plan stage {i} ({st.name})"
        if st.name in seen:
            raise InputError(f"{where}.name is used by an earlier stage")
        seen.add(st.name)
        if st.not_before is not None:
            if last_time is not None and st.not_before < last_time:
                raise InputError(f"{where}.not_before is before an earlier stage's not_before")
            last_time = st.not_before
        cap = st.cap(eligible)
        if st.is_fraction:
            if cap < last_fraction:
                raise InputError(f"{where}.size is below an earlier fraction stage's cap")
            last_fraction = cap
        else:
            if cap < last_count:
                raise InputError(
                    f"{where}.size ({cap} devices) is below an earlier stage's cap "
                    f"({last_count} devices)"
                )
            last_count = cap
    if stages[0].success is not None:
        raise InputError(
            f"plan stage 1 ({stages[0].name}).success must be null: the first stage has "
            "no previous stage to gate on"
        )
    return eligible, stages


def parse_plan(raw: object) -> Plan:
    """The plan signed as ``raw`` (JSON data), checked strictly.

    See :func:`_validate` for every bound and constraint (and
    ``specs/metadata.md`` section 12).

    Raises:
        InputError: a bound or constraint is broken; the message names the
            stage and the field.
    """
    eligible, stages = _validate(raw)
    return Plan(eligible, stages)
