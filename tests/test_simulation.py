"""``tufwaves demo --simulate`` on a small fleet, checked from what it published and its picture."""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tufwaves.cli import main
from tufwaves.demo.picture import Sample, StageMark, WaveSeries, render_svg
from tufwaves.demo.simulation import (
    TICK_SECONDS,
    SimulationResult,
    run_simulation,
    simulation_plan,
)
from tufwaves.errors import InputError
from tufwaves.server import load_wave, open_inventory, stage_starts
from tufwaves.server.repository import Repository
from tufwaves.simulator import Fleet

# A start in the past of any real clock: every party must run on the simulation's clock
# (a real-time expiry check would find the metadata expired and deny).
START = datetime(2025, 6, 1, tzinfo=UTC)
SVG = "{http://www.w3.org/2000/svg}"
DEVICES = 120


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> SimulationResult:
    base = tmp_path_factory.mktemp("simulation")
    return run_simulation(
        base / "run", devices=DEVICES, picture=base / "picture.svg", start=START, say=print
    )


def latest(repo: Repository, wave: str) -> dict[str, int]:
    with open_inventory(repo, read_only=True) as inv:
        counts = {"installed": 0, "failed": 0}
        for r in inv.latest_reports(wave):
            if r.status in ("installed", "failed"):
                counts[r.status] += 1
        return counts


