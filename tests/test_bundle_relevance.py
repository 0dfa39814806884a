"""Bundles leave out waves that can no longer matter to the device (specs/bundle.md §2.1).

The repository clock is injected (``repo.clock``), never waited for.
"""

from __future__ import annotations

import dataclasses
import uuid as uuidlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import KeyStore, RepoFactory, publish_wave
from tufwaves.server.bundler import BundleSource, build_bundle
from tufwaves.server.inventory import DeviceRow
from tufwaves.server.inventory.sqlite import SqliteInventory
from tufwaves.server.metadata import expiry
from tufwaves.server.repository import Repository
from tufwaves.server.rollout import Selector, cancel, complete, open_inventory, rollout
from tufwaves.verify import Decision, DeviceIdentity, Reason, Verifier


def dev(n: int) -> str:
    return str(uuidlib.UUID(int=n * 0x9E3779B97F4A7C15 + 1))


FLEET = [DeviceRow(dev(i), "hw1", "prod", frozenset(), 5) for i in range(10)] + [
    DeviceRow(dev(10), "hw1", "prod", frozenset(), 10),  # already runs version 10
]


@pytest.fixture
def repo(make_repo: RepoFactory) -> Repository:
    return make_repo()


@pytest.fixture
def inv(repo: Repository) -> Iterator[SqliteInventory]:
    with open_inventory(repo) as inventory:
        inventory.import_rows(FLEET)
        yield inventory


def waves_of(repo: Repository, inv: SqliteInventory, uuid: str) -> list[str]:
    bundle = build_bundle(repo, inv, uuid)
    return [f.role.removeprefix("wave.") for f in bundle.files if f.role.startswith("wave.")]


def decide(repo: Repository, inv: SqliteInventory, uuid: str, installed: int = 5) -> Decision:
    verifier = Verifier.from_trusted_root(repo.role_bytes("root", 1))
    identity = DeviceIdentity(uuid, "hw1", "prod", installed)
    return verifier.decide(build_bundle(repo, inv, uuid), identity, repo.now())


def test_an_expired_wave_is_left_out(
    repo: Repository, inv: SqliteInventory, keystore: KeyStore, artifact: Path
) -> None:
    publish_wave(repo, keystore, artifact, "w6", 10, expires=expiry(days=30, start=repo.now()))
    publish_wave(repo, keystore, artifact, "w7", 11)
    for wave in ("w6", "w7"):
        rollout(repo, inv, wave, Selector(uuids=(dev(1),)))
    assert waves_of(repo, inv, dev(1)) == ["w6", "w7"]
    later = repo.now() + timedelta(days=31)
    repo.clock = lambda: later
    repo.refresh()  # the cron job keeps snapshot and timestamp fresh
    assert waves_of(repo, inv, dev(1)) == ["w7"]
    d = decide(repo, inv, dev(1))
    assert d.reason is Reason.ALLOWED_RIPPLE and d.wave == "w7", d.message
    # Named explicitly, a wave is included as it is.
    bundle = build_bundle(repo, inv, dev(1), waves=["w6"])
    assert "wave.w6" in [f.role for f in bundle.files]


def test_a_wave_not_newer_than_the_installed_version_is_left_out(
    repo: Repository, inv: SqliteInventory, keystore: KeyStore, artifact: Path
) -> None:
    publish_wave(repo, keystore, artifact, "w1", 10)
    publish_wave(repo, keystore, artifact, "w2", 11)
    assert waves_of(repo, inv, dev(10)) == ["w2"]
    assert waves_of(repo, inv, dev(1)) == ["w1", "w2"]


def test_waves_below_a_newer_complete_wave_are_left_out(
    repo: Repository, inv: SqliteInventory, keystore: KeyStore, artifact: Path
) -> None:
    publish_wave(repo, keystore, artifact, "w1", 10)
    publish_wave(repo, keystore, artifact, "w2", 11)
    publish_wave(repo, keystore, artifact, "w3", 12)
    for wave in ("w1", "w2", "w3"):
        rollout(repo, inv, wave, Selector(uuids=(dev(1),)))
    complete(repo, inv, "w2")
    assert waves_of(repo, inv, dev(1)) == ["w2", "w3"]
    assert decide(repo, inv, dev(1)).wave == "w3"
    assert decide(repo, inv, dev(2)).reason is Reason.ALLOWED_COMPLETE


def test_a_cancelled_wave_stays_until_it_expires(
    repo: Repository, inv: SqliteInventory, keystore: KeyStore, artifact: Path
) -> None:
    publish_wave(repo, keystore, artifact, "w1", 10, expires=expiry(days=30, start=repo.now()))
    rollout(repo, inv, "w1", Selector(uuids=(dev(1),)))
    cancel(repo, inv, "w1")
    assert waves_of(repo, inv, dev(1)) == ["w1"]  # the device must see the cancel
    assert decide(repo, inv, dev(1)).reason is Reason.WAVE_CANCELLED
    later = repo.now() + timedelta(days=30)
    repo.clock = lambda: later
    assert waves_of(repo, inv, dev(1)) == []


def test_a_device_record_passed_in_is_used_and_one_of_another_device_is_not(
    repo: Repository, inv: SqliteInventory, keystore: KeyStore, artifact: Path
) -> None:
    """BundleSource.plan(device=...) saves the look-up; a record of another UUID is ignored."""
    publish_wave(repo, keystore, artifact, "w1", 10)
    publish_wave(repo, keystore, artifact, "w2", 11)
    source = BundleSource(repo, repo.state())
    current = inv.get(dev(10))  # installed 10: w1 is left out
    assert current is not None
    stale = dataclasses.replace(current, installed_version=5)
    planned = source.plan(inv, dev(10), device=stale)
    assert [r for r, _ in planned.files if r.startswith("wave.")] == ["wave.w1", "wave.w2"]
    other = inv.get(dev(3))
    assert other is not None and other.installed_version == 5
    looked_up = source.plan(inv, dev(10), device=dataclasses.replace(other, installed_version=5))
    assert [r for r, _ in looked_up.files if r.startswith("wave.")] == ["wave.w2"]
    assert looked_up.bundle().to_bytes() == build_bundle(repo, inv, dev(10)).to_bytes()
