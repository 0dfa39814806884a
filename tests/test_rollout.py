"""Rollouts: selection semantics, signing, policy, cancel/complete, concurrency."""

from __future__ import annotations

import json
import multiprocessing
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PASSPHRASE, KeyStore, RepoFactory, publish_wave, tree_digest
from tufwaves.demo.ngcheck import ngclient_fetch
from tufwaves.errors import InputError, RefusedError
from tufwaves.server import merkle_file
from tufwaves.server.bundler import build_bundle
from tufwaves.server.inventory import DeviceRow
from tufwaves.server.inventory.sqlite import SqliteInventory
from tufwaves.server.metadata import Policy, expiry, ripple_role, rollout_info
from tufwaves.server.repository import Repository
from tufwaves.server.rollout import Selector, cancel, complete, open_inventory, rollout
from tufwaves.server.waves import ceremony_for_wave, fold_into_production, sign_ceremony
from tufwaves.verify import DeviceIdentity, Verifier


def dev(n: int) -> str:
    return str(uuidlib.UUID(int=n * 0x9E3779B97F4A7C15 + 1))


@dataclass
class World:
    repo: Repository
    inv: SqliteInventory
    keystore: KeyStore

    def ripple(self, wave: str = "w1", **kw: Any) -> list[str]:
        dry = kw.pop("dry_run", False)
        return list(rollout(self.repo, self.inv, wave, Selector(**kw), dry_run=dry).uuids)

    def decide(self, uuid: str, hw: str = "hw1", tag: str = "prod", installed: int = 5) -> Any:
        bundle = build_bundle(self.repo, self.inv, uuid)
        verifier = Verifier.from_trusted_root(self.repo.role_bytes("root", 1))
        return verifier.decide(bundle, DeviceIdentity(uuid, hw, tag, installed))


FLEET = (
    # 100 devices: hw1/prod, groups eu (even) / us (odd); some odd ones.
    [
        DeviceRow(dev(i), "hw1", "prod", frozenset({"eu" if i % 2 == 0 else "us"}), 5)
        for i in range(100)
    ]
    + [
        DeviceRow(dev(100), "hw2", "prod", frozenset({"eu"}), 5),  # other hardware
        DeviceRow(dev(101), "hw1", "beta", frozenset({"eu"}), 5),  # other tag
        DeviceRow(dev(102), "hw1", "prod", frozenset({"eu"}), 10),  # already on version
        DeviceRow(dev(103), "hw1", "prod", frozenset({"eu"}), 11),  # newer
        DeviceRow(dev(104), "hw1", "prod", frozenset({"eu"}), None),
    ]  # unknown version
)


@pytest.fixture
def world(make_repo: RepoFactory, keystore: KeyStore, artifact: Path) -> Iterator[World]:
    repo = make_repo()
    publish_wave(repo, keystore, artifact)
    inv = open_inventory(repo)
    inv.import_rows(FLEET)
    yield World(repo, inv, keystore)
    inv.close()


EU = {dev(i) for i in range(0, 100, 2)} | {dev(104)}
ELIGIBLE = {dev(i) for i in range(100)} | {dev(104)}

SELECTION_CASES: list[tuple[str, Callable[[World], Any]]] = [
    ("limit-picks-n-eligible", lambda w: len(s := w.ripple(limit=10)) == 10 and set(s) <= ELIGIBLE),
    (
        "limit-excludes-other-hardware-tag-and-version",
        lambda w: not set(w.ripple(limit=200)) & {dev(100), dev(101), dev(102), dev(103)},
    ),
    ("unknown-version-is-eligible", lambda w: dev(104) in w.ripple(limit=200)),
    (
        "limit-excludes-earlier-ripples",
        lambda w: not set(w.ripple(limit=30)) & set(w.ripple(limit=30)),
    ),
    ("group-restricts", lambda w: set(w.ripple(group="eu", limit=5)) <= EU),
    ("percent-of-eligible-rounds-up", lambda w: len(w.ripple(limit=None, percent=10)) == 11),
    ("percent-within-group", lambda w: len(w.ripple(group="eu", percent=50)) == 26),
    (
        "uuids-alone-all-listed",
        lambda w: w.ripple(uuids=(dev(3), dev(1))) == sorted([dev(1), dev(3)]),
    ),
    (
        "uuids-with-limit-picks-within",
        lambda w: (
            len(s := w.ripple(uuids=tuple(dev(i) for i in range(10)), limit=3)) == 3
            and set(s) <= {dev(i) for i in range(10)}
        ),
    ),
    (
        "uuids-with-percent-of-listed-eligible",
        lambda w: len(w.ripple(uuids=(dev(1), dev(2), dev(3), dev(102)), percent=50)) == 2,
    ),
    ("whole-group-now", lambda w: set(w.ripple(group="eu")) == EU),
    (
        "whole-group-again-adds-newcomers",
        lambda w: (
            (
                w.ripple(group="us"),
                w.inv.import_rows([DeviceRow(dev(500), "hw1", "prod", frozenset({"us"}), 1)]),
                w.ripple(group="us"),
            )[2]
            == [dev(500)]
        ),
    ),
]


