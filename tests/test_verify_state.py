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


# -- symbolic links and size caps (the verifier stays inside its directory) ----


def test_a_roots_symlink_is_not_written_through(
    tmp_path: Path, sim: Simulator, state_dir: Path
) -> None:
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    elsewhere.mkdir()
    (state_dir / "roots").symlink_to(elsewhere, target_is_directory=True)
    d = Verifier.from_state_dir(state_dir).decide(sim.bundle(D), ME, NOW)
    assert d.reason is Reason.STATE_WRITE_FAILED
    assert "symbolic link" in d.message
    assert list(elsewhere.iterdir()) == []
    assert not (state_dir / "state.json").exists()


def test_a_roots_symlink_is_not_read_through(sim: Simulator, state_dir: Path) -> None:
    assert Verifier.from_state_dir(state_dir).decide(sim.bundle(D), ME, NOW).allowed
    moved = state_dir.parent / f"{state_dir.name}-roots"
    (state_dir / "roots").rename(moved)
    (state_dir / "roots").symlink_to(moved, target_is_directory=True)
    with pytest.raises(StorageError, match="symbolic link"):
        Verifier.from_state_dir(state_dir)


@pytest.mark.parametrize("name", ["root.json", "state.json", "roots/1.root.json"])
def test_a_symlinked_state_file_is_refused(sim: Simulator, state_dir: Path, name: str) -> None:
    if name != "root.json":
        assert Verifier.from_state_dir(state_dir).decide(sim.bundle(D), ME, NOW).allowed
    link = state_dir / name
    target = state_dir.parent / f"{state_dir.name}-target"
    target.write_bytes(link.read_bytes())
    link.unlink()
    link.symlink_to(target)
    with pytest.raises(StorageError, match="symbolic link"):
        Verifier.from_state_dir(state_dir)


def test_a_symlinked_root_file_is_not_written_through(sim: Simulator, state_dir: Path) -> None:
    target = state_dir.parent / f"{state_dir.name}-target"
    target.write_bytes(b"")
    (state_dir / "roots").mkdir()
    (state_dir / "roots" / "1.root.json").symlink_to(target)
    d = Verifier.from_state_dir(state_dir).decide(sim.bundle(D), ME, NOW)
    assert d.reason is Reason.STATE_WRITE_FAILED
    assert target.read_bytes() == b""


def test_a_root_linked_to_dev_zero_is_refused(state_dir: Path) -> None:
    (state_dir / "root.json").unlink()
    (state_dir / "root.json").symlink_to("/dev/zero")
    with pytest.raises(StorageError, match="symbolic link"):
        Verifier.from_state_dir(state_dir)


def test_a_pipe_in_place_of_a_root_file_is_refused(sim: Simulator, state_dir: Path) -> None:
    assert Verifier.from_state_dir(state_dir).decide(sim.bundle(D), ME, NOW).allowed
    (state_dir / "roots" / "1.root.json").unlink()
    os.mkfifo(state_dir / "roots" / "1.root.json")
    with pytest.raises(StorageError, match="not a regular file"):
        Verifier.from_state_dir(state_dir)


def test_state_files_are_read_with_a_cap(sim: Simulator, state_dir: Path) -> None:
    assert Verifier.from_state_dir(state_dir).decide(sim.bundle(D), ME, NOW).allowed
    (state_dir / "roots" / "1.root.json").write_bytes(b" " * 600_000)
    with pytest.raises(StorageError, match="size cap of 512,000 bytes"):
        Verifier.from_state_dir(state_dir)
    (state_dir / "state.json").write_bytes(b" " * 16_000_001)
    with pytest.raises(StorageError, match=r"state\.json is over its size cap"):
        Verifier.from_state_dir(state_dir)


def test_a_missing_roots_folder_is_refused(sim: Simulator, state_dir: Path) -> None:
    assert Verifier.from_state_dir(state_dir).decide(sim.bundle(D), ME, NOW).allowed
    for f in (state_dir / "roots").iterdir():
        f.unlink()
    (state_dir / "roots").rmdir()
    with pytest.raises(StorageError, match="roots/ does not exist"):
        Verifier.from_state_dir(state_dir)


def test_a_file_swapped_for_a_pipe_after_the_check_is_refused(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kind of file is checked again on the open descriptor (no race)."""
    from tufwaves.device import _client

    (state_dir / "root.json").unlink()
    os.mkfifo(state_dir / "root.json")
    monkeypatch.setattr(_client, "_entry", lambda path, directory=False: path.exists())
    with pytest.raises(StorageError, match="not a regular file"):
        Verifier.from_state_dir(state_dir)