def test_wave_a_goes_through_every_stage_in_order_to_complete(
    simulated: SimulationResult,
) -> None:
    repo = Repository.open(simulated.repo)
    wave = load_wave(repo, "wave-a")
    assert wave.status == "complete"
    assert [stage for stage, _size in wave.accounting] == [1, 2, 3]
    plan = wave.plan
    assert plan is not None and plan.eligible == DEVICES // 2
    assert [n for _stage, n in wave.accounting] == [3, 27, 30]  # up to each cumulative cap
    with open_inventory(repo, read_only=True) as inv:
        starts = stage_starts(inv, wave)
        assert starts[1] == START
        for stage in (2, 3):  # the soak of an hour after the previous stage started
            assert starts[stage] - starts[stage - 1] >= timedelta(hours=1)
        members = [
            d for d in inv.list_devices(tag="production") if d.hardware_id == "imx8mm-lpddr4"
        ]
        assert len(members) == DEVICES // 2
        assert all(d.installed_version == 42 for d in members)
        decisions = [
            e.arguments_data
            for e in inv.audit_log()
            if e.action == "controller" and e.arguments_data["wave"] == "wave-a"
        ]
    assert [(d["action"], d["next_stage"]) for d in decisions] == [
        ("advance", 2),
        ("advance", 3),
        ("complete", None),
    ]
    done = decisions[-1]["evaluation"]["figures"]
    assert (done["offered"], done["installed"], done["failed"]) == (30, 30, 0)
    assert latest(repo, "wave-a") == {"installed": DEVICES // 2, "failed": 0}


def test_wave_b_is_cancelled_by_its_first_gate(simulated: SimulationResult) -> None:
    repo = Repository.open(simulated.repo)
    wave = load_wave(repo, "wave-b")
    assert wave.status == "cancelled"
    assert wave.accounting == ((1, 3),)  # never got past the canary
    with open_inventory(repo, read_only=True) as inv:
        log = inv.audit_log()
    decision = next(
        e.arguments_data
        for e in log
        if e.action == "controller" and e.arguments_data["wave"] == "wave-b"
    )
    assert (decision["action"], decision["stage"]) == ("cancel", 1)
    evaluation = decision["evaluation"]
    assert [r["code"] for r in evaluation["reasons"]] == ["abort-rate"]
    figures = evaluation["figures"]
    assert figures["reported"] >= 3  # the gate's min_reports
    assert figures["failed"] * 10 > figures["reported"]  # more than 10% failed
    assert any(e.action == "cancel" and e.arguments_data == {"wave": "wave-b"} for e in log)
    counts = latest(repo, "wave-b")
    assert counts["failed"] == figures["failed"] >= 1


def test_the_timeline_follows_the_published_history(simulated: SimulationResult) -> None:
    repo = Repository.open(simulated.repo)
    assert simulated.as_planned
    ends = {e.wave: e for e in simulated.events if e.kind in ("complete", "cancelled")}
    assert set(ends) == {"wave-a", "wave-b"}
    assert (ends["wave-a"].kind, ends["wave-b"].kind) == ("complete", "cancelled")
    a_starts = [e.at for e in simulated.events if e.wave == "wave-a" and e.kind == "started"]
    with open_inventory(repo, read_only=True) as inv:
        assert a_starts == sorted(stage_starts(inv, load_wave(repo, "wave-a")).values())
    gates = [e for e in simulated.events if e.kind == "gate" and e.wave == "wave-b"]
    assert gates[-1].data["stage"] == 1 and "cancel (abort-rate)" in gates[-1].text
    # every event on a tick of the compressed clock; the whole run took hours of it
    assert all((e.at - START).total_seconds() % TICK_SECONDS == 0 for e in simulated.events)
    assert simulated.ticks * TICK_SECONDS >= 2 * 3600
    data = simulated.to_dict()
    assert data["waves"]["wave-a"]["stages_started"] == ["canary", "half", "everyone"]
    assert data["timeline"][0]["at"] == "2025-06-01T00:00:00Z"


def _panel(svg: ET.Element, wave: str) -> ET.Element:
    found = svg.find(f"{SVG}g[@data-wave='{wave}']")
    assert found is not None, f"no panel for {wave}"
    return found


def _values(panel: ET.Element, series: str) -> list[float]:
    """The series' y values read back through the panel's y axis ticks."""
    ticks = {
        float(t.get("y", "0")) - 4: int(t.get("data-value", "0"))
        for t in panel.iter(f"{SVG}text")
        if t.get("class") == "y-tick"
    }
    (y_lo, v_lo), (y_hi, v_hi) = max(ticks.items()), min(ticks.items())
    line = panel.find(f"{SVG}polyline[@data-series='{series}']")
    assert line is not None
    ys = [float(p.split(",")[1]) for p in line.get("points", "").split()]
    return [v_lo + (y_lo - y) * (v_hi - v_lo) / (y_lo - y_hi) for y in ys]


def test_the_picture_shows_what_the_server_published(simulated: SimulationResult) -> None:
    repo = Repository.open(simulated.repo)
    svg = ET.fromstring(simulated.picture.read_bytes())  # noqa: S314 - the SVG written here
    for name, stages in (("wave-a", ["1", "2", "3"]), ("wave-b", ["1"])):
        panel = _panel(svg, name)
        wave = load_wave(repo, name)
        allowed = sum(n for _s, n in wave.accounting)
        counts = latest(repo, name)
        for series, final in (("allowed", allowed), *counts.items()):
            values = _values(panel, series)
            assert values[-1] == pytest.approx(final, abs=0.05), (name, series)
            assert values == sorted(values)  # counts only grow
        marks = [m for m in panel.iter(f"{SVG}line") if m.get("class") == "stage-start"]
        assert [m.get("data-stage") for m in marks] == stages
        with open_inventory(repo, read_only=True) as inv:
            starts = stage_starts(inv, wave)
        assert [m.get("data-at") for m in marks] == [
            f"{starts[int(s)]:%Y-%m-%dT%H:%M:%SZ}" for s in stages
        ]
        end = [m for m in panel.iter(f"{SVG}line") if m.get("class") == "end"]
        assert [m.get("data-label") for m in end] == [wave.status]
    # wave-b's allowed line stays at its canary: the cancel stopped the rollout
    assert max(_values(_panel(svg, "wave-b"), "allowed")) == pytest.approx(3, abs=0.05)


def test_render_svg_draws_steps_marks_and_escapes() -> None:
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    samples = tuple(
        Sample(t0 + timedelta(minutes=10 * i), a, i, f)
        for i, (a, f) in enumerate([(5, 0), (5, 1), (50, 1), (50, 2)])
    )
    marks = (
        StageMark(t0, "1 canary", 1),
        StageMark(t0 + timedelta(minutes=20), "2 half", 2),
        StageMark(t0 + timedelta(minutes=30), "cancelled", end=True),
    )
    picture = render_svg([WaveSeries("w<&>", samples, marks)], title='a "b" <c>')
    svg = ET.fromstring(picture)  # noqa: S314 - the SVG just rendered
    assert svg.tag == f"{SVG}svg"
    texts = [t.text for t in svg.iter(f"{SVG}text")]
    assert 'a "b" <c>' in texts and "wave w<&>" in texts
    panel = _panel(svg, "w<&>")
    assert [round(v) for v in _values(panel, "allowed")] == [5, 5, 5, 5, 50, 50, 50]
    assert [round(v) for v in _values(panel, "failed")] == [0, 0, 1, 1, 1, 1, 2]
    finals = {p.get("data-series"): p.get("data-final") for p in panel.iter(f"{SVG}polyline")}
    assert finals == {None: None, "allowed": "50", "installed": "3", "failed": "2"}
    lines = list(panel.iter(f"{SVG}line"))
    starts = [ln for ln in lines if ln.get("class") == "stage-start"]
    assert [ln.get("data-stage") for ln in starts] == ["1", "2"]
    x_of = {ln.get("data-label"): float(ln.get("x1", "0")) for ln in lines if ln.get("data-label")}
    # the stage 2 mark sits two thirds of the way along (20 of 30 minutes)
    span = x_of["cancelled"] - x_of["1 canary"]
    assert x_of["2 half"] - x_of["1 canary"] == pytest.approx(span * 2 / 3, abs=0.2)


def test_the_plan_has_the_gates_the_simulation_needs() -> None:
    stages = simulation_plan()["stages"]
    assert [s["name"] for s in stages] == ["canary", "half", "everyone"]
    assert all(s["abort"]["action"] == "cancel" for s in stages)
    assert "success" not in stages[0] and all("success" in s for s in stages[1:])


def test_wave_failures_fail_an_exact_share_spread_evenly() -> None:
    fleet = Fleet("http://127.0.0.1:9", [], root=b"{}", wave_failures={"w": 0.2})
    with fleet:
        outcomes = [fleet.fails("w", random.Random(0)) for _ in range(100)]
    assert sum(outcomes) == 20
    assert outcomes[:10] == [True, False, False, False, False, True, False, False, False, False]
    with pytest.raises(InputError, match="between 0 and 1"):
        Fleet("http://127.0.0.1:9", [], root=b"{}", wave_failures={"w": 1.5})
    with pytest.raises(InputError, match="loopback"):
        Fleet("http://192.0.2.1:9", [], root=b"{}")


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_simulate_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    picture = tmp_path / "rollout.svg"
    argv = ["demo", "--simulate", "--devices", "120", "--picture", str(picture)]
    code, out, _ = run_cli([*argv, "--dir", str(tmp_path / "d"), "--json"], capsys)
    assert code == 0
    data: dict[str, Any] = json.loads(out)
    assert data["as_planned"] is True
    assert data["picture"] == str(picture) and picture.is_file()
    assert data["waves"]["wave-a"]["status"] == "complete"
    assert data["waves"]["wave-b"]["status"] == "cancelled"
    assert load_wave(Repository.open(data["repo"]), "wave-a").status == "complete"
    # the picture exists now: refused without --force, before anything runs
    code, out, _ = run_cli([*argv, "--dir", str(tmp_path / "e"), "--json"], capsys)
    assert code == 2 and "--force" in json.loads(out)["error"]
    assert not (tmp_path / "e").exists()
    code, out, _ = run_cli([*argv, "--dir", str(tmp_path / "f"), "--force"], capsys)
    assert code == 0
    assert "T+00:00  wave-a  stage 1 (canary) started" in out
    assert "wave-b: cancelled in stage 1 (canary)" in out
    assert f"picture: {picture}" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--simulate", "--devices", "50"], "--devices must be 120"),
        (["demo", "--simulate", "--picture", "/nonexistent/dir/x.svg"], "existing folder"),
        (["demo", "--picture", "x.svg", "--dir", "d"], "--picture goes with --simulate"),
        (["demo", "--json", "--dir", "d"], "--json goes with --simulate"),
        (["demo"], "needs --dir"),
    ],
    ids=["too-few-devices", "no-folder", "picture-without-simulate", "json-alone", "no-dir"],
)
def test_cli_refuses_bad_input(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = run_cli(argv, capsys)
    assert code == 2
    assert message in err


def test_run_simulation_refuses_a_used_directory(tmp_path: Path) -> None:
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("x")
    with pytest.raises(Exception, match="not empty"):
        run_simulation(tmp_path / "used", devices=120, picture=tmp_path / "p.svg")
    with pytest.raises(InputError, match="timezone-aware"):
        run_simulation(
            tmp_path / "new", devices=120, picture=tmp_path / "p.svg", start=datetime(2030, 1, 1)
        )
