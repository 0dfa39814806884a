"""The simulation's picture: per wave, allowed, installed and failed devices over time.

One SVG document, written with :mod:`xml.etree.ElementTree` (every text and
attribute value is escaped by the serializer): one panel per wave, time on
the x axis (minutes since the start of the simulation), devices on the y
axis, three step lines (``allowed`` by the signed ripples, ``installed`` and
``failed`` from the devices' signed reports), a dashed vertical line where
each stage started and a marker where the wave ended (complete or
cancelled). Elements carry classes and ``data-`` attributes (wave, series,
stage, value) so that tools and tests can read the picture back.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["SERIES", "Sample", "StageMark", "WaveSeries", "render_svg"]

SERIES = ("allowed", "installed", "failed")
"""The three lines of each panel, in drawing order."""

_COLOURS = {"allowed": "#4a7bd0", "installed": "#3a9a4a", "failed": "#c8402f"}
_WIDTH = 760
_PANEL = 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 60, 20, 40, 40
_SVG = "http://www.w3.org/2000/svg"


@dataclass(frozen=True)
class Sample:
    """A wave's device counts at one time."""

    at: datetime
    allowed: int
    installed: int
    failed: int

    def value(self, series: str) -> int:
        """The count of ``series`` (one of :data:`SERIES`)."""
        return {"allowed": self.allowed, "installed": self.installed, "failed": self.failed}[series]


@dataclass(frozen=True)
class StageMark:
    """When a stage started (or, with ``end``, how and when the wave ended)."""

    at: datetime
    label: str
    stage: int | None = None
    end: bool = False


@dataclass(frozen=True)
class WaveSeries:
    """What one panel shows: a wave's samples in time order and its marks."""

    wave: str
    samples: tuple[Sample, ...]
    marks: tuple[StageMark, ...] = ()


