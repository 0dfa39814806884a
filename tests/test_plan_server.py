"""Planned waves on the server: init --plan, stage-capped rollouts, pause/resume."""

from __future__ import annotations

import json
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import KeyStore, RepoFactory, publish_wave
from tufwaves.cli import main
from tufwaves.errors import InputError, RefusedError
from tufwaves.server import (
    Selector,
    cancel,
    complete,
    load_wave,
    open_inventory,
    pause,
    plan_from_input,
    resume,
    review,
    rollout,
    rotate_online_keys,
    sign_ceremony,
    sign_stage,
    stage_starts,
)
from tufwaves.server.bundler import build_bundle
from tufwaves.server.inventory import DeviceRow
from tufwaves.server.inventory.sqlite import SqliteInventory
from tufwaves.server.metadata import ripple_role, rollout_info, rollout_role
from tufwaves.server.repository import Repository
from tufwaves.server.review import Keyring
from tufwaves.verify import DeviceIdentity, Reason, Verifier

T0 = datetime.now(UTC).replace(microsecond=0)


def dev(n: int) -> str:
    return str(uuidlib.UUID(int=n * 0x9E3779B97F4A7C15 + 1))


def at(hours: float) -> str:
    return (T0 + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


FLEET = [
    DeviceRow(dev(i), "hw1", "prod", frozenset({"eu" if i % 2 == 0 else "us"}), 5)
    for i in range(20)
] + [DeviceRow(dev(99), "hw2", "prod", frozenset(), 5)]  # other hardware: not eligible

PLAN: dict[str, Any] = {
    "stages": [
        {"name": "canary", "size": {"devices": 2}, "not_before": at(-1), "timeout": "30m"},
        {
            "name": "eu-half",
            "size": "50%",
            "group": "eu",
            "not_before": at(24),
            "soak": "2h",
            "success": {"min_installed": "95%", "min_reports": 2},
            "abort": {"max_failed": "5%", "min_reports": 2, "codes": ["hash-mismatch"]},
        },
        {"name": "all", "size": {"percent": "100%"}, "not_before": at(48)},
    ]
}


@dataclass
class World:
    repo: Repository
    inv: SqliteInventory
    now: datetime

    def tick(self, hours: float) -> None:
        self.now = T0 + timedelta(hours=hours)

    def decide(self, uuid: str, hours: float) -> Reason:
        bundle = build_bundle(self.repo, self.inv, uuid)
        verifier = Verifier.from_trusted_root(self.repo.role_bytes("root", 1))
        device = DeviceIdentity(uuid, "hw1", "prod", 5)
        return verifier.decide(bundle, device, T0 + timedelta(hours=hours)).reason


@pytest.fixture
def world(make_repo: RepoFactory, keystore: KeyStore, artifact: Path) -> Iterator[World]:
    repo = make_repo()
    w = World(repo, open_inventory(repo), T0)
    repo.clock = lambda: w.now
    w.inv.import_rows(FLEET)
    publish_wave(repo, keystore, artifact, plan=PLAN)
    yield w
    w.inv.close()


def test_init_counts_eligible_and_signs_the_plan(world: World) -> None:
    plan = load_wave(world.repo, "w1").plan
    assert plan is not None
    assert plan.eligible == 20  # hw1/prod below version 10; hw2 is not counted
    assert [s.cap(plan.eligible) for s in plan.stages] == [2, 10, 20]
    assert plan.stages[1].success is not None
    assert plan.stages[1].success.min_installed_ppm == 950_000
    assert plan.stages[1].soak_seconds == 7200
    assert plan.stages[0].timeout_seconds == 1800
    roll = world.repo.load_targets(rollout_role("w1"), world.repo.state())
    assert rollout_info(roll).accounting == ()


def test_rollout_is_capped_to_the_current_stage(world: World) -> None:
    first = rollout(world.repo, world.inv, "w1", Selector(limit=10))
    assert len(first.uuids) == 2  # stage 1 caps at 2 devices
    with pytest.raises(RefusedError, match="full"):
        rollout(world.repo, world.inv, "w1", Selector(limit=1))
    ripple = world.repo.load_targets(ripple_role("w1", 1), world.repo.state())
    assert ripple.signed.unrecognized_fields["x-tufwaves-ripple"]["stage"] == 1
    roll = world.repo.load_targets(rollout_role("w1"), world.repo.state())
    assert rollout_info(roll).accounting == ((1, 2),)
    assert world.decide(first.uuids[0], 0) is Reason.ALLOWED_RIPPLE


def test_next_stage_waits_for_not_before_and_soak(world: World) -> None:
    sign_stage(world.repo, "w1", 1, inv=world.inv)
    with pytest.raises(RefusedError, match="may not start before"):
        sign_stage(world.repo, "w1", 2, inv=world.inv)
    with pytest.raises(RefusedError, match="stage 3"):
        sign_stage(world.repo, "w1", 3, inv=world.inv)  # stages go one at a time
    world.tick(24)
    result = sign_stage(world.repo, "w1", 2, inv=world.inv)
    members = set(result.uuids)
    assert len(members) == 8  # up to the cumulative 10 devices
    assert all(int(uuidlib.UUID(u)) in {int(uuidlib.UUID(dev(i))) for i in range(0, 20, 2)}
               for u in members)  # fmt: skip
    starts = stage_starts(world.inv, load_wave(world.repo, "w1"))
    assert starts == {1: T0, 2: T0 + timedelta(hours=24)}
    entries = [e for e in world.inv.audit_log() if e.action == "stage"]
    assert [e.arguments_data["stage"] for e in entries] == [1, 2]
    world.tick(25)  # stage 3's not_before (48h) not reached
    with pytest.raises(RefusedError, match="may not start before"):
        sign_stage(world.repo, "w1", 3, inv=world.inv)
    world.tick(48)
    last = sign_stage(world.repo, "w1", 3, inv=world.inv)
    assert len(last.uuids) == 10
    assert world.decide(last.uuids[0], 48) is Reason.ALLOWED_RIPPLE
    assert world.decide(last.uuids[0], 47) is Reason.PLAN_NOT_STARTED


def test_soak_since_previous_stage_start(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> None:
    repo = make_repo()
    now = [T0]
    repo.clock = lambda: now[0]
    plan = {
        "stages": [
            {"name": "a", "size": {"devices": 1}},
            {"name": "b", "size": {"devices": 3}, "soak": "1h"},
        ]
    }
    with open_inventory(repo) as inv:
        inv.import_rows(FLEET)
        publish_wave(repo, keystore, artifact, plan=plan)
        sign_stage(repo, "w1", 1, inv=inv)
        now[0] = T0 + timedelta(minutes=59)
        with pytest.raises(RefusedError, match="soak"):
            sign_stage(repo, "w1", 2, inv=inv)
        now[0] = T0 + timedelta(hours=1)
        assert len(sign_stage(repo, "w1", 2, inv=inv).uuids) == 2


def test_group_of_the_stage_is_enforced(world: World) -> None:
    sign_stage(world.repo, "w1", 1, inv=world.inv)
    world.tick(24)
    with pytest.raises(RefusedError, match="group eu"):
        rollout(world.repo, world.inv, "w1", Selector(group="us"), stage=2)


def test_pause_resume_and_final_states(world: World) -> None:
    first = sign_stage(world.repo, "w1", 1, inv=world.inv)
    pause(world.repo, world.inv, "w1")
    assert world.decide(first.uuids[0], 0) is Reason.WAVE_PAUSED
    with pytest.raises(RefusedError, match="paused"):
        rollout(world.repo, world.inv, "w1", Selector(limit=1))
    with pytest.raises(RefusedError, match="already paused"):
        pause(world.repo, world.inv, "w1")
    resume(world.repo, world.inv, "w1")
    assert world.decide(first.uuids[0], 0) is Reason.ALLOWED_RIPPLE
    with pytest.raises(RefusedError, match="already active"):
        resume(world.repo, world.inv, "w1")
    roll = world.repo.load_targets(rollout_role("w1"), world.repo.state())
    assert rollout_info(roll).accounting == ((1, 2),)  # carried through pause/resume
    pause(world.repo, world.inv, "w1")
    cancel(world.repo, world.inv, "w1")
    for fn in (pause, resume):
        with pytest.raises(RefusedError, match="cancelled"):
            fn(world.repo, world.inv, "w1")


def test_complete_refused_before_the_last_stage(world: World) -> None:
    with pytest.raises(RefusedError, match="cannot be completed before"):
        complete(world.repo, world.inv, "w1")
    world.tick(48)
    complete(world.repo, world.inv, "w1")
    assert world.decide(dev(5), 48) is Reason.ALLOWED_COMPLETE
    with pytest.raises(RefusedError, match="complete"):
        pause(world.repo, world.inv, "w1")


def test_review_shows_the_plan(make_repo: RepoFactory, keystore: KeyStore, artifact: Path) -> None:
    repo = make_repo()
    with open_inventory(repo) as inv:
        inv.import_rows(FLEET)
    ceremony = publish_wave(repo, keystore, artifact, plan=PLAN, signers=(), dry_run=True)
    text = review(ceremony, Keyring.load([repo.metadata_dir / "root.json"])).text()
    assert "plan: 3 stage(s) over 20 eligible devices" in text
    assert "stage 2 eu-half: up to 50% = 10 devices, group eu" in text
    assert "soak 2h (7200 s)" in text and "timeout 30m (1800 s)" in text
    assert ">= 95% of stage 1's devices installed, with >= 2 reports" in text
    assert "abort (pause): failures > 5% with >= 2 reports" in text


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ({"stages": [{"name": "a", "size": "5"}]}, r"stage 1 \(a\)\.size"),
        ({"stages": [{"name": "a", "size": {"devices": 0}}]}, r"stage 1 \(a\)\.size\.devices"),
        (
            {"stages": [{"name": "a", "size": {"devices": 2}, "success": {"min_installed": "9"}}]},
            r"stage 1 \(a\)\.success",
        ),
        (
            {"stages": [{"name": "a", "size": "5%", "soak": "2 weeks"}]},
            r"stage 1 \(a\)\.soak",
        ),
        (
            {
                "stages": [
                    {"name": "a", "size": {"devices": 5}},
                    {"name": "b", "size": {"devices": 3}},
                ]
            },
            r"stage 2 \(b\)\.size",
        ),
        (
            {
                "stages": [
                    {"name": "a", "size": {"devices": 5}, "not_before": at(5)},
                    {"name": "b", "size": {"devices": 6}, "not_before": at(1)},
                ]
            },
            r"stage 2 \(b\)\.not_before",
        ),
        ({"stages": [{"name": "a", "size": "99.99999%"}]}, r"stage 1 \(a\)\.size"),
        ({"stages": [{"name": "a", "size": {"devices": 1}, "rate": 1}]}, r"stage 1 \(a\).*rate"),
        (
            {"stages": [{"name": "a", "size": {"devices": 1}, "abort": {"action": "stop"}}]},
            r"stage 1 \(a\)\.abort\.action",
        ),
    ],
)
def test_bad_plan_is_refused_before_signing(
    tmp_path: Path, make_repo: RepoFactory, keystore: KeyStore, artifact: Path,
    plan: dict[str, Any], message: str,
) -> None:  # fmt: skip
    repo = make_repo()
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"eligible": 10, **plan}))
    with pytest.raises(InputError, match=message):
        plan_from_input(json.loads(path.read_text()))
    before = sorted(p.name for p in repo.staging_dir.iterdir())
    code = main(
        [
            "waves", "init", "w1", "10", "prod", "--repo", str(repo.path),
            "--artifact", str(artifact), "--hardware-id", "hw1", "--plan", str(path),
            "--key", str(keystore.make("t1")),
        ]
    )  # fmt: skip
    assert code == 2
    assert sorted(p.name for p in repo.staging_dir.iterdir()) == before
    assert repo.state().version_of("wave.w1") is None


