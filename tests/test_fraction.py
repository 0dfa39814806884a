"""Deterministic fraction ripples: the verifier agrees with the auditor's member set."""

from __future__ import annotations

import json
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import KeyStore, RepoFactory, publish_wave, tree_digest
from tufwaves.cli import main
from tufwaves.errors import InputError, RefusedError
from tufwaves.server.bundler import build_bundle
from tufwaves.server.inventory import DeviceRow
from tufwaves.server.inventory.sqlite import SqliteInventory
from tufwaves.server.metadata import Policy
from tufwaves.server.repository import Repository
from tufwaves.server.rollout import Selector, cancel, open_inventory, ripple_members, rollout
from tufwaves.verify import DeviceIdentity, Verifier

N = 600


def dev(n: int) -> str:
    return str(uuidlib.UUID(int=(n + 7) * 0x2545F4914F6CDD1D * 0x9E3779B97F4A7C15 % 2**128))


FLEET = (
    [DeviceRow(dev(i), "hw1", "prod", frozenset({"eu"}), 5) for i in range(N)]
    + [DeviceRow(dev(N + i), "hw2", "prod", frozenset(), 5) for i in range(50)]
    + [DeviceRow(dev(2 * N + i), "hw1", "beta", frozenset(), 5) for i in range(50)]
)


@pytest.fixture
def setup(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> Iterator[tuple[Repository, SqliteInventory, Verifier]]:
    repo = make_repo()
    publish_wave(repo, keystore, artifact)
    inv = open_inventory(repo)
    inv.import_rows(FLEET)
    yield repo, inv, Verifier.from_trusted_root(repo.role_bytes("root", 1))
    inv.close()


def decide(
    repo: Repository,
    inv: SqliteInventory,
    verifier: Verifier,
    uid: str,
    hw: str = "hw1",
    tag: str = "prod",
    installed: int = 5,
):  # type: ignore[no-untyped-def]
    return verifier.decide(
        build_bundle(repo, inv, uid, waves=["w1"]), DeviceIdentity(uid, hw, tag, installed)
    )


def test_verifier_agrees_with_auditor_for_every_device(setup) -> None:  # type: ignore[no-untyped-def]
    repo, inv, verifier = setup
    rollout(repo, inv, "w1", Selector(fraction_ppm=100_000))
    first = set(ripple_members(repo, inv, "w1", 1))
    rollout(repo, inv, "w1", Selector(fraction_ppm=300_000))
    second = set(ripple_members(repo, inv, "w1", 2))
    assert first <= second, "raising the fraction only adds devices"
    assert 0.2 * N < len(second) < 0.4 * N
    for row in FLEET:
        d = decide(repo, inv, verifier, row.uuid, row.hardware_id, row.tag)
        expected = row.uuid in second
        assert d.allowed == expected, (row, d.reason)
        if expected:
            assert d.reason.value == "allowed_fraction" and d.ripple in (1, 2)
    # Devices of other hardware or tag are never members, whatever their hash.
    assert all(r.uuid not in second for r in FLEET[N:])


def test_fraction_respects_version_and_cancel(setup) -> None:  # type: ignore[no-untyped-def]
    repo, inv, verifier = setup
    rollout(repo, inv, "w1", Selector(fraction_ppm=500_000))
    member = ripple_members(repo, inv, "w1", 1)[0]
    assert decide(repo, inv, verifier, member).allowed
    assert decide(repo, inv, verifier, member, installed=10).reason.value == "not_newer"
    cancel(repo, inv, "w1")
    assert decide(repo, inv, verifier, member).reason.value == "wave_cancelled"


@pytest.mark.parametrize(
    "kw",
    [
        {"fraction_ppm": 1000, "group": "eu"},
        {"fraction_ppm": 1000, "limit": 3},
        {"fraction_ppm": 0},
        {"fraction_ppm": 1_000_001},
    ],
    ids=["with-group", "with-limit", "zero", "above-one"],
)
def test_fraction_refusals(setup, kw) -> None:  # type: ignore[no-untyped-def]
    repo, inv, _ = setup
    before = tree_digest(repo.path)
    with pytest.raises(InputError):
        rollout(repo, inv, "w1", Selector(**kw))
    assert tree_digest(repo.path) == before


def test_show_members_cli_matches_verifier(setup, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    repo, inv, verifier = setup
    rollout(repo, inv, "w1", Selector(fraction_ppm=200_000))
    assert (
        main(
            [
                "waves",
                "show",
                "w1",
                "--repo",
                str(repo.path),
                "--members",
                "--ripple",
                "1",
                "--json",
            ]
        )
        == 0
    )
    listed = set(json.loads(capsys.readouterr().out)["members"])
    allowed = {
        r.uuid for r in FLEET if decide(repo, inv, verifier, r.uuid, r.hardware_id, r.tag).allowed
    }
    assert listed == allowed and listed


def test_fraction_cap_is_enforced_before_signing(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> None:
    repo = make_repo()
    publish_wave(repo, keystore, artifact, "capped", 10, policy=Policy(max_fraction_ppm=200_000))
    publish_wave(repo, keystore, artifact, "offline-only", 11, policy=Policy(online_complete=False))
    with open_inventory(repo) as inv:
        inv.import_rows(FLEET)
        before = tree_digest(repo.path)
        with pytest.raises(RefusedError, match="at most 20%"):
            rollout(repo, inv, "capped", Selector(fraction_ppm=200_001))
        with pytest.raises(RefusedError, match="at most 0%"):
            rollout(repo, inv, "offline-only", Selector(fraction_ppm=1))
        assert tree_digest(repo.path) == before
        assert rollout(repo, inv, "capped", Selector(fraction_ppm=200_000)).index == 1


def test_policy_refuses_a_full_fraction_without_online_complete() -> None:
    assert Policy(online_complete=False).fraction_cap == 0
    assert Policy().fraction_cap == 1_000_000
    with pytest.raises(InputError, match="completes the wave"):
        Policy(online_complete=False, max_fraction_ppm=1_000_000)
