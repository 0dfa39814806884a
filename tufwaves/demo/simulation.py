"""``tufwaves demo --simulate``: planned waves, controller and fleet on a compressed clock.

Everything is real but the clock: throwaway keys, a repository, a fleet in
SQLite with one ed25519 key per device, two waves whose plan the offline
key signed, the update server (:func:`tufwaves.http.create_app`) on
127.0.0.1, simulated devices (:class:`tufwaves.simulator.Fleet`) that fetch
their bundles, decide with the device verifier, download, install and send
signed reports, and the rollout controller
(:func:`tufwaves.server.controller.advance`) deciding from those reports.

One :class:`SimulationClock` is the time of all of them: the repository
signs by it, the server serves by it, the devices decide and date their
reports by it, and the controller evaluates by it. It moves
:data:`TICK_SECONDS` per tick; each tick the devices that are due poll
(each every :data:`POLL_TICKS` ticks), then the controller takes one
decision per wave. So hours of rollout take seconds.

Wave ``wave-a`` is healthy and goes through its three stages (canary 5%,
half 50%, everyone 100%) to ``complete``; in wave ``wave-b`` a fifth of the
installs fail and its canary's abort gate cancels it. The timeline is
printed as it happens and the picture (:mod:`tufwaves.demo.picture`) shows,
per wave, allowed, installed and failed devices over time with the stage
starts, as the server's operator API reported them at each tick.
"""

from __future__ import annotations

import json
import os
import secrets
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from tufwaves._files import atomic_write
from tufwaves.demo.picture import Sample, StageMark, WaveSeries, render_svg
from tufwaves.device.plan import format_time
from tufwaves.errors import InputError, StorageError
from tufwaves.http import create_app
from tufwaves.http.serve import ServerThread
from tufwaves.server.controller import Decision, advance
from tufwaves.server.keys import PASSPHRASE_ENV, generate_key, load_key_ref, write_key_pair
from tufwaves.server.metadata import expiry
from tufwaves.server.repository import Repository
from tufwaves.server.rollout import load_wave, open_inventory, sign_stage
from tufwaves.server.roots import create_repository
from tufwaves.server.waves import init_wave
from tufwaves.simulator import Fleet, SimulatedDevice, identities, write_fleet

__all__ = [
    "MIN_DEVICES",
    "POLL_TICKS",
    "TICK_SECONDS",
    "SimulatedWave",
    "SimulationClock",
    "SimulationResult",
    "TimelineEvent",
    "run_simulation",
    "simulation_plan",
]

TAG: Final = "production"
TICK_SECONDS: Final = 600
"""Simulated seconds per tick (10 minutes)."""
POLL_TICKS: Final = 3
"""Each device polls once every this many ticks (every 30 simulated minutes)."""
MAX_TICKS: Final = 288
"""The simulation gives up after this many ticks (two simulated days)."""
MIN_DEVICES: Final = 120
"""The smallest fleet: 60 devices per wave, so each canary has at least 3."""
MAX_DEVICES: Final = 20_000


@dataclass(frozen=True)
class SimulatedWave:
    """One wave of the simulation and the fleet it is for.

    Attributes:
        name: The wave's name.
        version: Its release version.
        hardware_id: The hardware of its half of the fleet.
        failure_rate: The share of its installs that fail.
        expected: The rollout state it should end in.
    """

    name: str
    version: int
    hardware_id: str
    failure_rate: float
    expected: str


WAVES: Final = (
    SimulatedWave("wave-a", 42, "imx8mm-lpddr4", 0.0, "complete"),
    SimulatedWave("wave-b", 43, "rpi4", 0.2, "cancelled"),
)


def simulation_plan() -> dict[str, Any]:
    """The PLAN.json both waves are signed with.

    Returns:
        Three stages, canary 5%, half 50%, everyone 100%: each aborts (cancel)
        when more than 10% of at least 3 reports are failures; half and
        everyone start 1 h after the previous stage when at least 90% of its
        devices installed (with at least 3 reports); a device silent 2 h after
        its ripple counts as failed.
    """
    abort = {"max_failed": "10%", "min_reports": 3, "action": "cancel"}
    success = {"min_installed": "90%", "min_reports": 3}
    return {
        "stages": [
            {"name": "canary", "size": "5%", "timeout": "2h", "abort": abort},
            {
                "name": "half",
                "size": "50%",
                "soak": "1h",
                "timeout": "2h",
                "success": success,
                "abort": abort,
            },
            {
                "name": "everyone",
                "size": "100%",
                "soak": "1h",
                "timeout": "2h",
                "success": success,
                "abort": abort,
            },
        ]
    }


