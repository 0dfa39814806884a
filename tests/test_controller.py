"""The rollout controller on real repositories: evaluate, advance, abort, race."""

from __future__ import annotations

import json
import threading
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner
from starlette.testclient import TestClient

from tests.conftest import KeyStore, RepoFactory, publish_wave
from tests.postgres import pg_dsn  # noqa: F401 - fixture
from tufwaves.cli import main
from tufwaves.device.report import sign_report
from tufwaves.errors import InputError
from tufwaves.http import create_app
from tufwaves.server import (
    ControllerLoop,
    Decision,
    Repository,
    advance,
    advance_all,
    evaluate,
    load_wave,
    open_inventory,
    planned_waves,
    resume,
    sign_stage,
)
from tufwaves.server.inventory import DeviceRow, Inventory
from tufwaves.server.inventory_migration import use_inventory
from tufwaves.server.metadata import rollout_info, rollout_role
from tufwaves.server.reports import accept_report

T0 = datetime.now(UTC).replace(microsecond=0)
FLEET_SIZE = 20
SIGNERS = [CryptoSigner.generate_ed25519() for _ in range(FLEET_SIZE + 1)]
OUTSIDER = FLEET_SIZE  # in the inventory, other hardware: never offered


def dev(n: int) -> str:
    return str(uuidlib.UUID(int=n * 0x9E3779B97F4A7C15 + 3))


def public(n: int) -> str:
    return str(SIGNERS[n].public_key.to_dict()["keyval"]["public"])


FLEET = [
    DeviceRow(dev(i), "hw1", "prod", frozenset({"eu" if i % 2 == 0 else "us"}), 5)
    for i in range(FLEET_SIZE)
] + [DeviceRow(dev(OUTSIDER), "hw2", "prod", frozenset(), 5)]


class Counter:
    def __init__(self) -> None:
        self.value = 0

    def next(self) -> int:
        self.value += 1
        return self.value


COUNTER = Counter()


def envelope(
    n: int, status: str, code: str | None = None, signer: CryptoSigner | None = None
) -> bytes:
    fields: dict[str, Any] = {}
    if status == "installed":
        fields["installed_version"] = 10
    if status == "failed":
        fields["code"] = code or "simulated-failure"
    report = sign_report(
        signer or SIGNERS[n], device=dev(n), wave="w1", version=10, status=status,
        counter=COUNTER.next(), **fields,
    )  # fmt: skip
    return report.to_bytes()


@dataclass
class World:
    repo: Repository
    inv: Inventory
    now: datetime

    def at(self, delta: timedelta) -> None:
        self.now = T0 + delta

    def send(self, n: int, status: str, code: str | None = None) -> None:
        accept_report(self.repo, self.inv, self.repo.state(), dev(n), envelope(n, status, code))

    def members(self, stage: int) -> list[int]:
        """The device numbers stage ``stage``'s ripples offered."""
        wave = load_wave(self.repo, "w1")
        by_uuid = {dev(i): i for i in range(FLEET_SIZE + 1)}
        out = []
        for index, (s, _size) in enumerate(wave.accounting, 1):
            if s == stage:
                out += [by_uuid[u] for u in self.inv.ripple_members("w1", index)]
        return sorted(out)

    def rollout_version(self) -> int:
        return self.repo.load_targets(rollout_role("w1"), self.repo.state()).signed.version

    def audit(self, action: str) -> list[dict[str, Any]]:
        return [e.arguments_data for e in self.inv.audit_log() if e.action == action]


WorldFactory = Callable[..., World]


