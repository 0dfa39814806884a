"""``waves audit``: real histories pass; every injected violation is named.

Histories are built with the public server API on a real repository with an
injected clock. Violations are injected the way a holder of the online keys
would: new versions signed with the repository's online rollout, snapshot and
timestamp keys and published as ordinary files (never by editing the audit's
input in memory).
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import uuid as uuidlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from securesystemslib.signer import Signer
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Snapshot,
    Targets,
    Timestamp,
)

from tests.conftest import PASSPHRASE, KeyStore, RepoFactory, publish_wave
from tests.http_support import live
from tufwaves.audit import KINDS, AuditReport, DirectorySource, HttpSource, audit_wave
from tufwaves.cli import main
from tufwaves.errors import InputError, StorageError
from tufwaves.http import create_app
from tufwaves.server import (
    Selector,
    cancel,
    complete,
    fold_into_production,
    open_inventory,
    pause,
    resume,
    rollout,
    rotate_online_keys,
    sign_ceremony,
    sign_stage,
)
from tufwaves.server.inventory import DeviceRow
from tufwaves.server.keys import PASSPHRASE_ENV
from tufwaves.server.metadata import (
    Policy,
    build_ripple,
    build_rollout,
    ripple_role,
    rollout_role,
)
from tufwaves.server.repository import Repository
from tufwaves.server.roots import create_repository

# The injected clock starts at 08:00 UTC of tomorrow (8 to 32 hours from now):
# the repository is created by the real clock before the injected one takes
# over, so a fixed date would make every history "go back in time" once the
# real clock passes it.
T0 = (datetime.now(UTC) + timedelta(days=1)).replace(hour=8, minute=0, second=0, microsecond=0)
W = "w1"
ROLLOUT = rollout_role(W)


def dev(n: int) -> str:
    return str(uuidlib.UUID(int=n * 0x9E3779B97F4A7C15 + 1))


def at(hours: float) -> str:
    return (T0 + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


FLEET = [DeviceRow(dev(i), "hw1", "prod", frozenset({"eu"}), 5) for i in range(20)]
PLAN: dict[str, Any] = {
    "stages": [
        {"name": "canary", "size": {"devices": 2}, "not_before": at(-1)},
        {"name": "half", "size": "50%", "not_before": at(24), "soak": "25h"},
        {"name": "all", "size": {"percent": "100%"}, "not_before": at(48), "soak": "1h"},
    ]
}


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def to(self, hours: float) -> None:
        self.now = T0 + timedelta(hours=hours)


def audit(repo: Repository) -> AuditReport:
    return audit_wave(DirectorySource(repo.path), W)


def kinds(report: AuditReport) -> set[str]:
    return {v.kind for v in report.violations}


def clean(report: AuditReport) -> None:
    assert report.violations == (), [v.to_dict() for v in report.violations]


# --------------------------------------------------------------------------
# Forging with the online keys


class Forger:
    """Publishes versions signed by the repository's online keys, as an attacker could."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    def current(self, role: str) -> Metadata[Targets]:
        return self.repo.load_targets(role)

    def next_of(self, role: str) -> Metadata[Targets]:
        md = copy.deepcopy(self.current(role))
        md.signed.version += 1
        return md

    def sign(self, md: Metadata[Any], role: str = "rollout") -> Metadata[Any]:
        md.signatures.clear()
        md.sign(self.repo.online_signer(role))
        return md

    def publish(
        self,
        files: Mapping[str, Metadata[Any]],
        *,
        listing: Mapping[str, int] | None = None,
        sign: bool = True,
    ) -> None:
        """Write ``files`` and a snapshot and timestamp listing them (online keys)."""
        state = self.repo.state()
        meta = dict(state.snapshot.signed.meta)
        for role, md in files.items():
            if sign:
                self.sign(md)
            path = self.repo.metadata_dir / f"{md.signed.version}.{role}.json"
            path.write_bytes(md.to_bytes())
            meta[f"{role}.json"] = MetaFile(md.signed.version)
        for role, version in (listing or {}).items():
            meta[f"{role}.json"] = MetaFile(version)
        snap_version = state.snapshot.signed.version + 1
        snap = Metadata(
            Snapshot(
                version=snap_version,
                expires=self.repo.now() + timedelta(days=7),
                meta=dict(sorted(meta.items())),
            )
        )
        snap.sign(self.repo.online_signer("snapshot"))
        data = snap.to_bytes()
        (self.repo.metadata_dir / f"{snap_version}.snapshot.json").write_bytes(data)
        ts = Metadata(
            Timestamp(
                version=state.timestamp.signed.version + 1,
                expires=self.repo.now() + timedelta(days=1),
                snapshot_meta=MetaFile(snap_version, len(data), {"sha256": _sha256(data)}),
            )
        )
        ts.sign(self.repo.online_signer("timestamp"))
        (self.repo.metadata_dir / "timestamp.json").write_bytes(ts.to_bytes())

    def rollout_with(self, mutate: Callable[[dict[str, Any]], None]) -> Metadata[Targets]:
        md = self.next_of(ROLLOUT)
        mutate(md.signed.unrecognized_fields["x-tufwaves-rollout"])
        return md

    def add_ripple(
        self,
        members: list[str] | dict[str, Any],
        *,
        stage: int | None = 1,
        accounted: tuple[int, int] | None = None,
        state: str | None = None,
    ) -> None:
        """Ripple K+1 (a list, or the membership given) and the rollout naming it."""
        roll = self.next_of(ROLLOUT)
        field = roll.signed.unrecognized_fields["x-tufwaves-rollout"]
        index = field["ripples"] + 1
        membership = (
            {"encoding": "list", "uuids": sorted(members)} if isinstance(members, list) else members
        )
        size = len(members) if isinstance(members, list) else members["parts_per_million"]
        ripple_field: dict[str, Any] = {"wave": W, "index": index, "membership": membership}
        if stage is not None:
            ripple_field["stage"] = stage
            field["accounting"].append(
                dict(zip(("stage", "size"), accounted or (stage, size), strict=True))
            )
        field["ripples"] = index
        if state is not None:
            field["state"] = state
        keyid = self.repo.online_key("rollout").keyid
        if roll.signed.delegations is None:
            roll.signed.delegations = Delegations(
                keys={keyid: self.repo.online_key("rollout")}, roles={}
            )
        assert roll.signed.delegations.roles is not None
        name = ripple_role(W, index)
        roll.signed.delegations.roles[name] = DelegatedRole(name, [keyid], 1, True, paths=[])
        ripple = Metadata(
            Targets(
                version=1,
                expires=roll.signed.expires,
                targets={},
                unrecognized_fields={"x-tufwaves-ripple": ripple_field},
            )
        )
        self.publish({name: ripple, ROLLOUT: roll})


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _signer(keystore: KeyStore, name: str) -> Signer:
    signer = keystore.ref(name).signer
    assert signer is not None
    return signer