class SimulationClock:
    """The compressed clock: a time that moves only when :meth:`advance` is called."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise InputError("the simulation's start time must be timezone-aware")
        self.start = start.astimezone(UTC).replace(microsecond=0)
        self.now = self.start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: int) -> None:
        """Move the time ``seconds`` forward."""
        self.now += timedelta(seconds=seconds)

    @property
    def elapsed(self) -> int:
        """Simulated seconds since the start."""
        return int((self.now - self.start).total_seconds())


@dataclass(frozen=True)
class TimelineEvent:
    """One line of the timeline.

    Attributes:
        at: The simulated time.
        minutes: Minutes since the start.
        wave: The wave.
        kind: ``started`` (a stage's ripple signed), ``gate`` (new gate
            figures), ``advanced``, ``complete``, ``cancelled``, ``paused``
            or ``refused``.
        text: What happened, for people.
        data: The figures or decision behind it (JSON types).
    """

    at: datetime
    minutes: int
    wave: str
    kind: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """The event as a timeline line."""
        return f"T+{self.minutes // 60:02d}:{self.minutes % 60:02d}  {self.wave:<7} {self.text}"

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "at": format_time(self.at),
            "minutes": self.minutes,
            "wave": self.wave,
            "kind": self.kind,
            "text": self.text,
            "data": self.data,
        }


@dataclass
class SimulationResult:
    """What the simulation did (``to_dict`` is the ``--json`` output).

    Attributes:
        directory: Where the keys, repository and fleet are.
        repo: The repository.
        picture: The SVG written.
        devices: The fleet size.
        events: The timeline.
        series: Per wave, the samples the picture shows.
        waves: Per wave, how it ended: ``status``, ``stage``,
            ``stage_name``, ``stages_started`` and ``expected``.
        ticks: How many ticks ran.
        start: The simulated start time.
    """

    directory: Path
    repo: Path
    picture: Path
    devices: int
    start: datetime
    events: list[TimelineEvent] = field(default_factory=list)
    series: list[WaveSeries] = field(default_factory=list)
    waves: dict[str, dict[str, Any]] = field(default_factory=dict)
    ticks: int = 0

    @property
    def as_planned(self) -> bool:
        """Every wave ended as expected (wave-a complete, wave-b cancelled)."""
        return all(w["status"] == w["expected"] for w in self.waves.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "directory": str(self.directory),
            "repo": str(self.repo),
            "picture": str(self.picture),
            "devices": self.devices,
            "start": format_time(self.start),
            "ticks": self.ticks,
            "simulated_minutes": self.ticks * TICK_SECONDS // 60,
            "as_planned": self.as_planned,
            "waves": self.waves,
            "timeline": [e.to_dict() for e in self.events],
        }


@contextmanager
def _throwaway_passphrase() -> Iterator[bytes]:
    previous = os.environ.get(PASSPHRASE_ENV)
    os.environ.setdefault(PASSPHRASE_ENV, secrets.token_urlsafe(16))
    try:
        yield os.environ[PASSPHRASE_ENV].encode()
    finally:
        if previous is None:
            os.environ.pop(PASSPHRASE_ENV, None)


def _check_devices(devices: int) -> None:
    if not MIN_DEVICES <= devices <= MAX_DEVICES:
        raise InputError(
            f"--devices must be {MIN_DEVICES} to {MAX_DEVICES:,} for the simulation "
            f"(half the fleet per wave; each canary needs at least 3 devices), not {devices}"
        )


def run_simulation(
    directory: Path,
    *,
    devices: int = 200,
    picture: Path,
    start: datetime | None = None,
    say: Callable[[str], None] = print,
) -> SimulationResult:
    """Run the simulation in ``directory`` (new or empty) and write the picture.

    Args:
        directory: For keys, repository, fleet file and artifacts.
        devices: The fleet size (half per wave), 120 to 20,000.
        picture: The SVG to write.
        start: The simulated start time (default: now).
        say: Gets each timeline line as it happens.

    Returns:
        The timeline, the samples and how each wave ended.

    Raises:
        InputError: ``devices`` out of range.
        StorageError: ``directory`` is not empty.
    """
    _check_devices(devices)
    clock = SimulationClock(start or datetime.now(UTC))
    if directory.exists() and any(directory.iterdir()):
        raise StorageError(f"{directory} is not empty; give the simulation a new directory")
    directory.mkdir(parents=True, exist_ok=True)
    result = SimulationResult(directory, directory / "repo", picture, devices, clock.start)
    with _throwaway_passphrase() as secret:
        repo, fleets = _setup(directory, result, clock, secret, devices)
        _run(repo, clock, fleets, result, say)
    atomic_write(picture, render_svg(result.series, "tufwaves demo --simulate"))
    return result


def _setup(
    directory: Path,
    result: SimulationResult,
    clock: SimulationClock,
    secret: bytes,
    devices: int,
) -> tuple[Repository, dict[str, list[SimulatedDevice]]]:
    """Keys, repository, fleet and the two signed waves."""
    keys = directory / "keys"
    for name in ("root", "release"):
        write_key_pair(name, keys, generate_key("ed25519"), secret)
    repo, _ = create_repository(
        result.repo,
        root_keys=[load_key_ref(str(keys / "root.key"))],
        root_threshold=1,
        targets_keys=[load_key_ref(str(keys / "release.key"))],
        targets_threshold=1,
        clock=clock,
    )
    repo.clock = clock
    fleets = {
        w.name: identities(
            devices // 2 + (devices % 2 if i == 0 else 0), w.name, w.hardware_id, TAG
        )
        for i, w in enumerate(WAVES)
    }
    fleet_file = directory / "fleet.csv"
    write_fleet(fleet_file, [d for f in fleets.values() for d in f], installed_version=41)
    with open_inventory(repo) as inv:
        inv.import_file(fleet_file)
    for w in WAVES:
        artifact = directory / f"firmware-{w.version}-{w.hardware_id}.img"
        atomic_write(artifact, f"tufwaves simulated firmware {w.version}\n".encode())
        init_wave(
            repo,
            w.name,
            w.version,
            TAG,
            artifacts=[artifact],
            hardware_ids=[w.hardware_id],
            expires=expiry(days=30, start=clock()),
            keys=[load_key_ref(str(keys / "release.key"))],
            plan=simulation_plan(),
        )
    return repo, fleets


class _Operator:
    """Reads the server's operator API (``GET /v1/waves/{wave}``) with the token."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token

    def wave(self, name: str) -> dict[str, Any]:
        req = urllib.request.Request(  # noqa: S310 - the loopback server started here
            f"{self.url}/v1/waves/{name}", headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=60) as r:  # noqa: S310 - loopback
            data: dict[str, Any] = json.loads(r.read())
        return data


