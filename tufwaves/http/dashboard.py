"""The operator dashboard: one server-rendered HTML page, no JavaScript.

Every value from the repository, the inventory or the request is escaped
with :func:`html.escape`; the page is served with a Content-Security-Policy
that allows no script at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

__all__ = ["CSP", "render_dashboard", "render_login"]

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:70rem}
h1{font-size:1.4rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0}
td,th{padding:.2rem .6rem;text-align:left;vertical-align:middle}
.track{width:16rem;height:.9rem;background:#eee;border-radius:.2rem;overflow:hidden}
.fill{height:100%}
.selected .fill{background:#4a7bd0}.installed .fill{background:#3a9a4a}
.failed .fill{background:#c8402f}.silent .fill{background:#999}
.meta,.note{color:#666;font-size:.9rem}
.planbar{display:flex;width:40rem;max-width:100%;margin:.4rem 0;border:1px solid #bbb}
.seg{padding:.15rem .3rem;font-size:.8rem;white-space:nowrap;overflow:hidden;
border-right:1px solid #bbb;background:#f4f4f4;color:#555;min-width:4.5rem}
.seg.done{background:#cfe3cf;color:#222}.seg.current{background:#4a7bd0;color:#fff;font-weight:bold}
ol.stages{padding-left:1.5rem}ol.stages li{margin:.35rem 0}
li.stage.current{font-weight:bold}li.stage.waiting{color:#777}
.marker{background:#4a7bd0;color:#fff;padding:0 .3rem;border-radius:.2rem;font-size:.8rem}
.gates{font-weight:normal;color:#555;font-size:.85rem}
"""


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def _count(value: int | None) -> str:
    return "unknown" if value is None else f"{value:,}"


def _bar(kind: str, value: int | None, of: int | None, label: str) -> str:
    pct = 0.0
    if value is not None and of:
        pct = max(0.0, min(100.0, value * 100 / of))
    return (
        f'<tr class="bar {kind}" data-kind="{kind}" data-count="{escape(_count(value))}">'
        f"<th>{kind}</th>"
        f'<td><div class="track" role="img" aria-label="{kind} {escape(label)}">'
        f'<div class="fill" style="width:{pct:.1f}%"></div></div></td>'
        f'<td class="count">{escape(label)}</td></tr>'
    )


def _ripple(ripple: dict[str, Any], devices: dict[str, Any] | None) -> str:
    selected: int | None = ripple["selected"]
    index = int(ripple["index"])
    eligible_total = devices["total"] if devices else None
    if selected is None:
        selected_label = f"fraction {ripple['fraction']} of the fleet"
    else:
        selected_label = f"{selected:,} devices"
    rows = [_bar("selected", selected, eligible_total, selected_label)]
    for kind in ("installed", "failed", "silent"):
        value = ripple[kind]
        rows.append(_bar(kind, value, selected, _count(value)))
    return (
        f'<div class="ripple" id="ripple-{index}"><h3>Ripple {index} '
        f'<span class="meta">{escape(str(ripple["encoding"]))}, '
        f"{escape(str(ripple['created']))}</span></h3>"
        f"<table>{''.join(rows)}</table></div>"
    )


def _wave(wave: dict[str, Any]) -> str:
    name = escape(str(wave["name"]))
    head = (
        f'<section class="wave" id="wave-{name}"><h2>Wave <span class="wave-name">{name}</span>'
        f'</h2><p class="meta">tag {escape(str(wave["tag"]))}, version '
        f'{escape(str(wave["version"]))}, <span class="status">'
        f"{escape(str(wave['status']))}</span>, {int(wave['ripple_count'])} ripple(s), "
        f"expires {escape(str(wave['expires']))}</p>"
    )
    devices = wave.get("devices")
    if devices:
        head += (
            f'<p class="devices">{devices["total"]:,} devices of this tag and hardware, '
            f"{devices['selected']:,} selected, {devices['eligible']:,} still eligible, "
            f"{devices['updated']:,} report this version or newer</p>"
        )
    if wave.get("plan") and wave["plan"].get("stages"):
        head += _plan(wave["plan"], str(wave["status"]))
    ripples = "".join(_ripple(r, devices) for r in wave.get("ripples", []))
    if not ripples:
        ripples = '<p class="note">No ripple yet.</p>'
    failures = wave.get("recent_failures", [])
    if failures:
        items = "".join(
            f"<li>{escape(str(f.get('at')))} {escape(str(f.get('device')))} "
            f"(ripple {escape(str(f.get('ripple')))}): {escape(str(f.get('reason')))}</li>"
            for f in failures
        )
        fail_html = f'<h3>Latest failures</h3><ul class="failures">{items}</ul>'
    else:
        fail_html = (
            '<h3>Latest failures</h3><p class="note failures">None reported. Installed, '
            "failed and silent count each selected device by its latest signed report; "
            "silent devices have not reported.</p>"
        )
    return head + ripples + fail_html + "</section>"