# --------------------------------------------------------------------------
# Real histories


@dataclass
class History:
    repo: Repository
    clock: Clock
    forge: Forger
    keystore: KeyStore


def _new(make_repo: RepoFactory, keystore: KeyStore, artifact: Path, **kw: Any) -> History:
    repo = make_repo()
    clock = Clock()
    repo.clock = clock
    with open_inventory(repo) as inv:
        inv.import_rows(FLEET)
    publish_wave(repo, keystore, artifact, expires=T0 + timedelta(days=30), **kw)
    return History(repo, clock, Forger(repo), keystore)


@pytest.fixture
def planned(make_repo: RepoFactory, keystore: KeyStore, artifact: Path) -> History:
    """A planned wave in stage 1: one ripple of 2 devices at T0 (the stage is full)."""
    h = _new(make_repo, keystore, artifact, plan=PLAN)
    with open_inventory(h.repo) as inv:
        sign_stage(h.repo, W, 1, inv=inv)
    h.clock.to(1)
    return h


@pytest.fixture
def unplanned(make_repo: RepoFactory, keystore: KeyStore, artifact: Path) -> History:
    """An unplanned wave (max 5 devices per ripple) with one ripple of 3 devices."""
    h = _new(make_repo, keystore, artifact, policy=Policy(max_ripple_size=5))
    with open_inventory(h.repo) as inv:
        rollout(h.repo, inv, W, Selector(uuids=(dev(1), dev(2), dev(3))))
    h.clock.to(1)
    return h


def test_a_planned_history_to_complete_with_pause_and_a_key_rotation(
    planned: History, keystore: KeyStore
) -> None:
    repo, clock = planned.repo, planned.clock
    with open_inventory(repo) as inv:
        clock.to(26)
        sign_stage(repo, W, 2, inv=inv)
        clock.to(27)
        pause(repo, inv, W)
        clock.to(28)
        resume(repo, inv, W)
        clock.to(30)
        ceremony = rotate_online_keys(repo, roles=["rollout"])
        assert sign_ceremony(repo, ceremony.id, keystore.ref("t1")).complete
        clock.to(49)
        sign_stage(repo, W, 3, inv=inv)
        clock.to(50)
        complete(repo, inv, W)
    report = audit(repo)
    clean(report)
    rollouts = [e for e in report.timeline if e.role == ROLLOUT]
    assert [e.state for e in rollouts] == [
        "active", "active", "active", "paused", "active", "active", "active", "complete",
    ]  # fmt: skip
    assert [e.ripples for e in rollouts][-1] == 3
    assert rollouts[-1].size == 20 and rollouts[-1].stage == 3
    assert rollouts[5].note == "re-signed by new keys"  # the rotation
    assert rollouts[5].signers != rollouts[4].signers
    resigned = [e for e in report.timeline if e.role == ripple_role(W, 1)]
    assert [e.version for e in resigned] == [1, 2] and resigned[1].note == "re-signed by new keys"
    assert rollouts[2].evidence == T0 + timedelta(hours=26)
    assert report.timeline[0].role == "wave.w1" and report.timeline[0].note == "signed offline"
    waves = [e for e in report.timeline if e.role == "wave.w1"]
    assert [e.note for e in waves] == ["signed offline", "re-signed, new rollout keys"]


