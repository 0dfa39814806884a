"""Rollout plans as people write them (PLAN.json) and as they are signed.

``waves init --plan PLAN.json`` reads a plan written with percentages,
fractions and durations such as ``"2h"``; :func:`plan_from_input` converts
it to the signed form (:class:`tufwaves.device.plan.Plan`: integers only,
rates in parts per million), checking every bound before anything is signed.
``specs/rollout.md`` "Plans" defines both forms.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

from tufwaves.device.plan import (
    MAX_INT,
    PPM,
    AbortGate,
    Plan,
    SuccessGate,
    parse_plan,
)
from tufwaves.errors import InputError

__all__ = ["Plan", "load_plan_file", "parse_duration", "parse_rate", "plan_from_input"]

_DURATION_RE: Final = re.compile(r"([0-9]{1,19})([smhd]?)")
_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_STAGE_INPUT: Final = frozenset(
    {
        "name",
        "size",
        "group",
        "not_before",
        "soak",
        "soak_seconds",
        "success",
        "abort",
        "timeout",
        "timeout_seconds",
    }
)
MAX_PLAN_FILE: Final = 1 << 20


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_duration(where: str, value: object) -> int | None:
    """Seconds from ``value``: null, integer seconds, or ``"90s"``/``"30m"``/``"2h"``/``"1d"``.

    Raises:
        InputError: anything else; the message names ``where``.
    """
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str) and (m := _DURATION_RE.fullmatch(value.strip())):
        seconds = int(m[1]) * _UNITS[m[2]]
    else:
        raise InputError(
            f"{where} {_show(value)}: write seconds as an integer or a duration like "
            "'90s', '30m', '2h', '1d'"
        )
    if not 0 <= seconds <= MAX_INT:
        raise InputError(f"{where} {_show(value)} is out of range")
    return seconds


def _decimal(where: str, value: object) -> tuple[Decimal, bool]:
    """The number in ``value`` and whether it was written as a percentage."""
    if isinstance(value, bool):
        raise InputError(f"{where} {_show(value)} is not a number")
    percent = isinstance(value, str) and value.strip().endswith("%")
    text = value.strip().removesuffix("%") if isinstance(value, str) else str(value)
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise InputError(f"{where} {_show(value)} is not a number or a percentage") from None
    if not number.is_finite():
        raise InputError(f"{where} {_show(value)} is not a finite number")
    return number, percent


def parse_rate(where: str, value: object) -> int:
    """Parts per million from ``"95%"``, ``"99.5%"`` or a fraction ``0.95`` / ``"0.95"``.

    Raises:
        InputError: not a rate from 0 to 100 %, or finer than one ppm.
    """
    number, percent = _decimal(where, value)
    ppm = number * (10_000 if percent else PPM)
    if ppm != ppm.to_integral_value() or not 0 <= ppm <= PPM:
        raise InputError(
            f"{where} {_show(value)} must be a rate from 0% to 100% in steps of 0.0001% "
            "(one part per million)"
        )
    return int(ppm)


def _int(where: str, value: object, low: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= MAX_INT:
        raise InputError(f"{where} {_show(value)} must be an integer from {low} to {MAX_INT}")
    return value


def _size(where: str, raw: object) -> tuple[str, int]:
    if isinstance(raw, str):
        if not raw.strip().endswith("%"):
            raise InputError(f"{where} {_show(raw)}: a size string is a percentage like '5%'")
        return "percent_ppm", parse_rate(where, raw)
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise InputError(
            f"{where} must be {{'devices': N}}, 'N%', {{'percent': 'N%'}}, "
            "{'fraction': 'N%'} (or percent_ppm / fraction_ppm)"
        )
    kind, value = next(iter(raw.items()))
    if kind == "devices":
        return "devices", _int(f"{where}.devices", value, 1)
    if kind in ("percent_ppm", "fraction_ppm"):
        return kind, _int(f"{where}.{kind}", value, 1)
    if kind == "percent":
        number, percent = _decimal(f"{where}.percent", value)
        ppm = parse_rate(f"{where}.percent", value if percent else f"{number}%")
        return "percent_ppm", ppm
    if kind == "fraction":
        return "fraction_ppm", parse_rate(f"{where}.fraction", value)
    raise InputError(f"{where} has an unknown kind {_show(kind)}")


def _success(where: str, raw: object) -> SuccessGate | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise InputError(f"{where} must be null or an object")
    extra = set(raw) - {"min_installed", "min_installed_ppm", "min_reports"}
    if extra:
        raise InputError(f"{where} has unknown members {', '.join(sorted(map(str, extra)))}")
    if "min_installed_ppm" in raw:
        rate = _int(f"{where}.min_installed_ppm", raw["min_installed_ppm"])
    elif "min_installed" in raw:
        rate = parse_rate(f"{where}.min_installed", raw["min_installed"])
    else:
        raise InputError(f"{where} needs min_installed (such as '95%')")
    return SuccessGate(rate, _int(f"{where}.min_reports", raw.get("min_reports", 1)))


def _abort(where: str, raw: object) -> AbortGate | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise InputError(f"{where} must be null or an object")
    extra = set(raw) - {"max_failed", "max_failed_ppm", "min_reports", "codes", "action"}
    if extra:
        raise InputError(f"{where} has unknown members {', '.join(sorted(map(str, extra)))}")
    if "max_failed_ppm" in raw:
        rate = _int(f"{where}.max_failed_ppm", raw["max_failed_ppm"])
    elif "max_failed" in raw:
        rate = parse_rate(f"{where}.max_failed", raw["max_failed"])
    else:
        rate = PPM  # only the failure codes abort
    codes = raw.get("codes", [])
    if not isinstance(codes, list):
        raise InputError(f"{where}.codes must be a list of failure codes")
    return AbortGate(
        rate,
        _int(f"{where}.min_reports", raw.get("min_reports", 1)),
        tuple(codes),
        raw.get("action", "pause"),
    )


def _stage(number: int, raw: object) -> dict[str, Any]:
    where = f"PLAN.json stage {number}"
    if not isinstance(raw, Mapping):
        raise InputError(f"{where} must be an object")
    if isinstance(raw.get("name"), str):
        where += f" ({raw['name']})"
    extra = set(raw) - _STAGE_INPUT
    if extra:
        raise InputError(f"{where} has unknown members {', '.join(sorted(map(str, extra)))}")
    if "size" not in raw or "name" not in raw:
        raise InputError(f"{where} needs a name and a size")
    kind, amount = _size(f"{where}.size", raw["size"])
    soak = raw.get("soak", raw.get("soak_seconds"))
    timeout = raw.get("timeout", raw.get("timeout_seconds"))
    return {  # checked whole by parse_plan
        "name": raw["name"],
        "size": {kind: amount},
        "group": raw.get("group"),
        "not_before": raw.get("not_before"),
        "soak_seconds": parse_duration(f"{where}.soak", soak),
        "success": _gate_dict(_success(f"{where}.success", raw.get("success"))),
        "abort": _gate_dict(_abort(f"{where}.abort", raw.get("abort"))),
        "timeout_seconds": parse_duration(f"{where}.timeout", timeout),
    }


def _gate_dict(gate: SuccessGate | AbortGate | None) -> dict[str, Any] | None:
    return None if gate is None else gate.to_dict()


def plan_from_input(data: object, eligible: int | None = None) -> Plan:
    """The signed plan for PLAN.json ``data``.

    Args:
        data: ``{"eligible": E (optional), "stages": [...]}`` with sizes
            ``{"devices": N}``, ``"N%"``, ``{"percent": "12.5%"}``,
            ``{"fraction": "1%"}`` (or ``percent_ppm``/``fraction_ppm``),
            rates ``"95%"``, durations ``"2h"`` or seconds.
        eligible: The eligible devices counted from the inventory; an
            ``eligible`` in ``data`` overrides it.

    Returns:
        The plan, checked with every bound of ``specs/metadata.md`` §12.

    Raises:
        InputError: anything malformed; the message names the stage and field.
    """
    if not isinstance(data, Mapping):
        raise InputError("PLAN.json must be an object with stages (and optionally eligible)")
    extra = set(data) - {"eligible", "stages"}
    if extra:
        raise InputError(f"PLAN.json has unknown members {', '.join(sorted(map(str, extra)))}")
    count = data.get("eligible", eligible)
    if count is None or count == 0:
        raise InputError(
            "PLAN.json: no eligible device counted for the wave; give 'eligible' in PLAN.json "
            "(the base of percentage sizes) or register devices first"
        )
    stages = data.get("stages")
    if not isinstance(stages, list) or not stages:
        raise InputError("PLAN.json: stages must be a non-empty list")
    signed = {"eligible": count, "stages": [_stage(i, s) for i, s in enumerate(stages, 1)]}
    return parse_plan(signed)


def load_plan_file(path: Path) -> dict[str, Any]:
    """PLAN.json read as JSON data.

    Raises:
        InputError: unreadable, too large (1 MiB) or not JSON.
    """
    try:
        with path.open("rb") as f:
            data = f.read(MAX_PLAN_FILE + 1)
    except OSError as e:
        raise InputError(f"cannot read plan {path}: {e.strerror or e}") from None
    if len(data) > MAX_PLAN_FILE:
        raise InputError(f"plan {path} is over {MAX_PLAN_FILE} bytes")
    try:
        out = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"plan {path} is not JSON: {e}") from None
    if not isinstance(out, dict):
        raise InputError(f"plan {path} must hold a JSON object")
    return out
