"""Rotating the online keys and the targets keys (specs/rotation.md), via the server API."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from tuf.api.exceptions import RepositoryError
from tuf.api.metadata import Metadata, MetaFile, Snapshot, Timestamp
from tuf.ngclient import Updater

from tests.conftest import KeyStore, RepoFactory, publish_wave
from tufwaves.cli import main
from tufwaves.demo.ngcheck import BASE, DirectoryFetcher
from tufwaves.server import (
    Keyring,
    Policy,
    RefusedError,
    Repository,
    Selector,
    build_bundle,
    cancel,
    load_ceremony,
    open_inventory,
    review,
    rollout,
    rotate_online_keys,
    rotate_targets_keys,
    sign_ceremony,
)
from tufwaves.server.inventory import DeviceRow
from tufwaves.server.metadata import rollout_delegation
from tufwaves.server.waves import wave_salt
from tufwaves.verify import DeviceIdentity, Reason, Verifier

MEMBER = "3f2a0c1e-0000-4000-8000-000000000001"


def with_ripple(repo: Repository) -> None:
    with open_inventory(repo) as inv:
        inv.import_rows([DeviceRow(MEMBER, "hw1", "prod", (), 1)])
        rollout(repo, inv, "w1", Selector(uuids=(MEMBER,)))


def decide(repo: Repository, verifier: Verifier) -> Reason:
    with open_inventory(repo) as inv:
        data = build_bundle(repo, inv, MEMBER).to_bytes()
    return verifier.decide(data, DeviceIdentity(MEMBER, "hw1", "prod", 1)).reason


def test_online_rotation_waits_for_both_thresholds_and_shows_what_it_revokes(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> None:
    repo = make_repo()
    publish_wave(repo, keystore, artifact)
    with_ripple(repo)
    old = {r: repo.online_key(r).keyid for r in ("snapshot", "timestamp", "rollout")}
    verifier = Verifier.from_trusted_root(repo.role_bytes("root", 1))
    assert decide(repo, verifier) is Reason.ALLOWED_RIPPLE

    ceremony = rotate_online_keys(repo)
    assert not ceremony.complete and ceremony.id == "root.2"
    assert [r.name for r in ceremony.roles] == ["root", "wave.w1"]
    ring = Keyring.load([keystore.directory, repo.metadata_dir / "1.root.json"])
    text = review(load_ceremony(repo, ceremony.id), ring).text()
    for label in ("snapshot keys", "timestamp keys"):
        key = old[label.split()[0]]
        assert f"- {label}: key {key[:16]} removed (REVOKED" in text
    assert f"- rollout.w1 keys: key {old['rollout'][:16]} removed (REVOKED" in text

    # Until it is published the old keys keep signing; refresh still works.
    repo.refresh()
    with pytest.raises(RefusedError, match="pending"):
        rotate_targets_keys(repo, targets_keys=[keystore.ref("t2")])
    with pytest.raises(RefusedError, match=r"key rotation root\.2 is pending"):
        publish_wave(repo, keystore, artifact, "w2", 11)  # would delegate to the old key
    sign_ceremony(repo, ceremony.id, keystore.ref("root"))
    assert repo.online_key("timestamp").keyid == old["timestamp"]
    done = sign_ceremony(repo, ceremony.id, keystore.ref("t1"))
    assert done.complete
    new = {r: repo.online_key(r).keyid for r in ("snapshot", "timestamp", "rollout")}
    assert all(new[r] != old[r] for r in new)
    root = repo.root().signed
    assert root.version == 2
    assert root.roles["timestamp"].keyids == [new["timestamp"]]
    assert old["snapshot"] not in root.keys
    state = repo.state()
    assert state.version_of("wave.w1") == 2
    assert state.version_of("rollout.w1") == 3
    assert state.version_of("ripple.w1.1") == 2
    drole, _ = rollout_delegation(repo.load_targets("wave.w1"))
    assert drole.keyids == [new["rollout"]]
    ripple = Metadata.from_bytes(repo.role_bytes("ripple.w1.1"))
    assert list(ripple.signatures) == [new["rollout"]]

    assert decide(repo, verifier) is Reason.ALLOWED_RIPPLE
    repo.refresh()
    with open_inventory(repo) as inv:
        inv.import_rows([DeviceRow("3f2a0c1e-0000-4000-8000-000000000002", "hw1", "prod", (), 1)])
        assert rollout(repo, inv, "w1", Selector(limit=1)).index == 2


def test_rollout_key_alone_and_a_cancel_while_pending(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> None:
    repo = make_repo()
    publish_wave(repo, keystore, artifact)
    with_ripple(repo)
    timestamp_key = repo.online_key("timestamp").keyid
    ceremony = rotate_online_keys(repo, roles=["rollout"])
    assert ceremony.id == "rollout-keys.1" and [r.name for r in ceremony.roles] == ["wave.w1"]
    with open_inventory(repo) as inv:
        cancel(repo, inv, "w1")  # still signed by the old key, carried over on publish
    assert sign_ceremony(repo, ceremony.id, keystore.ref("t1")).complete
    assert repo.root().signed.version == 1
    assert repo.online_key("timestamp").keyid == timestamp_key
    roll = repo.load_targets("rollout.w1")
    assert roll.signed.unrecognized_fields["x-tufwaves-rollout"]["state"] == "cancelled"
    assert list(roll.signatures) == [repo.online_key("rollout").keyid]
    verifier = Verifier.from_trusted_root(repo.role_bytes("root", 1))
    assert decide(repo, verifier) is Reason.WAVE_CANCELLED


def test_targets_rotation_resigns_targets_and_every_wave(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> None:
    repo = make_repo()
    publish_wave(repo, keystore, artifact)
    with_ripple(repo)
    verifier = Verifier.from_trusted_root(repo.role_bytes("root", 1))
    assert decide(repo, verifier) is Reason.ALLOWED_RIPPLE
    t1, t2, t3 = (keystore.ref(n) for n in ("t1", "t2", "t3"))
    ceremony = rotate_targets_keys(
        repo,
        targets_keys=[t2, keystore.pub("t3")],
        targets_threshold=2,
        keys=[keystore.ref("root"), t2],
    )
    assert [r.name for r in ceremony.roles] == ["root", "targets", "wave.w1"]
    assert not ceremony.complete
    ring = Keyring.load([keystore.directory, repo.metadata_dir / "1.root.json"])
    text = review(load_ceremony(repo, ceremony.id), ring).text()
    assert f"- targets keys: key {t1.key.keyid[:16]} removed (REVOKED" in text
    assert sign_ceremony(repo, ceremony.id, t3).complete
    root = repo.root().signed
    assert sorted(root.roles["targets"].keyids) == sorted([t2.key.keyid, t3.key.keyid])
    assert root.roles["targets"].threshold == 2
    targets = repo.load_targets("targets")
    assert targets.signed.version == 3
    assert targets.signed.delegations is not None
    assert t1.key.keyid not in targets.signed.delegations.keys
    wave = repo.load_targets("wave.w1")
    assert wave.signed.version == 2 and t1.key.keyid not in wave.signatures
    assert decide(repo, verifier) is Reason.ALLOWED_RIPPLE
    # The revoked key can no longer sign a wave.
    with pytest.raises(RefusedError, match="may not sign"):
        publish_wave(repo, keystore, artifact, "w2", 11, signers=("t1",))


def _fast_forward(evil: Repository, version: int) -> None:
    with evil.locked():
        meta = dict(evil.state().snapshot.signed.meta)
        expires = evil.now() + timedelta(days=7)
        snap = Metadata(Snapshot(version=version, expires=expires, meta=meta))
        snap.sign(evil.online_signer("snapshot"))
        data = snap.to_bytes()
        (evil.metadata_dir / f"{version}.snapshot.json").write_bytes(data)
        meta_file = MetaFile(version, len(data), {"sha256": hashlib.sha256(data).hexdigest()})
        ts = Metadata(Timestamp(version=version, expires=expires, snapshot_meta=meta_file))
        ts.sign(evil.online_signer("timestamp"))
        (evil.metadata_dir / "timestamp.json").write_bytes(ts.to_bytes())


def test_python_tuf_ngclient_recovers_from_a_fast_forward(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path, tmp_path: Path
) -> None:
    repo = make_repo()
    publish_wave(repo, keystore, artifact)
    client_dir = tmp_path / "client"
    client_dir.mkdir()

    def updater(source: Path) -> Updater:
        return Updater(
            metadata_dir=str(client_dir),
            metadata_base_url=BASE + "metadata/",
            target_base_url=BASE + "targets/",
            target_dir=str(tmp_path),
            fetcher=DirectoryFetcher(source),
            bootstrap=repo.role_bytes("root", 1),
        )

    updater(repo.path).refresh()
    evil_path = tmp_path / "evil"
    shutil.copytree(repo.path, evil_path)
    _fast_forward(Repository.open(evil_path), 10**15)
    updater(evil_path).refresh()
    repo.refresh()
    with pytest.raises(RepositoryError):
        updater(repo.path).refresh()
    rotate_online_keys(repo, keys=[keystore.ref("root"), keystore.ref("t1")])
    client = updater(repo.path)
    client.refresh()
    assert client.get_targetinfo(f"waves/w1/hw1/{artifact.name}") is not None


def test_cli_rotations_collect_signatures_with_repo_sign(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], artifact: Path
) -> None:
    def cli(*argv: str) -> str:
        code = main(list(argv))
        out, err = capsys.readouterr()
        assert code == 0, (argv, out, err)
        return out

    keys, repo = tmp_path / "keys", str(tmp_path / "repo")
    for name in ("root", "t1", "t2"):
        cli("keys", "generate", name, "--dir", str(keys))
    cli(
        "repo",
        "init",
        repo,
        "--root-key",
        str(keys / "root.key"),
        "--targets-key",
        str(keys / "t1.key"),
    )
    cli(
        "waves",
        "init",
        "w1",
        "10",
        "prod",
        "--repo",
        repo,
        "--artifact",
        str(artifact),
        "--hardware-id",
        "hw1",
        "--key",
        str(keys / "t1.key"),
    )
    out = json.loads(
        cli("repo", "rotate-online-keys", "--repo", repo, "--role", "rollout", "--json")
    )
    assert out == {
        "ceremony": "rollout-keys.1",
        "published": False,
        "roles": ["wave.w1"],
        "signatures": ["wave.w1: 0 of 1 signatures, waiting for: t1"],
    }
    assert "published" in cli("repo", "sign", "--repo", repo, "--key", str(keys / "t1.key"))
    out = json.loads(
        cli(
            "repo",
            "rotate-targets-keys",
            "--repo",
            repo,
            "--targets-key",
            str(keys / "t2.key"),
            "--key",
            str(keys / "root.key"),
            "--json",
        )
    )
    assert out["ceremony"] == "root.2" and out["roles"] == ["root", "targets", "wave.w1"]
    assert not out["published"]
    assert "published" in cli("repo", "sign", "--repo", repo, "--key", str(keys / "t2.key"))
    shown = json.loads(cli("repo", "show", "--repo", repo, "--json"))
    assert "root.2" not in json.dumps(shown.get("pending", []))


@pytest.mark.parametrize("kind", ["targets", "online"])
def test_rotation_keeps_the_fraction_salt_and_its_members(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path, kind: str
) -> None:
    """A re-signed wave carries the salt its first version's signatures gave,
    so a fraction ripple allows exactly the same devices after a rotation."""
    repo = make_repo()
    publish_wave(repo, keystore, artifact, policy=Policy(max_fraction_ppm=500_000))
    fleet = [f"3f2a0c1e-0000-4000-8000-{i:012d}" for i in range(40)]
    with open_inventory(repo) as inv:
        inv.import_rows([DeviceRow(u, "hw1", "prod", (), 1) for u in fleet])
        rollout(repo, inv, "w1", Selector(fraction_ppm=500_000))
    salt = wave_salt(repo.load_targets("wave.w1"), repo.load_targets("targets").signed)
    verifier = Verifier.from_trusted_root(repo.role_bytes("root", 1))

    def allowed() -> list[str]:
        out = []
        with open_inventory(repo) as inv:
            for u in fleet:
                data = build_bundle(repo, inv, u).to_bytes()
                if verifier.decide(data, DeviceIdentity(u, "hw1", "prod", 1)).allowed:
                    out.append(u)
        return out

    before = allowed()
    assert before and len(before) < len(fleet)
    if kind == "targets":
        ceremony = rotate_targets_keys(
            repo, targets_keys=[keystore.ref("t2")], keys=[keystore.ref("root"), keystore.ref("t2")]
        )
    else:
        ceremony = rotate_online_keys(repo, keys=[keystore.ref("root"), keystore.ref("t1")])
    assert ceremony.complete
    wave = repo.load_targets("wave.w1")
    assert wave.signed.version == 2
    assert wave.signed.unrecognized_fields["x-tufwaves-wave"]["policy"]["fraction_salt"] == (
        salt.hex()
    )
    assert allowed() == before