def _ticks(top: int) -> list[int]:
    """Round y-axis values from 0 to at least ``top`` (4 to 6 steps)."""
    top = max(top, 1)
    step = 1
    while top / step > 6:
        for factor in (2, 5, 10):
            if top / (step * factor) <= 6:
                step *= factor
                break
        else:
            step *= 10
    last = -(-top // step) * step
    return list(range(0, last + 1, step))


def _text(
    parent: ET.Element,
    x: float,
    y: float,
    text: str,
    cls: str,
    size: int = 11,
    anchor: str = "start",
    **data: str,
) -> None:
    attrs = {
        "class": cls,
        "x": f"{x:.1f}",
        "y": f"{y:.1f}",
        "font-size": str(size),
        "text-anchor": anchor,
    }
    attrs |= {f"data-{k}": v for k, v in data.items()}
    ET.SubElement(parent, "text", attrs).text = text


def _panel(root: ET.Element, series: WaveSeries, top: float, start: datetime, span: float) -> None:
    g = ET.SubElement(root, "g", {"class": "wave", "data-wave": series.wave})
    height = _PANEL - _TOP - _BOTTOM
    width = _WIDTH - _LEFT - _RIGHT
    y0 = top + _TOP + height
    peak = max((s.value(k) for s in series.samples for k in SERIES), default=0)
    ticks = _ticks(peak)
    y_max = ticks[-1]

    def x_of(t: datetime) -> float:
        return _LEFT + width * ((t - start).total_seconds() / span)

    def y_of(v: int) -> float:
        return y0 - height * v / y_max

    _text(g, _LEFT, top + 22, f"wave {series.wave}", "title", 15)
    for v in ticks:
        y = y_of(v)
        ET.SubElement(
            g,
            "line",
            {"x1": str(_LEFT), "x2": str(_LEFT + width), "y1": f"{y:.1f}", "y2": f"{y:.1f}"},
            stroke="#e4e4e4",
        )
        _text(g, _LEFT - 8, y + 4, str(v), "y-tick", anchor="end", value=str(v))
    minutes = int(span // 60)
    step = max(10, -(-minutes // 8 // 10) * 10)
    for m in range(0, minutes + 1, step):
        x = _LEFT + width * (m * 60 / span)
        _text(g, x, y0 + 16, f"{m}", "x-tick", anchor="middle", minutes=str(m))
    _text(g, _LEFT + width, y0 + 32, "minutes since start", "x-label", anchor="end")
    ET.SubElement(
        g,
        "polyline",
        {
            "class": "axis",
            "points": f"{_LEFT},{top + _TOP} {_LEFT},{y0:.1f} {_LEFT + width},{y0:.1f}",
            "fill": "none",
            "stroke": "#444",
        },
    )
    for mark in series.marks:
        x = x_of(mark.at)
        attrs = {
            "class": "end" if mark.end else "stage-start",
            "data-label": mark.label,
            "data-at": f"{mark.at:%Y-%m-%dT%H:%M:%SZ}",
            "x1": f"{x:.1f}",
            "x2": f"{x:.1f}",
            "y1": str(top + _TOP),
            "y2": f"{y0:.1f}",
            "stroke": "#222" if mark.end else "#888",
            "stroke-dasharray": "2,2" if mark.end else "6,4",
        }
        if mark.stage is not None:
            attrs["data-stage"] = str(mark.stage)
        ET.SubElement(g, "line", attrs)
        if mark.end:  # left of its line, low: clear of the stage labels and the right edge
            _text(g, x - 3, y0 - 6, mark.label, "mark-label", anchor="end")
        else:
            _text(g, x + 3, top + _TOP + 10, mark.label, "mark-label")
    for i, name in enumerate(SERIES):
        points: list[str] = []
        previous: float | None = None
        for s in series.samples:
            x, y = x_of(s.at), y_of(s.value(name))
            if previous is not None:
                points.append(f"{x:.1f},{previous:.1f}")  # a step: hold, then move
            points.append(f"{x:.1f},{y:.1f}")
            previous = y
        final = series.samples[-1].value(name) if series.samples else 0
        ET.SubElement(
            g,
            "polyline",
            {
                "class": f"series {name}",
                "data-series": name,
                "data-final": str(final),
                "points": " ".join(points),
                "fill": "none",
                "stroke": _COLOURS[name],
                "stroke-width": "2",
            },
        )
        lx = _LEFT + width - 330 + i * 110
        ET.SubElement(
            g,
            "rect",
            {
                "x": str(lx),
                "y": str(top + 12),
                "width": "12",
                "height": "12",
                "fill": _COLOURS[name],
            },
        )
        _text(g, lx + 16, top + 22, f"{name} {final}", "legend", 12)


def render_svg(waves: Sequence[WaveSeries], title: str = "tufwaves simulation") -> bytes:
    """The picture of ``waves`` as SVG bytes (UTF-8, with an XML declaration).

    All panels share one time axis, from the earliest to the latest sample
    or mark.
    """
    times = [s.at for w in waves for s in w.samples] + [m.at for w in waves for m in w.marks]
    start = min(times) if times else datetime.fromtimestamp(0, UTC)
    end = max(times) if times else start
    span = max((end - start).total_seconds(), 60.0)
    height = 30 + _PANEL * max(len(waves), 1)
    root = ET.Element(
        "svg",
        {
            "xmlns": _SVG,
            "width": str(_WIDTH),
            "height": str(height),
            "viewBox": f"0 0 {_WIDTH} {height}",
            "font-family": "system-ui, sans-serif",
        },
    )
    _text(root, _LEFT, 22, title, "heading", 17)
    ET.SubElement(root, "desc").text = (
        "Per wave: devices allowed by the signed ripples, and devices whose latest "
        "signed report is installed or failed, over simulated time; dashed lines: "
        "stage starts; dotted: the end of the wave."
    )
    for i, w in enumerate(waves):
        _panel(root, w, 30 + i * _PANEL, start, span)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data + b"\n"