def _pct(ppm: int) -> str:
    return f"{ppm / 10_000:g}%"


def _gates(stage: dict[str, Any]) -> str:
    parts = []
    if stage.get("not_before"):
        parts.append(f"not before {stage['not_before']}")
    if stage.get("soak_seconds"):
        parts.append(f"soak {int(stage['soak_seconds']):,} s after the previous stage started")
    success = stage.get("success")
    if success:
        parts.append(
            f"starts when ≥ {_pct(int(success['min_installed_ppm']))} of the previous stage "
            f"installed (≥ {int(success['min_reports']):,} reports)"
        )
    abort = stage.get("abort")
    if abort:
        rule = f"> {_pct(int(abort['max_failed_ppm']))} failed"
        if abort.get("codes"):
            rule += " or a failure " + ", ".join(str(c) for c in abort["codes"])
        parts.append(f"{abort['action']} if {rule} (≥ {int(abort['min_reports']):,} reports)")
    if stage.get("timeout_seconds"):
        parts.append(f"silent after {int(stage['timeout_seconds']):,} s counts as failed")
    return "; ".join(parts) or "no gates"


def _stage(stage: dict[str, Any], status: str) -> str:
    position = str(stage["position"])
    number = int(stage["number"])
    name = escape(str(stage["name"]))
    current = position == "current"
    aria = ' aria-current="step"' if current else ""
    marker = f' <span class="marker">current stage ({escape(status)})</span>' if current else ""
    unit = "ppm" if stage["cap_unit"] == "ppm" else "devices"
    if stage["allowed"] is None:
        allowed = "nothing allowed yet"
    else:
        allowed = f"{int(stage['allowed']):,} of {int(stage['cap']):,} {unit} allowed"
    started = f"started {escape(str(stage['started']))}" if stage["started"] else "not started"
    reports = ""
    if stage["ripples"]:
        reports = (
            f", {int(stage['installed']):,} installed, {int(stage['failed']):,} failed "
            f"of {int(stage['selected']):,} offered"
        )
    return (
        f'<li class="stage {escape(position)}" data-stage="{number}" '
        f'data-position="{escape(position)}"{aria}>'
        f'<span class="stage-name">{name}</span>{marker}: '
        f"{escape(str(stage['size_label']))}; {allowed}; {started}{reports}"
        f'<br><span class="gates">{escape(_gates(stage))}</span></li>'
    )


def _plan(plan: dict[str, Any], status: str) -> str:
    stages = plan["stages"]
    current = next((s for s in stages if s["position"] == "current"), None)
    where = (
        f"in stage {int(current['number'])} of {len(stages)} ({escape(str(current['name']))})"
        if current
        else f"not started ({len(stages)} stages)"
    )
    segments = []
    previous = 0
    for s in stages:
        cap = int(s["cap"]) if s["cap_unit"] == "devices" else 0
        width = max(cap - previous, 1)
        previous = max(previous, cap)
        segments.append(
            f'<div class="seg {escape(str(s["position"]))}" style="flex:{width}" '
            f'title="{escape(str(s["name"]))}">{escape(str(s["name"]))}</div>'
        )
    items = "".join(_stage(s, status) for s in stages)
    return (
        f'<div class="plan"><h3>Plan <span class="meta plan-where">{where}, '
        f"{int(plan['eligible']):,} eligible devices</span></h3>"
        f'<div class="planbar" role="img" aria-label="plan stages">{"".join(segments)}</div>'
        f'<ol class="stages">{items}</ol></div>'
    )


def render_dashboard(waves: Sequence[dict[str, Any]], published: dict[str, Any]) -> str:
    body = (
        "<h1>tufwaves rollouts</h1>"
        f'<p class="meta">published state: timestamp {int(published["timestamp_version"])}, '
        f"snapshot {int(published['snapshot_version'])}, root "
        f"{int(published['root_version'])}</p>"
    )
    if not waves:
        body += '<p class="note">No waves.</p>'
    body += "".join(_wave(w) for w in waves)
    return _page("tufwaves rollouts", body)


def render_login(message: str) -> str:
    body = (
        "<h1>tufwaves operator dashboard</h1>"
        f'<p class="note">{escape(message)}</p>'
        '<form method="post" action="/login">'
        '<label>Operator token <input type="password" name="token" '
        'autocomplete="current-password" required></label> '
        '<button type="submit">Sign in</button></form>'
    )
    return _page("tufwaves: sign in", body)
