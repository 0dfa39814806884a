"""Serving and replicating a repository: file modes, read-only copies, online keys.

Some tests run commands as the unprivileged user ``nobody`` in a forked child
(the test process is root, which ignores permission bits). The repositories
they use live in a world-readable temporary directory that the test removes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pwd
import shutil
import stat
import tempfile
import traceback
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import KeyStore, publish_wave
from tufwaves.cli import main
from tufwaves.server.inventory import DeviceRow
from tufwaves.server.repository import Repository
from tufwaves.server.rollout import Selector, open_inventory, rollout
from tufwaves.server.roots import create_repository

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching to the user nobody needs root")


def _nobody() -> tuple[int, int]:
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def as_nobody(fn: Callable[[], object]) -> object:
    """Run ``fn`` in a forked child as the user nobody; return what it returned.

    The child reports through a pipe; an exception in it fails the test with
    the child's traceback.
    """
    uid, gid = _nobody()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        status = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            try:
                payload = {"ok": fn()}
            except BaseException:
                payload = {"error": traceback.format_exc()}
            with os.fdopen(write_end, "w") as f:
                json.dump(payload, f)
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        raw = f.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0, f"the child running as nobody failed (status {status})"
    result = json.loads(raw)
    assert "error" not in result, result.get("error")
    return result["ok"]


def cli_as_nobody(*argv: str) -> tuple[int, str, str]:
    """``tufwaves ARGV`` as nobody: (exit code, stdout, stderr)."""

    def run() -> list[object]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as e:  # argparse errors
                code = int(e.code or 0)
        return [code, out.getvalue(), err.getvalue()]

    code, out, err = as_nobody(run)  # type: ignore[misc]
    return int(code), str(out), str(err)


def nobody_can_read(path: Path) -> bool:
    def attempt() -> bool:
        try:
            path.read_bytes()
        except PermissionError:
            return False
        return True

    return bool(as_nobody(attempt))


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory every user may enter and read, removed afterwards."""
    old = os.umask(0o022)
    path = Path(tempfile.mkdtemp(prefix="tufwaves-serving-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        os.umask(old)
        shutil.rmtree(path, ignore_errors=True)


def dev(n: int) -> str:
    return str(uuidlib.UUID(int=n * 0x9E3779B97F4A7C15 + 1))


FLEET = [DeviceRow(dev(i), "hw1", "prod", frozenset({"eu"}), 5) for i in range(20)]


def build_world(base: Path) -> Repository:
    """A published repository with one wave, a fleet and one ripple of 5 devices."""
    keystore = KeyStore(base / "offline-keys")
    repo, _ = create_repository(
        base / "repo",
        root_keys=[keystore.ref("root")],
        root_threshold=1,
        targets_keys=[keystore.ref("t1")],
        targets_threshold=1,
    )
    artifact = base / "fw.img"
    artifact.write_bytes(b"firmware " * 100)
    publish_wave(repo, keystore, artifact)
    with open_inventory(repo) as inv:
        inv.import_rows(FLEET)
        rollout(repo, inv, "w1", Selector(limit=5, seed="s"))
    return repo


@pytest.fixture
def world(shared: Path) -> Repository:
    return build_world(shared)


# --------------------------------------------------------------- file modes


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


def test_published_files_are_world_readable_and_keys_private(world: Repository) -> None:
    published = _files(world.metadata_dir) + _files(world.targets_dir)
    assert any(p.name == "timestamp.json" for p in published)
    assert any(".ripple" in p.name or "ripple" in p.name for p in published)
    for path in published:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    keys = sorted(world.keys_dir.glob("*.key"))
    assert keys
    for path in keys:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in world.keys_dir.glob("*.pub"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


@needs_root
def test_nobody_reads_every_published_file_but_no_private_key(world: Repository) -> None:
    published = [str(p) for p in _files(world.metadata_dir) + _files(world.targets_dir)]
    keys = [str(p) for p in sorted(world.keys_dir.glob("*.key"))]

    def attempt() -> dict[str, list[str]]:
        readable, refused = [], []
        for name in published + keys:
            try:
                Path(name).read_bytes()
                readable.append(name)
            except PermissionError:
                refused.append(name)
        return {"readable": readable, "refused": refused}

    seen = as_nobody(attempt)
    assert isinstance(seen, dict)
    assert seen["readable"] == published
    assert seen["refused"] == keys


def test_private_modes_survive_a_permissive_umask(shared: Path) -> None:
    os.umask(0)
    keystore = KeyStore(shared / "k")
    keystore.make("offline")
    repo, _ = create_repository(
        shared / "repo",
        root_keys=[keystore.ref("offline")],
        root_threshold=1,
        targets_keys=[keystore.ref("t1"), keystore.pub("t2")],
        targets_threshold=2,  # the first targets waits in a ceremony
    )
    for path in [*repo.keys_dir.glob("*.key"), *keystore.directory.glob("*.key")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    ceremony = repo.staging_dir / "repository.json"
    assert stat.S_IMODE(ceremony.stat().st_mode) == 0o644


def test_staged_wave_files_are_private(shared: Path) -> None:
    keystore = KeyStore(shared / "k")
    repo, _ = create_repository(
        shared / "repo",
        root_keys=[keystore.ref("root")],
        root_threshold=1,
        targets_keys=[keystore.ref("t1"), keystore.pub("t2")],
        targets_threshold=1,
    )
    artifact = shared / "fw.img"
    artifact.write_bytes(b"fw")
    publish_wave(repo, keystore, artifact, signers=())  # pending: nobody signed
    local = sorted(repo.staging_dir.glob("*.local.json"))
    blobs = sorted(repo.staging_dir.glob("*.artifacts/*"))
    assert local and blobs
    for path in local + blobs:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in repo.staging_dir.glob("*.json"):
        if not path.name.endswith(".local.json"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_copied_online_keys_keep_private_mode(shared: Path) -> None:
    keystore = KeyStore(shared / "k")
    elsewhere = KeyStore(shared / "online")
    elsewhere.make("snap")
    (elsewhere.directory / "snap.key").chmod(0o640)  # whatever the source was
    repo, _ = create_repository(
        shared / "repo",
        root_keys=[keystore.ref("root")],
        root_threshold=1,
        targets_keys=[keystore.ref("t1")],
        targets_threshold=1,
        online_keys={"snapshot": elsewhere.directory / "snap.pub"},
    )
    assert stat.S_IMODE((repo.keys_dir / "snap.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((repo.keys_dir / "snap.pub").stat().st_mode) == 0o644