@pytest.mark.parametrize(
    "check", [c for _, c in SELECTION_CASES], ids=[n for n, _ in SELECTION_CASES]
)
def test_selection_semantics(world: World, check: Callable[[World], Any]) -> None:
    assert check(world)


REFUSAL_CASES: list[tuple[str, Callable[[], Selector] | dict[str, Any], type, str]] = [
    ("needs-a-selector", {}, InputError, "at least one of"),
    (
        "uuids-alone-with-ineligible",
        {"uuids": (dev(1), dev(100), dev(101), dev(102), dev(999))},
        RefusedError,
        "4 listed device",
    ),
    (
        "fraction-with-group",
        {"group": "eu", "fraction_ppm": 1000},
        InputError,
        "cannot prove group",
    ),
    ("limit-zero", {"limit": 0}, InputError, "at least 1"),
    ("percent-too-big", {"percent": 101}, InputError, "between"),
    ("nothing-eligible", {"group": "nobody-here"}, RefusedError, "no eligible device"),
]


@pytest.mark.parametrize(
    ("kw", "error", "match"), [c[1:] for c in REFUSAL_CASES], ids=[c[0] for c in REFUSAL_CASES]
)
def test_rollout_refusals_change_nothing(
    world: World, kw: dict[str, Any], error: type, match: str
) -> None:
    before = tree_digest(world.repo.path)
    with pytest.raises(error, match=match) as exc:
        rollout(world.repo, world.inv, "w1", Selector(**kw))
    assert tree_digest(world.repo.path) == before
    if "ineligible" in str(kw) or "uuids" in kw:
        text = str(exc.value)
        assert "not in the inventory" in text and "hardware" in text and "version" in text


def test_seed_reproducible_and_dry_run_identical(world: World) -> None:
    before = tree_digest(world.repo.path)
    preview = world.ripple(limit=10, seed="s1", dry_run=True)
    again = world.ripple(limit=10, seed="s1", dry_run=True)
    other = world.ripple(limit=10, seed="s2", dry_run=True)
    assert tree_digest(world.repo.path) == before, "dry run changed the repository or DB"
    assert preview == again and preview != other
    assert world.ripple(limit=10, seed="s1") == preview


def test_ripple_metadata_signed_and_walkable(world: World, artifact: Path) -> None:
    chosen = world.ripple(limit=3)
    ripple = world.repo.load_targets(ripple_role("w1", 1))
    field = ripple.signed.unrecognized_fields["x-tufwaves-ripple"]
    assert field["membership"] == {"encoding": "list", "uuids": chosen}
    roll = world.repo.load_targets("rollout.w1")
    assert rollout_info(roll).ripples == 1 and roll.signed.version == 2
    wave = world.repo.load_targets("wave.w1")
    wave.signed.verify_delegate("rollout.w1", roll.signed_bytes, roll.signatures)
    roll.signed.verify_delegate("ripple.w1.1", ripple.signed_bytes, ripple.signatures)
    # python-tuf's unmodified client still walks the repository.
    info, data, _ = ngclient_fetch(
        world.repo.path, world.repo.role_bytes("root", 1), f"waves/w1/hw1/{artifact.name}"
    )
    assert data == artifact.read_bytes() and info.custom["version"] == "10"
    # The inventory recorded it.
    assert [r.devices for r in world.inv.ripples("w1")] == [3]
    assert sorted(world.inv.ripple_members("w1", 1)) == chosen