def _sample(at: datetime, detail: dict[str, Any]) -> Sample:
    stages = detail["plan"]["stages"]
    return Sample(
        at,
        max((int(s["allowed"]) for s in stages if s["allowed"] is not None), default=0),
        sum(int(s["installed"]) for s in stages),
        sum(int(s["failed"]) for s in stages),
    )


def _pct(ppm: int | None) -> str:
    return "n/a" if ppm is None else f"{ppm / 10_000:.1f}%"


def _figures_text(decision: Decision) -> str:
    ev = decision.evaluation
    f = ev.figures
    text = (
        f"gate of stage {ev.stage} ({ev.stage_name}): {f.offered} offered, {f.reported} "
        f"reported, {f.installed} installed ({_pct(f.installed_ppm)}), {f.failures} failed "
        f"({_pct(f.failed_ppm)}) -> {ev.action}"
    )
    return text + (f" ({ev.reason})" if ev.reason else "")


class _Run:
    """One simulation's state: the timeline so far and what was printed last."""

    def __init__(
        self,
        repo: Repository,
        clock: SimulationClock,
        result: SimulationResult,
        say: Callable[[str], None],
    ) -> None:
        self.repo = repo
        self.clock = clock
        self.result = result
        self.say = say
        self.last: dict[str, tuple[Any, ...]] = {}

    def event(self, wave: str, kind: str, text: str, data: dict[str, Any] | None = None) -> None:
        e = TimelineEvent(
            self.clock(), self.clock.elapsed // 60, wave, kind, text, dict(data or {})
        )
        self.result.events.append(e)
        self.say(e.line())

    def decided(self, decision: Decision) -> None:
        ev = decision.evaluation
        f = ev.figures
        key = (ev.stage, f.offered, f.reported, f.installed, f.failures, ev.action, ev.reason)
        if self.last.get(decision.wave) != key:
            self.last[decision.wave] = key
            self.event(decision.wave, "gate", _figures_text(decision), ev.figures.to_dict())
        data = decision.to_dict() | {"evaluation": None}
        if decision.refused:
            self.event(decision.wave, "refused", f"refused: {decision.refused}", data)
        if not decision.acted:
            return
        if decision.action == "advance":
            wave = load_wave(self.repo, decision.wave)
            plan = wave.plan
            assert plan is not None  # noqa: S101 - the simulation's waves are planned
            stage = wave.current_stage or 1
            self.event(
                decision.wave,
                "started",
                f"advanced: stage {stage} ({plan.stage(stage).name}) started, ripple "
                f"{decision.ripple} signed for {decision.devices} devices "
                f"(cap {plan.cap(stage)})",
                data,
            )
        elif decision.action == "complete":
            self.event(
                decision.wave,
                "complete",
                "complete: signed by the controller; every device of the wave may install",
                data,
            )
        else:
            why = "; ".join(r.message for r in ev.reasons)
            self.event(
                decision.wave,
                "cancelled" if decision.action == "cancel" else "paused",
                f"{'cancelled' if decision.action == 'cancel' else 'paused'} by the abort "
                f"gate of stage {ev.stage} ({ev.stage_name}): {why}",
                data,
            )


