"""The trust state directory: persistence, rollback across runs, crash safety."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.simulator import NOW, Simulator, device
from tufwaves.errors import StorageError, VerificationError
from tufwaves.verify import DeviceIdentity, Reason, Verifier

D = device(1)
ME = DeviceIdentity(D, "hw-a", "main", 4)


@pytest.fixture
def sim() -> Simulator:
    s = Simulator()
    s.add_wave("w1", 7)
    s.add_list_ripple("w1", [D])
    return s


@pytest.fixture
def state_dir(tmp_path: Path, sim: Simulator) -> Path:
    (tmp_path / "root.json").write_bytes(sim.trusted_root())
    return tmp_path


def state(path: Path) -> dict:
    result: dict = json.loads((path / "state.json").read_text())
    return result


def test_state_is_written_after_a_verified_decision(sim: Simulator, state_dir: Path) -> None:
    assert Verifier.from_state_dir(state_dir).decide(sim.bundle(D), ME, NOW).allowed
    s = state(state_dir)
    assert s["format"] == "tufwaves-verifier-state"
    assert s["root"]["version"] == 1
    assert s["timestamp"]["version"] == sim.timestamp.version
    assert s["snapshot"]["meta"]["rollout.w1.json"] == 2
    assert (state_dir / "roots" / "1.root.json").read_bytes() == sim.trusted_root()


def test_rollback_protection_holds_across_runs(sim: Simulator, state_dir: Path) -> None:
    old = sim.bundle(D)
    sim.set_state("w1", "cancelled")
    new = sim.bundle(D)
    assert Verifier.from_state_dir(state_dir).decide(new, ME, NOW).reason is (Reason.WAVE_CANCELLED)
    # A later run is offered the pre-cancel metadata: refused.
    d = Verifier.from_state_dir(state_dir).decide(old, ME, NOW)
    assert d.reason is Reason.ROLLBACK


def test_a_denial_that_verified_updates_the_state(sim: Simulator, state_dir: Path) -> None:
    outsider = DeviceIdentity(device(2), "hw-a", "main", 4)
    d = Verifier.from_state_dir(state_dir).decide(sim.bundle(device(2)), outsider, NOW)
    assert d.reason is Reason.NOT_MEMBER
    assert state(state_dir)["timestamp"]["version"] == sim.timestamp.version


def test_a_failed_verification_leaves_the_state_alone(sim: Simulator, state_dir: Path) -> None:
    Verifier.from_state_dir(state_dir).decide(sim.bundle(D), ME, NOW)
    before = (state_dir / "state.json").read_bytes()
    sim.expire("snapshot")
    d = Verifier.from_state_dir(state_dir).decide(sim.bundle(D), ME, NOW)
    assert d.reason is Reason.METADATA_EXPIRED
    assert (state_dir / "state.json").read_bytes() == before


def test_crash_between_root_file_and_state_file(
    sim: Simulator, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Verifier.from_state_dir(state_dir).decide(sim.bundle(D), ME, NOW)
    before = (state_dir / "state.json").read_bytes()
    sim.rotate_root(keys={"root": ["root-2"], "timestamp": ["timestamp-2"]})
    bundle = sim.bundle(D)
    real_replace = os.replace

    def power_cut(src: str, dst: str) -> None:
        if Path(dst).name == "state.json":
            raise OSError("power cut")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", power_cut)
    d = Verifier.from_state_dir(state_dir).decide(bundle, ME, NOW)
    assert d.reason is Reason.STATE_WRITE_FAILED
    monkeypatch.undo()

    # The root file was written, the state was not: the old state is intact.
    assert (state_dir / "roots" / "2.root.json").exists()
    assert (state_dir / "state.json").read_bytes() == before
    assert not [p for p in state_dir.iterdir() if p.name.endswith(".tmp")]
    verifier = Verifier.from_state_dir(state_dir)
    assert verifier.trusted_root_version == 1
    assert verifier.decide(bundle, ME, NOW).allowed
    assert Verifier.from_state_dir(state_dir).trusted_root_version == 2


def test_crash_while_writing_the_state_file(
    sim: Simulator, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Verifier.from_state_dir(state_dir).decide(sim.bundle(D), ME, NOW)
    before = (state_dir / "state.json").read_bytes()

    def crash(fd: int) -> None:
        raise OSError("I/O error")

    monkeypatch.setattr(os, "fsync", crash)
    assert not Verifier.from_state_dir(state_dir).decide(sim.bundle(D), ME, NOW).allowed
    monkeypatch.undo()
    assert (state_dir / "state.json").read_bytes() == before
    assert not [p for p in state_dir.iterdir() if p.name.endswith(".tmp")]


def test_unusable_state_dirs(tmp_path: Path, sim: Simulator, state_dir: Path) -> None:
    with pytest.raises(StorageError):
        Verifier.from_state_dir(tmp_path / "missing")
    Verifier.from_state_dir(state_dir).decide(sim.bundle(D), ME, NOW)
    (state_dir / "roots" / "1.root.json").write_bytes(b"{}")
    with pytest.raises(StorageError):
        Verifier.from_state_dir(state_dir)
    (state_dir / "state.json").write_text("[]")
    with pytest.raises(StorageError):
        Verifier.from_state_dir(state_dir)


def test_an_invalid_trusted_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(VerificationError):
        Verifier.from_trusted_root(b'{"signed": {}}')
    (tmp_path / "root.json").write_bytes(b"not json")
    with pytest.raises(StorageError):
        Verifier.from_state_dir(tmp_path)
