"""Serving and replicating a repository: file modes, read-only copies, online keys.

Some tests run commands as the unprivileged user ``nobody`` in a forked child
(the test process is root, which ignores permission bits). The repositories
they use live in a world-readable temporary directory that the test removes.
"""

from __future__ import annotations

import contextlib
import fcntl
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding, PrivateFormat, PublicFormat

from tests.conftest import PASSPHRASE, KeyStore, publish_wave
from tufwaves.cli import main
from tufwaves.cli import repo as repo_cli
from tufwaves.errors import KeyUseError, StorageError
from tufwaves.server.inventory import DeviceRow
from tufwaves.server.keys import (
    ONLINE_PASSPHRASE_ENV,
    PASSPHRASE_ENV,
    generate_key,
    import_uri_key,
    load_key_ref,
    passphrase,
)
from tufwaves.server.repository import Repository
from tufwaves.server.rollout import Selector, open_inventory, rollout
from tufwaves.server.roots import ONLINE_ROLES, create_repository

needs_root = pytest.mark.usefixtures("as_root")


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


# ------------------------------------------------------- read-only replicas


def read_only_copy(repo: Repository, dest: Path, *, quiesce: bool = True) -> Path:
    """A root-owned copy of ``repo``: directories 0755, files 0644 (keys 0600)."""
    if quiesce:  # as a replication job would: the inventory without a live WAL
        with open_inventory(repo) as inv:
            inv._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copytree(repo.path, dest, symlinks=True)
    for extra in (".lock", "inventory.sqlite-wal", "inventory.sqlite-shm"):
        (dest / extra).unlink(missing_ok=True)
    return dest