def _run(
    repo: Repository,
    clock: SimulationClock,
    fleets: dict[str, list[SimulatedDevice]],
    result: SimulationResult,
    say: Callable[[str], None],
) -> None:
    run = _Run(repo, clock, result, say)
    token = secrets.token_urlsafe(24)
    samples: dict[str, list[Sample]] = {w.name: [] for w in WAVES}
    everyone = [d for f in fleets.values() for d in f]
    with (
        open_inventory(repo) as inv,
        ServerThread(create_app(repo.path, operator_token=token, clock=clock)) as server,
    ):
        operator = _Operator(server.url, token)
        for w in WAVES:
            first = sign_stage(repo, w.name, 1, inv=inv)
            plan = load_wave(repo, w.name).plan
            assert plan is not None  # noqa: S101 - signed with simulation_plan()
            run.event(
                w.name,
                "started",
                f"stage 1 (canary) started by the operator: ripple {first.index} signed for "
                f"{len(first.uuids)} devices (cap {plan.cap(1)} of {plan.eligible}); "
                f"{w.failure_rate:.0%} of its installs will fail",
                {"ripple": first.index, "devices": len(first.uuids)},
            )
            samples[w.name].append(_sample(clock(), operator.wave(w.name)))
        with Fleet(
            server.url,
            everyone,
            concurrency=8,
            wave_failures={w.name: w.failure_rate for w in WAVES},
            installed_version=41,
            root=repo.role_bytes("root", 1),
            rng_seed=42,
            clock=clock,
        ) as fleet:
            active = [w.name for w in WAVES]
            for tick in range(1, MAX_TICKS + 1):
                result.ticks = tick
                clock.advance(TICK_SECONDS)
                fleet.poll([d for d in everyone if (d.index + tick) % POLL_TICKS == 0])
                for name in list(active):
                    run.decided(advance(repo, inv, name, source="controller"))
                    if load_wave(repo, name).status != "active":
                        active.remove(name)
                for w in WAVES:
                    samples[w.name].append(_sample(clock(), operator.wave(w.name)))
                if not active:
                    break
        details = {w.name: operator.wave(w.name) for w in WAVES}
    for w in WAVES:
        detail = details[w.name]
        plan = detail["plan"]
        marks = [
            StageMark(
                datetime.strptime(s["started"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC),
                f"{s['number']} {s['name']}",
                int(s["number"]),
            )
            for s in plan["stages"]
            if s["started"] is not None
        ]
        end = next((e for e in reversed(result.events) if e.wave == w.name), None)
        if detail["status"] in ("complete", "cancelled") and end is not None:
            marks.append(StageMark(end.at, str(detail["status"]), end=True))
        result.series.append(WaveSeries(w.name, tuple(samples[w.name]), tuple(marks)))
        result.waves[w.name] = {
            "status": detail["status"],
            "expected": w.expected,
            "stage": plan["current_stage"],
            "stage_name": plan["current_stage_name"],
            "stages_started": [s["name"] for s in plan["stages"] if s["started"] is not None],
            "failure_rate": w.failure_rate,
            "allowed": samples[w.name][-1].allowed,
            "installed": samples[w.name][-1].installed,
            "failed": samples[w.name][-1].failed,
        }