def test_policy_max_ripple_size_refused_before_signing(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> None:
    repo = make_repo()
    publish_wave(repo, keystore, artifact, policy=Policy(max_ripple_size=5, online_complete=False))
    with open_inventory(repo) as inv:
        inv.import_rows(FLEET)
        before = tree_digest(repo.path)
        with pytest.raises(RefusedError, match="at most 5"):
            rollout(repo, inv, "w1", Selector(limit=6))
        assert tree_digest(repo.path) == before
        assert len(rollout(repo, inv, "w1", Selector(limit=5)).uuids) == 5
        with pytest.raises(RefusedError, match="offline ceremony"):
            complete(repo, inv, "w1")
        assert rollout_info(repo.load_targets("rollout.w1")).state == "active"


def test_cancel_and_complete_transitions(world: World) -> None:
    member = world.ripple(limit=2)[0]
    assert world.decide(member).allowed
    cancel(world.repo, world.inv, "w1")
    assert rollout_info(world.repo.load_targets("rollout.w1")).state == "cancelled"
    decision = world.decide(member)
    assert not decision.allowed and decision.reason.value == "wave_cancelled"
    for action in (
        lambda: world.ripple(limit=1),
        lambda: cancel(world.repo, world.inv, "w1"),
        lambda: complete(world.repo, world.inv, "w1"),
    ):
        with pytest.raises(RefusedError):
            action()


def test_complete_lets_everyone_and_cannot_be_cancelled(world: World) -> None:
    world.ripple(limit=1)
    outsider = dev(99) if dev(99) not in world.inv.ripple_members("w1", 1) else dev(98)
    assert world.decide(outsider).reason.value == "not_member"
    complete(world.repo, world.inv, "w1")
    decision = world.decide(outsider)
    assert decision.allowed and decision.reason.value == "allowed_complete"
    with pytest.raises(RefusedError, match="complete"):
        cancel(world.repo, world.inv, "w1")


def _concurrent_rollout(repo_path: str, seed: str, out: Any) -> None:
    import os

    os.environ["TUFWAVES_KEY_PASSPHRASE"] = PASSPHRASE
    repo = Repository.open(repo_path)
    with open_inventory(repo) as inv:
        result = rollout(repo, inv, "w1", Selector(limit=30, seed=seed))
    out.put(list(result.uuids))


def test_two_processes_never_select_the_same_device(world: World) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_concurrent_rollout, args=(str(world.repo.path), "same", queue))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len(results[0]) == len(results[1]) == 30
    assert not set(results[0]) & set(results[1])
    assert rollout_info(world.repo.load_targets("rollout.w1")).ripples == 2
    assert [r.index for r in world.inv.ripples("w1")] == [1, 2]