@pytest.fixture
def make_world(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> Iterator[WorldFactory]:
    opened: list[Inventory] = []

    def factory(plan: dict[str, Any], *, dsn: str | None = None) -> World:
        repo = make_repo()
        if dsn is not None:
            use_inventory(repo, dsn)
        inv = open_inventory(repo)
        opened.append(inv)
        w = World(repo, inv, T0)
        repo.clock = lambda: w.now
        inv.import_rows(FLEET)
        for n in range(FLEET_SIZE + 1):
            inv.set_public_key(dev(n), public(n))
        publish_wave(repo, keystore, artifact, plan=plan)
        return w

    yield factory
    for inv in opened:
        inv.close()


THREE_STAGES: dict[str, Any] = {
    "stages": [
        {"name": "canary", "size": {"devices": 3}, "timeout": "1h",
         "abort": {"max_failed": "25%", "min_reports": 3, "codes": ["hash-mismatch"],
                   "action": "cancel"}},
        {"name": "half", "size": "50%", "soak": "2h",
         "success": {"min_installed": "100%", "min_reports": 3},
         "abort": {"max_failed": "20%", "min_reports": 5, "action": "pause"}},
        {"name": "all", "size": "100%", "success": {"min_installed": "90%", "min_reports": 5}},
    ]
}  # fmt: skip


def test_a_planned_wave_goes_from_canary_to_complete(make_world: WorldFactory) -> None:
    w = make_world(THREE_STAGES)
    assert planned_waves(w.repo) == ["w1"]
    first = advance(w.repo, w.inv, "w1")
    assert (first.action, first.acted, first.evaluation.reason) == ("none", False, "not-started")
    sign_stage(w.repo, "w1", 1, inv=w.inv)
    canaries = w.members(1)
    assert len(canaries) == 3
    for n in canaries:
        w.send(n, "downloading")
    waiting = advance(w.repo, w.inv, "w1")
    assert (waiting.action, waiting.evaluation.reason) == ("wait", "too-few-reports")
    assert waiting.evaluation.figures.in_progress == 3
    for n in canaries:
        w.send(n, "installed")
    soaking = advance(w.repo, w.inv, "w1")
    assert (soaking.action, soaking.evaluation.reason) == ("wait", "soak")
    assert not w.audit("advance")  # waiting is not a decision
    w.at(timedelta(hours=2))
    version = w.rollout_version()
    moved = advance(w.repo, w.inv, "w1")
    assert (moved.action, moved.acted, moved.ripple, moved.devices) == ("advance", True, 2, 7)
    assert w.rollout_version() == version + 1
    assert load_wave(w.repo, "w1").accounting == ((1, 3), (2, 7))
    (entry,) = w.audit("advance")
    assert entry["action"] == "advance" and entry["next_stage"] == 2 and entry["ripple"] == 2
    assert entry["evaluation"]["figures"]["installed"] == 3
    assert entry["evaluation"]["figures"]["offered"] == 3
    assert moved.audit_id == w.inv.audit_log()[-1].id
    half = w.members(2)
    for n in half:
        w.send(n, "installed")
    third = advance(w.repo, w.inv, "w1")
    assert (third.action, third.ripple, third.devices) == ("advance", 3, 10)
    waiting = advance(w.repo, w.inv, "w1")  # the last stage's own gate holds completion
    assert (waiting.action, waiting.evaluation.reason) == ("wait", "too-few-reports")
    for n in w.members(3):
        w.send(n, "installed")
    done = advance(w.repo, w.inv, "w1")
    assert (done.action, done.acted) == ("complete", True)
    assert load_wave(w.repo, "w1").status == "complete"
    assert [e["action"] for e in w.audit("advance")] == ["advance", "advance", "complete"]
    assert w.audit("complete") == [{"wave": "w1"}]
    after = advance(w.repo, w.inv, "w1")
    assert (after.action, after.evaluation.reason) == ("none", "complete")
    assert planned_waves(w.repo) == []


def test_dry_run_signs_and_audits_nothing(make_world: WorldFactory) -> None:
    w = make_world(THREE_STAGES)
    sign_stage(w.repo, "w1", 1, inv=w.inv)
    for n in w.members(1):
        w.send(n, "installed")
    w.at(timedelta(hours=3))
    version, log = w.rollout_version(), w.inv.audit_log()
    preview = advance(w.repo, w.inv, "w1", dry_run=True)
    assert (preview.action, preview.acted, preview.dry_run, preview.ripple) == (
        "advance", False, True, 2,
    )  # fmt: skip
    assert (w.rollout_version(), w.inv.audit_log()) == (version, log)
    data = preview.to_dict()
    assert set(data) == {
        "wave", "action", "acted", "dry_run", "ripple", "devices", "refused", "audit_id",
        "evaluation",
    }  # fmt: skip
    assert data["evaluation"] == evaluate(w.repo, w.inv, "w1").to_dict()


def test_a_listed_failure_code_cancels_through_the_signed_cancel(make_world: WorldFactory) -> None:
    w = make_world(THREE_STAGES)
    sign_stage(w.repo, "w1", 1, inv=w.inv)
    a, b, _ = w.members(1)
    w.send(a, "installed")
    w.send(b, "failed", "hash-mismatch")
    decision = advance(w.repo, w.inv, "w1", source="controller")
    assert (decision.action, decision.acted, decision.evaluation.reason) == (
        "cancel", True, "abort-code",
    )  # fmt: skip
    wave = load_wave(w.repo, "w1")
    assert wave.status == "cancelled"
    roll = w.repo.load_targets(rollout_role("w1"), w.repo.state())
    assert rollout_info(roll).state == "cancelled"
    assert w.audit("cancel") == [{"wave": "w1"}]
    (entry,) = w.audit("controller")
    assert entry["evaluation"]["figures"]["codes"] == ["hash-mismatch"]
    key_ids = next(e.key_ids for e in w.inv.audit_log() if e.action == "controller")
    assert key_ids == tuple(sorted(roll.signatures))
    assert advance(w.repo, w.inv, "w1").evaluation.reason == "cancelled"


def test_silent_devices_time_out_and_pause_the_wave(make_world: WorldFactory) -> None:
    plan = {
        "stages": [
            {"name": "canary", "size": {"devices": 4}, "timeout": "30m",
             "abort": {"max_failed": "25%", "min_reports": 4}},
            {"name": "rest", "size": "100%", "not_before": "2999-01-01T00:00:00Z"},
        ]
    }  # fmt: skip
    w = make_world(plan)
    sign_stage(w.repo, "w1", 1, inv=w.inv)
    a, b, c, _silent = w.members(1)
    w.send(a, "installed")
    w.send(b, "installed")
    w.send(c, "failed")
    w.at(timedelta(minutes=30))
    at_timeout = advance(w.repo, w.inv, "w1")  # 3 reports: too few to judge the rate
    assert (at_timeout.action, at_timeout.evaluation.reason) == ("wait", "not-before")
    assert at_timeout.evaluation.figures.timed_out == 0
    w.at(timedelta(minutes=30, seconds=1))
    paused = advance(w.repo, w.inv, "w1", source="controller")
    f = paused.evaluation.figures
    assert (f.timed_out, f.reported, f.failures) == (1, 4, 2)
    assert (paused.action, paused.acted, paused.evaluation.reason) == ("pause", True, "abort-rate")
    assert load_wave(w.repo, "w1").status == "paused"
    assert advance(w.repo, w.inv, "w1").evaluation.reason == "paused"
    resume(w.repo, w.inv, "w1")  # the gate still trips: paused again
    again = advance(w.repo, w.inv, "w1", source="controller")
    assert (again.action, again.acted) == ("pause", True)
    assert [e["action"] for e in w.audit("controller")] == ["pause", "pause"]


def test_forged_unsigned_and_unoffered_reports_change_nothing(make_world: WorldFactory) -> None:
    w = make_world(THREE_STAGES)
    sign_stage(w.repo, "w1", 1, inv=w.inv)
    canary = w.members(1)[0]
    client = TestClient(create_app(w.repo.path))
    headers = {"Content-Type": "application/json"}

    def post(n: int, body: bytes) -> int:
        return client.post(
            f"/v1/devices/{dev(n)}/reports", content=body, headers=headers
        ).status_code

    assert post(canary, envelope(canary, "installed")) == 201
    before = evaluate(w.repo, w.inv, "w1").to_dict()
    assert before["figures"]["installed"] == 1
    forged = envelope(canary, "failed", "hash-mismatch", signer=CryptoSigner.generate_ed25519())
    assert post(canary, forged) == 403  # bad-signature
    tampered = json.loads(envelope(canary, "installed"))
    tampered["signed"].update(status="failed", code="hash-mismatch", installed_version=None)
    assert post(canary, json.dumps(tampered).encode()) == 403  # bad-signature
    unsigned = dict(tampered, signatures=[])
    assert post(canary, json.dumps(unsigned).encode()) == 400  # bad-report
    outsider = next(n for n in range(FLEET_SIZE) if n not in w.members(1))
    assert post(outsider, envelope(outsider, "failed", "hash-mismatch")) == 403  # not-offered
    assert post(OUTSIDER, envelope(OUTSIDER, "failed", "hash-mismatch")) == 403
    assert evaluate(w.repo, w.inv, "w1").to_dict() == before
    assert advance(w.repo, w.inv, "w1").action == "wait"
    assert post(canary, envelope(canary, "failed", "hash-mismatch")) == 201  # the real thing
    assert advance(w.repo, w.inv, "w1").action == "cancel"


def test_reports_from_an_earlier_stage_do_not_abort_the_current_one(
    make_world: WorldFactory,
) -> None:
    w = make_world(THREE_STAGES)
    sign_stage(w.repo, "w1", 1, inv=w.inv)
    for n in w.members(1):
        w.send(n, "installed")
    w.at(timedelta(hours=2))
    assert advance(w.repo, w.inv, "w1").action == "advance"
    for n in w.members(1):
        w.send(n, "rolled_back")  # stage 1's devices: not stage 2's abort gate
    ev = evaluate(w.repo, w.inv, "w1")
    assert (ev.stage, ev.action, ev.reason) == (2, "wait", "too-few-reports")
    assert (ev.figures.failed, ev.figures.ignored) == (0, 3)
    assert [(f.stage, f.failed) for f in ev.stage_figures] == [(1, 3), (2, 0)]


def test_a_refused_action_is_audited_and_nothing_signed(make_world: WorldFactory) -> None:
    plan = {
        "stages": [
            {"name": "canary", "size": {"devices": 2}},
            {"name": "lab", "size": {"devices": 4}, "group": "nobody"},
        ]
    }
    w = make_world(plan)
    sign_stage(w.repo, "w1", 1, inv=w.inv)
    version = w.rollout_version()
    decision = advance(w.repo, w.inv, "w1")
    assert (decision.action, decision.acted) == ("advance", False)
    assert decision.refused is not None and "no eligible device" in decision.refused
    assert w.rollout_version() == version
    (entry,) = w.audit("advance")
    assert entry["refused"] == decision.refused and entry["ripple"] is None


def test_advance_all_watches_every_active_planned_wave(
    make_world: WorldFactory, keystore: KeyStore, artifact: Path
) -> None:
    w = make_world(
        {"stages": [{"name": "a", "size": {"devices": 1}}, {"name": "b", "size": "100%"}]}
    )
    publish_wave(w.repo, keystore, artifact, name="unplanned", version=11)
    sign_stage(w.repo, "w1", 1, inv=w.inv)
    decisions = advance_all(w.repo, w.inv)
    assert [(d.wave, d.action, d.acted) for d in decisions] == [("w1", "advance", True)]
    assert [(d.wave, d.action) for d in advance_all(w.repo, w.inv)] == [("w1", "complete")]
    assert advance_all(w.repo, w.inv) == []
    with pytest.raises(InputError, match="no plan"):
        evaluate(w.repo, w.inv, "unplanned")
    with pytest.raises(InputError, match="source"):
        advance(w.repo, w.inv, "w1", source="cron")


# -- two controllers racing ----------------------------------------------------


def _race(world: World, controllers: int) -> list[Decision]:
    """``controllers`` threads, each with its own Repository and inventory, advance at once."""
    barrier = threading.Barrier(controllers)
    decisions: list[Decision] = []
    errors: list[BaseException] = []
    guard = threading.Lock()

    def run() -> None:
        try:
            repo = Repository.open(world.repo.path, clock=lambda: world.now)
            with open_inventory(repo) as inv:
                barrier.wait()
                decision = advance(repo, inv, "w1", source="controller")
            with guard:
                decisions.append(decision)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(controllers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return decisions


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_two_controllers_never_double_advance(
    make_world: WorldFactory, backend: str, request: pytest.FixtureRequest
) -> None:
    dsn = request.getfixturevalue("pg_dsn") if backend == "postgres" else None
    plan = {
        "stages": [
            {"name": "a", "size": {"devices": 2}},
            {"name": "b", "size": {"devices": 6}, "success": {"min_installed": "100%"}},
            {"name": "c", "size": "100%", "success": {"min_installed": "100%"}},
        ]
    }
    w = make_world(plan, dsn=dsn)
    assert type(w.inv).__name__ == ("PostgresInventory" if dsn else "SqliteInventory")
    sign_stage(w.repo, "w1", 1, inv=w.inv)
    for n in w.members(1):
        w.send(n, "installed")
    version = w.rollout_version()
    decisions = _race(w, 4)
    acted = [d for d in decisions if d.acted]
    assert [(d.action, d.ripple) for d in acted] == [("advance", 2)]
    others = [(d.action, d.evaluation.stage, d.evaluation.reason) for d in decisions if not d.acted]
    assert others == [("wait", 2, "too-few-reports")] * 3  # they saw the new state
    assert w.rollout_version() == version + 1
    assert load_wave(w.repo, "w1").accounting == ((1, 2), (2, 4))
    assert [e["action"] for e in w.audit("controller")] == ["advance"]
    assert len(w.audit("stage")) == 2


# -- the command line and the server -------------------------------------------

CLI_PLAN: dict[str, Any] = {
    "stages": [
        {"name": "canary", "size": {"devices": 2},
         "abort": {"max_failed": "40%", "min_reports": 2, "action": "cancel"}},
        {"name": "all", "size": "100%", "success": {"min_installed": "100%", "min_reports": 2}},
    ]
}  # fmt: skip


def _cli_world(make_world: WorldFactory) -> tuple[World, list[str], TestClient]:
    w = make_world(CLI_PLAN)
    w.repo.clock = Repository.open(w.repo.path).clock  # the CLI's clock: real time
    return w, ["--repo", str(w.repo.path)], TestClient(create_app(w.repo.path))


def _post(client: TestClient, n: int, status: str, code: str | None = None) -> None:
    response = client.post(
        f"/v1/devices/{dev(n)}/reports",
        content=envelope(n, status, code),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text


def test_waves_advance_cli(make_world: WorldFactory, capsys: pytest.CaptureFixture[str]) -> None:
    w, r, client = _cli_world(make_world)
    assert main(["waves", "rollout", "w1", *r, "--stage", "1", "--json"]) == 0
    capsys.readouterr()
    assert main(["waves", "advance", "w1", *r, "--dry-run", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert (out["action"], out["acted"], out["exit_code"]) == ("wait", False, 1)
    assert out["evaluation"]["reasons"][0]["code"] == "too-few-reports"
    assert out["evaluation"]["figures"]["silent"] == 2
    for n in w.members(1):
        _post(client, n, "installed")
    version, log = w.rollout_version(), w.inv.audit_log()
    assert main(["waves", "advance", "w1", *r, "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "stage 1 devices: 2 offered, 2 reported (2 installed, 0 failed, 0 timed out)" in text
    assert "pass  success.min_installed (stage 2): 2 of 2 device(s) of stage 1 installed" in text
    assert "pass  abort.max_failed (stage 1)" in text
    assert "decision: would sign stage 2 (ripple 2) (dry run: nothing signed)" in text
    assert (w.rollout_version(), w.inv.audit_log()) == (version, log)
    assert main(["waves", "advance", "w1", *r, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["action"], out["acted"], out["ripple"], out["devices"]) == ("advance", True, 2, 18)
    assert "error" not in out
    assert w.rollout_version() == version + 1
    (entry,) = w.audit("advance")
    assert entry["evaluation"] == out["evaluation"]
    assert main(["waves", "advance", "w1", *r]) == 1
    captured = capsys.readouterr()
    assert "FAIL  success.min_reports (stage 2)" in captured.out
    assert "not advanced (wait)" in captured.err
    for n in w.members(2):
        _post(client, n, "installed")
    assert main(["waves", "advance", "w1", *r]) == 0
    assert "decision: complete the wave: signed and published" in capsys.readouterr().out
    assert load_wave(w.repo, "w1").status == "complete"
    assert main(["waves", "advance", "w1", *r, "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["evaluation"]["reasons"][0]["code"] == "complete"


def test_waves_advance_cli_cancels_and_refuses_bad_input(
    make_world: WorldFactory, capsys: pytest.CaptureFixture[str], keystore: KeyStore,
    artifact: Path,
) -> None:  # fmt: skip
    w, r, client = _cli_world(make_world)
    assert main(["waves", "rollout", "w1", *r, "--stage", "1"]) == 0
    a, b = w.members(1)
    _post(client, a, "installed")
    _post(client, b, "failed", "disk-full")
    capsys.readouterr()
    assert main(["waves", "advance", "w1", *r]) == 0
    text = capsys.readouterr().out
    assert "FAIL  abort.max_failed (stage 1): 1 failure(s) of 2 report(s) (50%)" in text
    assert "failure codes: disk-full" in text
    assert "decision: cancel the wave (abort gate): signed and published" in text
    assert load_wave(w.repo, "w1").status == "cancelled"
    assert main(["waves", "advance", "nope", *r, "--json"]) == 2
    assert "no published wave nope" in json.loads(capsys.readouterr().out)["error"]
    publish_wave(w.repo, keystore, artifact, name="plain", version=11)
    assert main(["waves", "advance", "plain", *r]) == 2
    assert "has no plan" in capsys.readouterr().err


def test_controller_once(make_world: WorldFactory, capsys: pytest.CaptureFixture[str]) -> None:
    w, r, client = _cli_world(make_world)
    assert main(["controller", *r, "--once", "--json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["decisions"][0]["evaluation"]["reasons"][0]["code"] == "not-started"
    sign_stage(w.repo, "w1", 1, inv=w.inv)
    for n in w.members(1):
        _post(client, n, "installed")
    assert main(["controller", *r, "--once"]) == 0
    assert capsys.readouterr().out == "wave w1: signed stage 2 (ripple 2, 18 devices)\n"
    assert [e["action"] for e in w.audit("controller")] == ["advance"]
    with pytest.raises(SystemExit) as usage:
        main(["controller", *r, "--once", "--interval", "0"])
    assert usage.value.code == 2
    assert main(["controller", "--repo", str(w.repo.path / "missing"), "--once"]) == 2
    assert main(["serve", *r, "--controller-interval", "5"]) == 2


def test_a_refused_action_fails_controller_once(
    make_world: WorldFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = {"stages": [{"name": "a", "size": {"devices": 1}},
                       {"name": "b", "size": {"devices": 3}, "group": "nobody"}]}  # fmt: skip
    w = make_world(plan)
    w.repo.clock = Repository.open(w.repo.path).clock
    sign_stage(w.repo, "w1", 1, inv=w.inv)
    assert main(["controller", "--repo", str(w.repo.path), "--once"]) == 1
    assert "advance refused: no eligible device" in capsys.readouterr().out


def test_the_server_pokes_its_controller_after_reports(make_world: WorldFactory) -> None:
    w = make_world(CLI_PLAN)
    sign_stage(w.repo, "w1", 1, inv=w.inv)
    passes: list[list[Decision]] = []
    first, advanced = threading.Event(), threading.Event()

    def on_pass(decisions: list[Decision]) -> None:
        passes.append(decisions)
        first.set()
        if any(d.acted for d in decisions):
            advanced.set()

    # a schedule far away: only the reports' pokes can bring a pass
    loop = ControllerLoop(w.repo.path, interval=3600, debounce=0, clock=lambda: w.now,
                          on_pass=on_pass)  # fmt: skip
    client = TestClient(create_app(w.repo.path, controller=loop))
    with loop:
        assert first.wait(60)  # the pass at start: too few reports
        assert [d.action for d in passes[0]] == ["wait"]
        for n in w.members(1):
            _post(client, n, "installed")
        assert advanced.wait(60)
    assert load_wave(w.repo, "w1").accounting[-1][0] == 2
    assert [e["action"] for e in w.audit("controller")] == ["advance"]
    assert loop.passes == len(passes) >= 2  # the first pass at start, then the pokes
    with pytest.raises(InputError, match="interval"):
        ControllerLoop(w.repo.path, interval=0)
    with pytest.raises(InputError, match="debounce"):
        ControllerLoop(w.repo.path, debounce=-1)