def test_cli_plan_rollout_stage_pause_resume(
    tmp_path: Path, make_repo: RepoFactory, keystore: KeyStore, artifact: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    repo = make_repo()
    with open_inventory(repo) as inv:
        inv.import_rows(FLEET)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"stages": [{"name": "a", "size": {"devices": 3}}]}))
    r = ["--repo", str(repo.path)]
    assert main(["waves", "init", "w1", "10", "prod", *r, "--artifact", str(artifact),
                 "--hardware-id", "hw1", "--plan", str(path),
                 "--key", str(keystore.make("t1"))]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["waves", "rollout", "w1", *r, "--stage", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["devices"] == 3
    assert main(["waves", "rollout", "w1", *r, "--limit", "1"]) == 1  # the stage is full
    assert main(["waves", "pause", "w1", *r]) == 0
    assert main(["waves", "pause", "w1", *r]) == 1
    capsys.readouterr()
    assert main(["waves", "resume", "w1", *r, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "active"


def test_rollout_key_rotation_keeps_the_plan_and_accounting(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> None:
    repo = make_repo()
    with open_inventory(repo) as inv:
        inv.import_rows(FLEET)
        publish_wave(repo, keystore, artifact, plan=PLAN)
        first = sign_stage(repo, "w1", 1, inv=inv)
        ceremony = rotate_online_keys(repo, roles=["rollout"])
        assert sign_ceremony(repo, ceremony.id, keystore.ref("t1")).complete
        wave = load_wave(repo, "w1")
        assert wave.plan is not None and len(wave.plan.stages) == 3
        assert wave.accounting == ((1, 2),)
        bundle = build_bundle(repo, inv, first.uuids[0])
    verifier = Verifier.from_trusted_root(repo.role_bytes("root", 1))
    device = DeviceIdentity(first.uuids[0], "hw1", "prod", 5)
    assert verifier.decide(bundle, device).reason is Reason.ALLOWED_RIPPLE