def test_an_unplanned_history_with_a_fraction_and_a_cancel(unplanned: History) -> None:
    repo = unplanned.repo
    with open_inventory(repo) as inv:
        rollout(repo, inv, W, Selector(limit=4))
        rollout(repo, inv, W, Selector(fraction_ppm=50_000))
        unplanned.clock.to(2)
        cancel(repo, inv, W)
    report = audit(repo)
    clean(report)
    ripples = [e for e in report.timeline if e.role.startswith("ripple.")]
    assert [e.size for e in ripples] == [3, 4, 50_000]
    assert [e.state for e in report.timeline if e.role == ROLLOUT][-1] == "cancelled"


def test_rotating_every_online_key_and_completing_offline(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> None:
    h = _new(make_repo, keystore, artifact, policy=Policy(online_complete=False))
    repo = h.repo
    with open_inventory(repo) as inv:
        rollout(repo, inv, W, Selector(uuids=(dev(1),)))
        h.clock.to(2)
        ceremony = rotate_online_keys(repo, keys=[keystore.ref("root"), keystore.ref("t1")])
        assert ceremony.complete or sign_ceremony(repo, ceremony.id, keystore.ref("t1")).complete
        assert repo.root().signed.version == 2
        h.clock.to(3)
        rollout(repo, inv, W, Selector(uuids=(dev(2),)))
        h.clock.to(4)
        assert fold_into_production(repo, W, keys=[keystore.ref("t1")]).complete
    report = audit(repo)
    clean(report)
    assert report.roots == 2
    assert [e.state for e in report.timeline if e.role == ROLLOUT][-1] == "complete"
    # An auditor who trusts root 2 (devices provisioned later) gets the same answer.
    clean(audit_wave(DirectorySource(repo.path), W, trusted_root=repo.role_bytes("root", 2)))
    # A snapshot signed by the revoked snapshot key after the rotation is refused.
    old = Forger(repo)
    state = repo.state()
    snap = copy.deepcopy(state.snapshot)
    snap.signed.version += 1
    snap.signatures.clear()
    snap.sign(_signer(keystore, "mallory"))
    (repo.metadata_dir / f"{snap.signed.version}.snapshot.json").write_bytes(snap.to_bytes())
    data = snap.to_bytes()
    ts = copy.deepcopy(state.timestamp)
    ts.signed.version += 1
    ts.signed.snapshot_meta = MetaFile(snap.signed.version, len(data), {"sha256": _sha256(data)})
    old.sign(ts, "timestamp")
    (repo.metadata_dir / "timestamp.json").write_bytes(ts.to_bytes())
    report = audit(repo)
    assert kinds(report) == {"signature_invalid"}
    assert report.violations[0].role == "snapshot"


def test_the_audit_over_http_matches_the_directory(planned: History) -> None:
    with open_inventory(planned.repo) as inv:
        pause(planned.repo, inv, W)
    direct = audit(planned.repo)
    clean(direct)
    with live(create_app(planned.repo.path)) as server:
        over_http = audit_wave(HttpSource(server.url), W)
        assert over_http.to_dict()["timeline"] == direct.to_dict()["timeline"]
        assert over_http.ok


def test_a_copy_of_the_metadata_directory_is_enough(planned: History, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    shutil.copytree(planned.repo.metadata_dir, mirror)
    clean(audit_wave(DirectorySource(mirror), W))


# --------------------------------------------------------------------------
# Every rule, broken once


def test_bad_signature(planned: History) -> None:
    md = planned.forge.sign(planned.forge.rollout_with(lambda f: f.update(state="paused")))
    sig = next(iter(md.signatures.values()))
    sig.signature = ("0" if sig.signature[0] != "0" else "1") + sig.signature[1:]
    planned.forge.publish({ROLLOUT: md}, sign=False)
    report = audit(planned.repo)
    assert kinds(report) == {"signature_invalid"}
    v = report.violations[0]
    assert (v.role, v.version) == (ROLLOUT, 3)
    assert "0 valid signatures of the 1" in v.message


def test_too_few_signatures(make_repo: RepoFactory, keystore: KeyStore, artifact: Path) -> None:
    keys = [keystore.pub("r1").key, keystore.pub("r2").key]
    h = _new(make_repo, keystore, artifact, rollout_keys=keys, rollout_threshold=2)
    signers = [_signer(keystore, n) for n in ("r1", "r2")]
    with open_inventory(h.repo) as inv:
        rollout(
            h.repo, inv, W, Selector(uuids=(dev(1),)), keys=[keystore.ref("r1"), keystore.ref("r2")]
        )
    clean(audit(h.repo))
    md = h.forge.rollout_with(lambda f: f.update(state="paused"))
    md.signatures.clear()
    md.sign(signers[0])
    h.forge.publish({ROLLOUT: md}, sign=False)
    report = audit(h.repo)
    assert kinds(report) == {"signature_invalid"}
    assert "1 valid signatures of the 2" in report.violations[0].message


def test_wrong_keys(planned: History, keystore: KeyStore) -> None:
    md = planned.forge.rollout_with(lambda f: f.update(state="paused"))
    md.signatures.clear()
    md.sign(_signer(keystore, "mallory"))
    planned.forge.publish({ROLLOUT: md}, sign=False)
    report = audit(planned.repo)
    assert kinds(report) == {"signature_invalid"}
    assert "does not authorise" in report.violations[0].message


def test_uppercase_signature_hex(planned: History) -> None:
    md = planned.forge.sign(planned.forge.rollout_with(lambda f: f.update(state="paused")))
    sig = next(iter(md.signatures.values()))
    sig.signature = sig.signature.upper()
    planned.forge.publish({ROLLOUT: md}, sign=False)
    assert kinds(audit(planned.repo)) == {"signature_invalid"}


def test_skipped_version(planned: History) -> None:
    md = planned.forge.rollout_with(lambda f: f.update(state="paused"))
    md.signed.version += 1  # v4 after v2
    planned.forge.publish({ROLLOUT: md})
    report = audit(planned.repo)
    assert "version_skipped" in kinds(report)


def test_state_change_after_cancel(planned: History) -> None:
    with open_inventory(planned.repo) as inv:
        cancel(planned.repo, inv, W)
    planned.forge.publish({ROLLOUT: planned.forge.rollout_with(lambda f: f.update(state="active"))})
    report = audit(planned.repo)
    assert kinds(report) == {"final_state_changed"}
    assert report.violations[0].version == 4


def test_a_ripple_added_after_complete(unplanned: History) -> None:
    with open_inventory(unplanned.repo) as inv:
        complete(unplanned.repo, inv, W)
    unplanned.forge.add_ripple([dev(7)], stage=None)
    assert "final_state_changed" in kinds(audit(unplanned.repo))


def test_state_transition_not_allowed(planned: History) -> None:
    with open_inventory(planned.repo) as inv:
        pause(planned.repo, inv, W)
    planned.clock.to(60)  # after the plan's last not_before: only the transition is wrong
    planned.forge.publish(
        {ROLLOUT: planned.forge.rollout_with(lambda f: f.update(state="complete"))}
    )
    assert kinds(audit(planned.repo)) == {"state_transition"}


def test_ripple_content_changed(unplanned: History) -> None:
    role = ripple_role(W, 1)
    md = unplanned.forge.next_of(role)
    md.signed.unrecognized_fields["x-tufwaves-ripple"]["membership"]["uuids"] = sorted(
        [dev(1), dev(2), dev(9)]
    )
    unplanned.forge.publish({role: md})
    report = audit(unplanned.repo)
    assert kinds(report) == {"ripple_changed"}
    assert (report.violations[0].role, report.violations[0].version) == (role, 2)


def test_accounting_understated(planned: History) -> None:
    planned.clock.to(26)
    planned.forge.add_ripple([dev(11), dev(12), dev(13)], stage=2, accounted=(2, 1))
    report = audit(planned.repo)
    assert kinds(report) == {"accounting_mismatch"}
    assert "size 1" in report.violations[0].message and "size 3" in report.violations[0].message


def test_accounting_rewritten(planned: History) -> None:
    planned.clock.to(26)

    def shrink(f: dict[str, Any]) -> None:
        f["accounting"][0]["size"] = 1

    planned.forge.publish({ROLLOUT: planned.forge.rollout_with(shrink)})
    assert {"accounting_rewritten", "accounting_mismatch"} <= kinds(audit(planned.repo))


def test_stage_skipped(planned: History) -> None:
    planned.clock.to(60)
    planned.forge.add_ripple([dev(11)], stage=3)
    assert kinds(audit(planned.repo)) == {"stage_skipped"}


def test_first_ripple_not_in_stage_one(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> None:
    h = _new(make_repo, keystore, artifact, plan=PLAN)
    h.clock.to(30)
    h.forge.add_ripple([dev(11)], stage=2)
    assert kinds(audit(h.repo)) == {"stage_skipped"}


def test_cap_exceeded(planned: History) -> None:
    planned.forge.add_ripple([dev(11), dev(12)], stage=1)  # stage 1 allows 2 in total
    report = audit(planned.repo)
    assert kinds(report) == {"cap_exceeded"}
    assert "reaches 4 devices" in report.violations[0].message


def test_policy_limit_exceeded(unplanned: History) -> None:
    unplanned.forge.add_ripple([dev(i) for i in range(10, 16)], stage=None)  # 6 > 5
    report = audit(unplanned.repo)
    assert kinds(report) == {"policy_limit"}
    assert report.violations[0].role == ripple_role(W, 2)


def test_fraction_over_the_policy(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> None:
    h = _new(make_repo, keystore, artifact, policy=Policy(max_fraction_ppm=10_000))
    h.forge.add_ripple({"encoding": "fraction", "parts_per_million": 20_000}, stage=None)
    assert kinds(audit(h.repo)) == {"policy_limit"}


def test_fraction_ripple_in_a_count_stage(planned: History) -> None:
    planned.clock.to(26)
    planned.forge.add_ripple({"encoding": "fraction", "parts_per_million": 1}, stage=2)
    assert "stage_kind" in kinds(audit(planned.repo))


def test_ripple_removed(unplanned: History) -> None:
    with open_inventory(unplanned.repo) as inv:
        rollout(unplanned.repo, inv, W, Selector(uuids=(dev(4),)))

    def drop(f: dict[str, Any]) -> None:
        f["ripples"] = 1

    md = unplanned.forge.rollout_with(drop)
    assert md.signed.delegations is not None and md.signed.delegations.roles is not None
    del md.signed.delegations.roles[ripple_role(W, 2)]
    unplanned.forge.publish({ROLLOUT: md}, listing={})
    assert "ripple_removed" in kinds(audit(unplanned.repo))


def test_two_ripples_in_one_version(unplanned: History) -> None:
    unplanned.forge.add_ripple([dev(7)], stage=None)
    # Rewrite the last rollout as if it had jumped from 1 to 3 ripples: forge ripple 3 too.
    unplanned.forge.add_ripple([dev(8)], stage=None)
    roll3 = unplanned.forge.current(ROLLOUT)
    md = copy.deepcopy(roll3)
    md.signed.version += 1
    unplanned.forge.publish({ROLLOUT: md})  # a plain re-sign: fine on its own
    clean(audit(unplanned.repo))
    # now forge a version that adds two ripples at once
    unplanned.forge.add_ripple([dev(9)], stage=None)
    role4 = ripple_role(W, 4)
    roll = unplanned.forge.next_of(ROLLOUT)
    f = roll.signed.unrecognized_fields["x-tufwaves-rollout"]
    f["ripples"] = 6
    assert roll.signed.delegations is not None and roll.signed.delegations.roles is not None
    keyid = unplanned.repo.online_key("rollout").keyid
    for k in (5, 6):
        name = ripple_role(W, k)
        roll.signed.delegations.roles[name] = DelegatedRole(name, [keyid], 1, True, paths=[])
    ripples = {}
    for k in (5, 6):
        rip = copy.deepcopy(unplanned.forge.current(role4))
        rip.signed.unrecognized_fields["x-tufwaves-ripple"]["index"] = k
        rip.signed.unrecognized_fields["x-tufwaves-ripple"]["membership"]["uuids"] = [dev(k + 10)]
        ripples[ripple_role(W, k)] = rip
    unplanned.forge.publish({**ripples, ROLLOUT: roll})
    assert kinds(audit(unplanned.repo)) == {"ripples_skipped"}


def test_ripple_while_paused(unplanned: History) -> None:
    with open_inventory(unplanned.repo) as inv:
        pause(unplanned.repo, inv, W)
    unplanned.forge.add_ripple([dev(7)], stage=None)
    assert kinds(audit(unplanned.repo)) == {"ripple_while_inactive"}


def test_not_before_by_the_evidence(planned: History) -> None:
    planned.clock.to(3)  # stage 2 may not start before T0+24h
    planned.forge.add_ripple([dev(11)], stage=2)
    report = audit(planned.repo)
    assert "not_before" in kinds(report)
    assert any(v.kind == "not_before" and at(3) in v.message for v in report.violations)


def test_soak_by_the_evidence(planned: History) -> None:
    planned.clock.to(24.5)  # after not_before, but stage 2 soaks 25 h after stage 1 began
    planned.forge.add_ripple([dev(11)], stage=2)
    assert kinds(audit(planned.repo)) == {"soak"}


def test_complete_before_the_last_not_before(planned: History) -> None:
    planned.forge.publish(
        {ROLLOUT: planned.forge.rollout_with(lambda f: f.update(state="complete"))}
    )
    assert kinds(audit(planned.repo)) == {"complete_early"}


def test_complete_without_online_complete(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> None:
    h = _new(make_repo, keystore, artifact, policy=Policy(online_complete=False))
    with open_inventory(h.repo) as inv:
        rollout(h.repo, inv, W, Selector(uuids=(dev(1),)))
    h.forge.publish({ROLLOUT: h.forge.rollout_with(lambda f: f.update(state="complete"))})
    assert kinds(audit(h.repo)) == {"complete_not_allowed"}


def test_rollout_changed_after_the_wave_expired(unplanned: History) -> None:
    unplanned.clock.to(31 * 24)
    unplanned.forge.publish(
        {ROLLOUT: unplanned.forge.rollout_with(lambda f: f.update(state="paused"))}
    )
    assert kinds(audit(unplanned.repo)) == {"after_expiry"}


def test_time_going_back(unplanned: History) -> None:
    with open_inventory(unplanned.repo) as inv:
        unplanned.clock.to(-5)
        pause(unplanned.repo, inv, W)
    assert kinds(audit(unplanned.repo)) == {"time_regressed"}


def test_snapshot_rolls_a_role_back(unplanned: History) -> None:
    with open_inventory(unplanned.repo) as inv:
        pause(unplanned.repo, inv, W)
    unplanned.forge.publish({}, listing={ROLLOUT: 2})  # the pre-pause rollout again
    assert kinds(audit(unplanned.repo)) == {"snapshot_rollback"}


def test_wave_changed_by_the_offline_keys(unplanned: History, keystore: KeyStore) -> None:
    md = unplanned.forge.next_of("wave.w1")
    md.signed.unrecognized_fields["x-tufwaves-wave"]["policy"]["max_ripple_size"] = 500
    md.signatures.clear()
    md.sign(_signer(keystore, "t1"))
    unplanned.forge.publish({"wave.w1": md}, sign=False)
    report = audit(unplanned.repo)
    assert kinds(report) == {"wave_changed"}
    assert "x-tufwaves-wave" in report.violations[0].message


def test_wave_carrying_a_salt_of_its_own(unplanned: History, keystore: KeyStore) -> None:
    md = unplanned.forge.next_of("wave.w1")
    md.signed.unrecognized_fields["x-tufwaves-wave"]["policy"]["fraction_salt"] = "ab" * 32
    md.signatures.clear()
    md.sign(_signer(keystore, "t1"))
    unplanned.forge.publish({"wave.w1": md}, sign=False)
    report = audit(unplanned.repo)
    assert kinds(report) == {"wave_changed"}
    assert "fraction_salt" in report.violations[0].message


def test_a_first_rollout_version_with_two_ripples(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> None:
    keys = [keystore.pub("r1").key]
    h = _new(make_repo, keystore, artifact, rollout_keys=keys)
    assert h.repo.state().version_of(ROLLOUT) is None  # not the online key: no version 1 yet
    roll = build_rollout(W, "active", 2, [keys[0].keyid], {keys[0].keyid: keys[0]}, 1, 1,
                         T0 + timedelta(days=30))  # fmt: skip
    ripples = {
        ripple_role(W, k): build_ripple(
            W, k, {"encoding": "list", "uuids": [dev(k)]}, T0 + timedelta(days=30)
        )
        for k in (1, 2)
    }
    for md in (roll, *ripples.values()):
        md.sign(_signer(keystore, "r1"))
    h.forge.publish({**ripples, ROLLOUT: roll}, sign=False)
    assert kinds(audit(h.repo)) == {"ripples_skipped"}


def test_a_fraction_stage(make_repo: RepoFactory, keystore: KeyStore, artifact: Path) -> None:
    plan = {
        "stages": [
            {"name": "canary", "size": {"devices": 2}},
            {"name": "some", "size": {"fraction": "5%"}},
        ]
    }
    h = _new(make_repo, keystore, artifact, plan=plan)
    with open_inventory(h.repo) as inv:
        sign_stage(h.repo, W, 1, inv=inv)
        sign_stage(h.repo, W, 2, inv=inv)
    clean(audit(h.repo))
    h.forge.add_ripple({"encoding": "fraction", "parts_per_million": 60_000}, stage=2)
    report = audit(h.repo)
    assert kinds(report) == {"cap_exceeded"}
    assert "60000 ppm" in report.violations[0].message


def test_a_snapshot_that_is_not_the_one_the_timestamp_names(unplanned: History) -> None:
    version = unplanned.repo.state().snapshot.signed.version
    path = unplanned.repo.metadata_dir / f"{version}.snapshot.json"
    path.write_text(json.dumps(json.loads(path.read_bytes()), indent=1))  # same signed content
    assert kinds(audit(unplanned.repo)) == {"hash_mismatch"}


def test_a_file_over_its_cap(unplanned: History) -> None:
    (unplanned.repo.metadata_dir / "1.snapshot.json").write_bytes(b" " * 2_000_001)
    assert kinds(audit(unplanned.repo)) == {"file_too_large"}


def test_profile_invalid(unplanned: History) -> None:
    unplanned.forge.publish(
        {ROLLOUT: unplanned.forge.rollout_with(lambda f: f.update(state="stopped"))}
    )
    assert "profile_invalid" in kinds(audit(unplanned.repo))


def test_a_missing_and_a_corrupt_file(unplanned: History) -> None:
    (unplanned.repo.metadata_dir / f"1.{ROLLOUT}.json").unlink()
    path = unplanned.repo.metadata_dir / f"2.{ROLLOUT}.json"
    path.write_bytes(path.read_bytes()[:-3])
    assert {"file_missing", "unparseable"} <= kinds(audit(unplanned.repo))


def test_a_version_mismatch(unplanned: History) -> None:
    meta = unplanned.repo.metadata_dir
    (meta / f"1.{ROLLOUT}.json").write_bytes((meta / f"2.{ROLLOUT}.json").read_bytes())
    assert "version_mismatch" in kinds(audit(unplanned.repo))


def test_a_signed_file_no_snapshot_lists_is_shown_not_counted(unplanned: History) -> None:
    md = unplanned.forge.sign(unplanned.forge.rollout_with(lambda f: f.update(state="paused")))
    (unplanned.repo.metadata_dir / f"3.{ROLLOUT}.json").write_bytes(md.to_bytes())
    report = audit(unplanned.repo)
    clean(report)
    assert report.timeline[-1].snapshot is None and report.timeline[-1].version == 3


def test_every_kind_is_documented() -> None:
    spec = (Path(__file__).parent.parent / "specs" / "audit.md").read_text()
    for kind in KINDS:
        assert f"`{kind}`" in spec, kind


# --------------------------------------------------------------------------
# Trusted root, inputs, CLI


def test_a_trusted_root_from_elsewhere_is_a_mismatch(
    unplanned: History, make_repo: RepoFactory
) -> None:
    other = make_repo(name="other")
    report = audit_wave(
        DirectorySource(unplanned.repo.path), W, trusted_root=other.role_bytes("root", 1)
    )
    assert kinds(report) == {"root_mismatch"}
    same = audit_wave(
        DirectorySource(unplanned.repo.path), W, trusted_root=unplanned.repo.role_bytes("root", 1)
    )
    clean(same)
    with pytest.raises(InputError, match="trusted root"):
        audit_wave(DirectorySource(unplanned.repo.path), W, trusted_root=b"{}")


def test_a_root_not_signed_by_the_root_before(unplanned: History, keystore: KeyStore) -> None:
    root = copy.deepcopy(unplanned.repo.root())
    root.signed.version = 2
    key = keystore.pub("mallory").key
    root.signed.add_key(key, "root")
    root.signed.revoke_key(root.signed.roles["root"].keyids[0], "root")
    root.signatures.clear()
    root.sign(_signer(keystore, "mallory"))
    (unplanned.repo.metadata_dir / "2.root.json").write_bytes(root.to_bytes())
    report = audit(unplanned.repo)
    assert kinds(report) == {"signature_invalid"}
    assert (report.violations[0].role, report.violations[0].version) == ("root", 2)


def test_bad_inputs(unplanned: History, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no snapshot"):
        audit_wave(DirectorySource(unplanned.repo.path), "nope")
    with pytest.raises(InputError, match="wave name"):
        audit_wave(DirectorySource(unplanned.repo.path), "a/b")
    with pytest.raises(InputError, match="no published metadata"):
        DirectorySource(tmp_path)
    with pytest.raises(InputError, match="http"):
        HttpSource("ftp://example.com/")
    with pytest.raises(StorageError, match="GET"):
        audit_wave(HttpSource("http://127.0.0.1:9/"), W)


def test_cli_text_json_and_exit_codes(
    unplanned: History, capsys: pytest.CaptureFixture[str]
) -> None:
    r = ["--repo", str(unplanned.repo.path)]
    assert main(["waves", "audit", W, *r]) == 0
    out = capsys.readouterr().out
    assert "no violations" in out and ROLLOUT in out and "ripple.w1.1" in out
    unplanned.forge.add_ripple([dev(i) for i in range(10, 16)], stage=None)
    assert main(["waves", "audit", W, *r]) == 1
    out = capsys.readouterr().out
    assert "policy_limit: ripple.w1.2 v1:" in out
    assert main(["waves", "audit", W, *r, "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["violations"][0]["kind"] == "policy_limit"
    assert main(["waves", "audit", "nope", *r, "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["exit_code"] == 2
    assert main(["waves", "audit", W, "--url", "http://127.0.0.1:9/", "--json"]) == 3
    assert "GET" in json.loads(capsys.readouterr().out)["error"]
    with pytest.raises(SystemExit) as usage:
        main(["waves", "audit", W, *r, "--url", "http://x/"])
    assert usage.value.code == 2
    capsys.readouterr()


def test_cli_over_http_and_trusted_root(
    planned: History, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    root = tmp_path / "root.json"
    root.write_bytes(planned.repo.role_bytes("root", 1))
    with live(create_app(planned.repo.path)) as server:
        code = main(["waves", "audit", W, "--url", server.url, "--trusted-root", str(root)])
    assert code == 0, capsys.readouterr()
    assert "no violations" in capsys.readouterr().out
    monkeypatch.setenv("TUFWAVES_REPO", str(planned.repo.path))
    assert main(["waves", "audit", W, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    monkeypatch.delenv("TUFWAVES_REPO")
    assert main(["waves", "audit", W]) == 2
    assert main(["waves", "audit", W, "--repo", str(planned.repo.path),
                 "--trusted-root", str(tmp_path / "missing.json")]) == 3  # fmt: skip


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["waves", "audit", "--help"])
    out = capsys.readouterr().out
    assert "example:" in out and "--url" in out and "specs/audit.md" in out


# --------------------------------------------------------------------------
# Random damage is always a violation, never a crash


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("audit-pristine")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(PASSPHRASE_ENV, PASSPHRASE)
        keys = KeyStore(base / "keys")
        repo, _ = create_repository(
            base / "repo",
            root_keys=[keys.ref("root")],
            root_threshold=1,
            targets_keys=[keys.ref("t1")],
            targets_threshold=1,
        )
        clock = Clock()
        repo.clock = clock
        fw = base / "fw.img"
        fw.write_bytes(b"firmware " * 50)
        with open_inventory(repo) as inv:
            inv.import_rows(FLEET)
            publish_wave(repo, keys, fw, expires=T0 + timedelta(days=30), plan=PLAN)
            sign_stage(repo, W, 1, inv=inv)
            clock.to(26)
            sign_stage(repo, W, 2, inv=inv)
            clock.to(27)
            pause(repo, inv, W)
    yield repo.metadata_dir


def _wave_files(metadata: Path) -> list[str]:
    return sorted(
        p.name
        for p in metadata.iterdir()
        if p.name.split(".", 1)[-1].startswith(("wave.", "rollout.", "ripple.", "snapshot"))
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_one_changed_byte_is_always_a_violation(pristine: Path, data: st.DataObject) -> None:
    clean(audit_wave(DirectorySource(pristine), W))
    name = data.draw(st.sampled_from(_wave_files(pristine)))
    path = pristine / name
    original = path.read_bytes()
    offset = data.draw(st.integers(0, len(original) - 1))
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != original[offset]))
    path.write_bytes(original[:offset] + bytes([byte]) + original[offset + 1 :])
    try:
        report = audit_wave(DirectorySource(pristine), W)
    finally:
        path.write_bytes(original)
    assert not report.ok


ROLLOUT_STATES = st.sampled_from(["active", "paused", "cancelled", "complete", "stopped", 3])


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    state=ROLLOUT_STATES,
    ripples=st.integers(0, 4),
    accounting=st.lists(
        st.fixed_dictionaries({"stage": st.integers(0, 5), "size": st.integers(-1, 30)}),
        max_size=4,
    ),
    ripple_stage=st.one_of(st.none(), st.integers(0, 70)),
)
def test_forged_rollouts_never_crash_the_audit(
    pristine: Path,
    state: object,
    ripples: int,
    accounting: list[dict[str, int]],
    ripple_stage: int | None,
) -> None:
    repo = Repository.open(pristine.parent)
    saved = {p.name: p.read_bytes() for p in pristine.iterdir()}
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(PASSPHRASE_ENV, PASSPHRASE)
            forge = Forger(repo)
            forge.add_ripple([dev(30)], stage=ripple_stage)

            def mutate(f: dict[str, Any]) -> None:
                f.update(state=state, ripples=ripples, accounting=accounting)

            forge.publish({ROLLOUT: forge.rollout_with(mutate)})
        report = audit_wave(DirectorySource(pristine), W)
    finally:
        for p in pristine.iterdir():
            if p.name not in saved:
                p.unlink()
        for name, data in saved.items():
            (pristine / name).write_bytes(data)
    assert not report.ok
    assert "check_failed" not in kinds(report), report.violations