def strip_write_bits(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        mode = stat.S_IMODE(p.lstat().st_mode)
        p.chmod(mode & ~0o222)


READ_COMMANDS = [
    ("waves", "list"),
    ("waves", "show", "w1"),
    ("waves", "show", "w1", "--members", "--ripple", "1"),
    ("waves", "status", "w1"),
    ("fleet", "list"),
    ("fleet", "show", dev(0)),
    ("waves", "rollout", "w1", "--limit", "3", "--seed", "x", "--dry-run"),
    ("repo", "show"),
]


def _reads(repo: Path, shared: Path) -> list[tuple[str, ...]]:
    out = shared / "bundles"
    out.mkdir(exist_ok=True)
    out.chmod(0o777)
    bundle = ("device", "bundle", dev(0), "--out", str(out / "d0.bundle"), "--force")
    return [(*cmd, "--repo", str(repo)) for cmd in [*READ_COMMANDS, bundle]]


@needs_root
def test_read_commands_work_as_nobody_on_a_root_owned_copy(world: Repository, shared: Path) -> None:
    copy = read_only_copy(world, shared / "replica")
    for argv in _reads(copy, shared):
        code, out, err = cli_as_nobody(*argv)
        assert code == 0, (argv, out, err)
        assert "Traceback" not in err
    assert sorted(p.name for p in copy.iterdir() if p.name.startswith(("inventory", "."))) == [
        "inventory.sqlite"
    ]  # nothing was created: no lock, no -wal / -shm


@needs_root
def test_read_commands_as_nobody_on_the_live_repository(world: Repository, shared: Path) -> None:
    # The primary, with its inventory open in WAL mode by a writer right now.
    with open_inventory(world) as writer:
        writer.report(dev(1), 7)
        for argv in _reads(world.path, shared):
            code, out, err = cli_as_nobody(*argv)
            assert code == 0, (argv, out, err)
    code, out, _ = cli_as_nobody("fleet", "show", dev(1), "--json", "--repo", str(world.path))
    assert json.loads(out)["installed_version"] == 7


@needs_root
def test_read_commands_on_a_copy_without_write_bits(world: Repository, shared: Path) -> None:
    copy = read_only_copy(world, shared / "replica")
    strip_write_bits(copy)
    for argv in _reads(copy, shared):
        code, out, err = cli_as_nobody(*argv)
        assert code == 0, (argv, out, err)
    code, out, _ = cli_as_nobody("waves", "status", "w1", "--json", "--repo", str(copy))
    assert json.loads(out)["groups"]


@needs_root
def test_a_copy_with_pending_wal_changes_is_a_clear_error(world: Repository, shared: Path) -> None:
    with open_inventory(world) as writer:  # keeps its WAL while it is open
        writer._conn.execute("PRAGMA wal_autocheckpoint = 0")
        writer.report(dev(2), 9)
        copy = read_only_copy(world, shared / "replica", quiesce=False)
        shutil.copy(world.path / "inventory.sqlite-wal", copy / "inventory.sqlite-wal")
    code, _, err = cli_as_nobody("fleet", "list", "--repo", str(copy))
    assert code == 3, err
    assert "write-ahead log" in err and "Traceback" not in err


@needs_root
@pytest.mark.parametrize(
    "argv",
    [
        ("repo", "refresh"),
        ("waves", "init", "w2", "11", "prod", "--hardware-id", "hw1", "--artifact", "{fw}"),
        ("waves", "rollout", "w1", "--limit", "1"),
        ("waves", "cancel", "w1"),
        ("fleet", "report", dev(0), "--installed-version", "6"),
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_write_commands_on_a_read_only_copy_fail_clearly(
    world: Repository, shared: Path, argv: tuple[str, ...]
) -> None:
    copy = read_only_copy(world, shared / "replica")
    (copy / ".lock").touch()  # even with a lock file present (root's, 0644)
    argv = tuple(a.replace("{fw}", str(shared / "fw.img")) for a in argv)
    code, out, err = cli_as_nobody(*argv, "--repo", str(copy))
    assert code == 3, (out, err)
    assert "Traceback" not in err
    assert "read-only" in err or "not writable" in err or "cannot be changed" in err


def test_write_command_on_a_read_only_directory_in_process(
    world: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without switching users: the lock file cannot be opened for writing.
    def refuse(path: object, flags: int, mode: int = 0o777) -> int:
        raise PermissionError(13, "Permission denied", str(path))

    with monkeypatch.context() as patch:  # undone before the directory is removed
        patch.setattr(os, "open", refuse)
        with pytest.raises(StorageError, match="cannot be changed by this process"):
            world.refresh()


def test_dry_run_takes_a_shared_lock(world: Repository) -> None:
    with open_inventory(world, read_only=True) as inv, world.locked(shared=True):
        fd = os.open(world.path / ".lock", os.O_RDONLY)
        try:  # another reader gets in; a writer would wait
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        result = rollout(world, inv, "w1", Selector(limit=2, seed="y"), dry_run=True)
    assert len(result.uuids) == 2
    with pytest.raises(RuntimeError), world.locked(shared=True):
        world.publish({})


# ------------------------------------------------------------- online keys

ONLINE = "online only, for cron"


def _new_repo(base: Path, **kw: object) -> Repository:
    keystore = KeyStore(base / "offline-keys")
    repo, _ = create_repository(
        base / "repo",
        root_keys=[keystore.ref("root")],
        root_threshold=1,
        targets_keys=[keystore.ref("t1")],
        targets_threshold=1,
        **kw,  # type: ignore[arg-type]
    )
    return repo


def test_refresh_needs_only_the_online_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ONLINE_PASSPHRASE_ENV, ONLINE)
    repo = _new_repo(tmp_path)  # offline keys: TUFWAVES_KEY_PASSPHRASE
    monkeypatch.delenv(PASSPHRASE_ENV)  # the cron job has no offline passphrase
    before = repo.state().timestamp.signed.version
    assert main(["repo", "refresh", "--repo", str(repo.path)]) == 0
    assert repo.state().timestamp.signed.version == before + 1
    # The online keys really are under the online passphrase, not the offline one.
    monkeypatch.setenv(ONLINE_PASSPHRASE_ENV, PASSPHRASE)
    assert main(["repo", "refresh", "--repo", str(repo.path)]) == 3
    assert "cannot decrypt" in capsys.readouterr().err
    # ... and the offline keys cannot be used with it.
    monkeypatch.setenv(PASSPHRASE_ENV, ONLINE)
    with pytest.raises(KeyUseError):
        load_key_ref(str(tmp_path / "offline-keys" / "t1.key"))


def test_online_passphrase_falls_back_to_the_key_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ONLINE_PASSPHRASE_ENV, raising=False)
    repo = _new_repo(tmp_path)  # one passphrase for everything, as before
    assert main(["repo", "refresh", "--repo", str(repo.path)]) == 0
    assert passphrase("x", online=True) == PASSPHRASE.encode()
    monkeypatch.setenv(ONLINE_PASSPHRASE_ENV, "")
    with pytest.raises(KeyUseError, match=ONLINE_PASSPHRASE_ENV):
        passphrase("x", online=True)


def test_missing_online_passphrase_names_both_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _new_repo(tmp_path)
    monkeypatch.delenv(PASSPHRASE_ENV)
    monkeypatch.delenv(ONLINE_PASSPHRASE_ENV, raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO())
    assert main(["repo", "refresh", "--repo", str(repo.path)]) == 3
    err = capsys.readouterr().err
    assert ONLINE_PASSPHRASE_ENV in err and PASSPHRASE_ENV in err


def _uri_key(directory: Path, name: str) -> Path:
    """A ``.pub`` naming a ``file2:`` private-key URI (stands in for a KMS/HSM)."""
    directory.mkdir(parents=True, exist_ok=True)
    signer = generate_key("ed25519")
    pem = directory / f"{name}.pem"
    pem.write_bytes(
        signer._private_key.private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    pem.chmod(0o600)
    public = signer.public_key._crypto_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
    )
    return import_uri_key(name, directory, f"file2:{pem}", public)


def test_online_keys_behind_uris_need_no_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    online = {role: _uri_key(tmp_path / "kms", role) for role in ONLINE_ROLES}
    repo = _new_repo(tmp_path, online_keys=online)
    assert not list(repo.keys_dir.glob("*.key"))
    monkeypatch.delenv(PASSPHRASE_ENV)
    monkeypatch.delenv(ONLINE_PASSPHRASE_ENV, raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO())
    assert main(["repo", "refresh", "--repo", str(repo.path)]) == 0
    assert repo.state().timestamp.signed.version == 2


def test_repo_show_prints_the_expiry_of_every_role(
    world: Repository, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["repo", "show", "--json", "--repo", str(world.path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    roles = {"root", "targets", "snapshot", "timestamp", "wave.w1", "rollout.w1", "ripple.w1.1"}
    assert set(doc["expires"]) == roles
    assert doc["expired"] == []
    assert doc["earliest_delegated_expiry"]["role"] in roles - {"root", "targets"}
    ts = datetime.fromisoformat(doc["expires"]["timestamp"].replace("Z", "+00:00"))
    snap = datetime.fromisoformat(doc["expires"]["snapshot"].replace("Z", "+00:00"))
    assert timedelta(hours=23) < ts - datetime.now(UTC) <= timedelta(days=1)
    assert timedelta(days=6) < snap - datetime.now(UTC) <= timedelta(days=7)

    monkeypatch.setattr(repo_cli, "now", lambda: datetime.now(UTC) + timedelta(days=2))
    assert main(["repo", "show", "--repo", str(world.path)]) == 0
    text = capsys.readouterr().out
    assert "expired: timestamp" in text
    assert "  wave.w1: 20" in text and "earliest_delegated_expiry:" in text