def test_large_ripple_end_to_end(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> None:
    """200,000 devices: Merkle commitment, snapshot does not grow, member allowed."""
    repo = make_repo()
    publish_wave(repo, keystore, artifact)
    with open_inventory(repo) as inv:
        inv.import_rows(
            DeviceRow(dev(i), "hw1", "prod", frozenset({"all"}), 1) for i in range(200_010)
        )
        small = rollout(repo, inv, "w1", Selector(limit=5))
        snap_small = len(repo.role_bytes("snapshot", repo.state().snapshot.signed.version))
        big = rollout(repo, inv, "w1", Selector(limit=200_000))
        assert len(big.uuids) == 200_000 and big.encoding == "merkle-sha256"
        snap_big = len(repo.role_bytes("snapshot", repo.state().snapshot.signed.version))
        assert snap_big - snap_small < 200, "snapshot grew with the ripple"
        assert len(repo.role_bytes("ripple.w1.2")) < 2000
        member = big.uuids[123_456]
        bundle = build_bundle(repo, inv, member)
        assert len(json.dumps(bundle.evidence[0].to_dict())) <= 2048
        verifier = Verifier.from_trusted_root(repo.role_bytes("root", 1))
        decision = verifier.decide(bundle, DeviceIdentity(member, "hw1", "prod", 1))
        assert decision.allowed and decision.ripple == 2
        chosen = set(big.uuids) | set(small.uuids)
        leftover = next(u for u in (dev(i) for i in range(200_010)) if u not in chosen)
        decision = verifier.decide(
            build_bundle(repo, inv, leftover), DeviceIdentity(leftover, "hw1", "prod", 1)
        )
        assert not decision.allowed and decision.reason.value == "not_member"


@pytest.mark.parametrize("size", [5, 300], ids=["list", "merkle"])
def test_crash_after_publish_before_commit_is_reconciled(
    world: World, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """The metadata is the truth: a ripple published but not committed to the
    inventory is recorded at the next rollout, so its devices are not picked again."""
    world.inv.import_rows(
        DeviceRow(dev(1000 + i), "hw1", "prod", frozenset(), 1) for i in range(400)
    )
    real = Repository.publish

    def publish_then_die(self: Repository, *a: Any, **k: Any) -> Any:
        real(self, *a, **k)
        raise KeyboardInterrupt  # the process dies before the inventory commits

    monkeypatch.setattr(Repository, "publish", publish_then_die)
    with pytest.raises(KeyboardInterrupt):
        rollout(world.repo, world.inv, "w1", Selector(limit=size))
    monkeypatch.setattr(Repository, "publish", real)
    assert world.inv.ripples("w1") == []
    assert rollout_info(world.repo.load_targets("rollout.w1")).ripples == 1
    second = rollout(world.repo, world.inv, "w1", Selector(limit=50)).uuids
    assert [r.index for r in world.inv.ripples("w1")] == [1, 2]
    first = set(world.inv.ripple_members("w1", 1))
    assert len(first) == size and not first & set(second)


def test_offline_complete_folds_wave_into_production(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> None:
    repo = make_repo(2, 3)
    publish_wave(
        repo, keystore, artifact, signers=("t1", "t2"), policy=Policy(online_complete=False)
    )
    with open_inventory(repo) as inv:
        inv.import_rows(FLEET)
        rollout(repo, inv, "w1", Selector(limit=3))
        outsider = next(d for d in ELIGIBLE if inv.selected_ripple("w1", d) is None)
        with pytest.raises(RefusedError, match="offline ceremony"):
            complete(repo, inv, "w1")
        ceremony = fold_into_production(repo, "w1", keys=[keystore.ref("t3")])
        assert not ceremony.complete and repo.state().version_of("targets") == 2
        sign_ceremony(repo, ceremony_for_wave(repo, "w1"), keystore.ref("t1"))
        targets = repo.load_targets("targets")
        assert f"waves/w1/hw1/{artifact.name}" in targets.signed.targets
        assert rollout_info(repo.load_targets("rollout.w1")).state == "complete"
        verifier = Verifier.from_trusted_root(repo.role_bytes("root", 1))
        decision = verifier.decide(
            build_bundle(repo, inv, outsider), DeviceIdentity(outsider, "hw1", "prod", 5)
        )
        assert decision.allowed and decision.reason.value == "allowed_production"


def test_progress_reports_each_phase(world: World) -> None:
    world.inv.import_rows(
        DeviceRow(dev(2000 + i), "hw1", "prod", frozenset(), 1) for i in range(300)
    )
    said: list[str] = []
    rollout(world.repo, world.inv, "w1", Selector(limit=300), progress=said.append)
    assert said[0].startswith("selecting devices for ripple 1")
    assert "selected 300 devices" in said
    assert said[-3:] == [
        "building the Merkle tree over 300 devices",
        "recording ripple 1",
        "signing and publishing ripple 1",
    ]


def test_cancel_discards_a_pending_production_ceremony(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> None:
    repo = make_repo(2, 3)
    publish_wave(repo, keystore, artifact, signers=("t1", "t2"))
    with open_inventory(repo) as inv:
        ceremony = fold_into_production(repo, "w1", keys=[keystore.ref("t1")])
        assert not ceremony.complete
        assert cancel(repo, inv, "w1") == ["production.w1"]
        with pytest.raises(InputError, match="no pending ceremony"):
            sign_ceremony(repo, "production.w1", keystore.ref("t2"))
        with pytest.raises(RefusedError, match="cancelled"):
            fold_into_production(repo, "w1", keys=[keystore.ref("t1")])
        assert "waves/w1/hw1/fw-1.img" not in repo.load_targets("targets").signed.targets


def test_dry_run_does_not_reconcile(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    real = Repository.publish

    def publish_then_die(self: Repository, *a: Any, **k: Any) -> Any:
        real(self, *a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(Repository, "publish", publish_then_die)
    with pytest.raises(KeyboardInterrupt):
        rollout(world.repo, world.inv, "w1", Selector(limit=3))
    monkeypatch.setattr(Repository, "publish", real)
    before = tree_digest(world.repo.path)
    world.ripple(limit=3, dry_run=True)
    assert tree_digest(world.repo.path) == before and world.inv.ripples("w1") == []


def test_expired_wave_takes_no_more_signatures(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> None:
    repo = make_repo()
    publish_wave(repo, keystore, artifact, expires=expiry(days=1, start=repo.now()))
    with open_inventory(repo) as inv:
        inv.import_rows(FLEET)
        later = repo.now() + timedelta(days=1, seconds=1)
        repo.clock = lambda: later
        before = tree_digest(repo.path)
        for action in (
            lambda: rollout(repo, inv, "w1", Selector(limit=1)),
            lambda: cancel(repo, inv, "w1"),
            lambda: complete(repo, inv, "w1"),
        ):
            with pytest.raises(RefusedError, match="expired"):
                action()
        assert tree_digest(repo.path) == before


def test_bundle_skips_a_wave_without_a_rollout_role(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> None:
    """A wave whose rollout keys are not the repository's has no rollout role
    until its first rollout: bundles still build (without it) for its devices."""
    repo = make_repo()
    other = keystore.pub("ops").key
    publish_wave(repo, keystore, artifact, rollout_keys=[other])
    assert repo.state().version_of("rollout.w1") is None
    with open_inventory(repo) as inv:
        inv.import_rows(FLEET)
        bundle = build_bundle(repo, inv, dev(1))
        assert [f.role for f in bundle.files] == ["timestamp", "snapshot", "targets"]
        ops = keystore.ref("ops")
        chosen = rollout(repo, inv, "w1", Selector(uuids=(dev(1),)), keys=[ops]).uuids
        assert chosen == (dev(1),)
        verifier = Verifier.from_trusted_root(repo.role_bytes("root", 1))
        decision = verifier.decide(
            build_bundle(repo, inv, dev(1)), DeviceIdentity(dev(1), "hw1", "prod", 5)
        )
        assert decision.allowed and decision.ripple == 1


def test_a_tree_hashed_while_the_inventory_records_is_removed_when_recording_fails(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Merkle tree is hashed in a forked process while the inventory records
    the ripple: a refused record leaves no tree file, nothing published and
    nothing recorded; a good one publishes the same ripple as hashing here."""
    monkeypatch.setattr(merkle_file, "PARALLEL_MIN_LEAVES", 1)
    world.inv.import_rows(
        DeviceRow(dev(3000 + i), "hw1", "prod", frozenset(), 1) for i in range(300)
    )
    before = tree_digest(world.repo.path)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise RefusedError("the inventory refused the ripple")

    with monkeypatch.context() as m:
        m.setattr(world.inv, "record_ripple", refuse)
        with pytest.raises(RefusedError, match="refused the ripple"):
            rollout(world.repo, world.inv, "w1", Selector(limit=300))
    assert tree_digest(world.repo.path) == before and world.inv.ripples("w1") == []
    assert not list((world.repo.ripples_dir / "w1").glob("*"))
    same = Selector(limit=300, seed="same")
    preview = rollout(world.repo, world.inv, "w1", same, dry_run=True)
    done = rollout(world.repo, world.inv, "w1", same)
    assert done.membership == preview.membership and done.encoding == "merkle-sha256"
    assert world.decide(done.uuids[7], installed=5).allowed
