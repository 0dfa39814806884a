"""The compromise drill (specs/rotation.md): online keys leak, devices recover.

The operator works through the CLI. The attacker holds a copy of the
repository with its online ``.key`` files (and their passphrase): it signs a
ripple naming an extra device, un-cancels a cancelled wave and fast-forwards
timestamp and snapshot to version 10**15 with a bogus snapshot entry. Devices
are real verifiers with state directories. After ``repo rotate-online-keys``
every device recovers from genuine bundles, without being re-provisioned.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, MetaFile, Snapshot, Targets, Timestamp

from tufwaves.cli import main
from tufwaves.server import Repository
from tufwaves.server.metadata import build_rollout
from tufwaves.server.rollout import load_wave
from tufwaves.verify import Decision, DeviceIdentity, Reason, Verifier

A = "3f2a0c1e-0000-4000-8000-00000000000a"  # prod, genuine ripple 1 of w1
X = "3f2a0c1e-0000-4000-8000-00000000000b"  # prod, only the attacker's ripple names it
C = "3f2a0c1e-0000-4000-8000-00000000000c"  # beta, in w2's ripple, saw the cancel
D = "3f2a0c1e-0000-4000-8000-00000000000d"  # beta, in w2's ripple, never saw the cancel
TAGS = {A: "prod", X: "prod", C: "beta", D: "beta"}
FAR = 10**15


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, (argv, out, err)
    return out


class Fleet:
    """Four devices, each a verifier with its own state directory."""

    def __init__(self, root: Path, base: Path) -> None:
        self.dirs = {}
        for uuid in TAGS:
            d = base / "devices" / uuid
            d.mkdir(parents=True)
            shutil.copy(root, d / "root.json")
            self.dirs[uuid] = d

    def decide(self, uuid: str, bundle: bytes) -> Decision:
        verifier = Verifier.from_state_dir(self.dirs[uuid])
        return verifier.decide(bundle, DeviceIdentity(uuid, "hw1", TAGS[uuid], 1))

    def state(self, uuid: str) -> dict[str, object]:
        loaded: dict[str, object] = json.loads((self.dirs[uuid] / "state.json").read_bytes())
        return loaded


def bundle(capsys: pytest.CaptureFixture[str], repo: Path, uuid: str, out: Path) -> bytes:
    cli(capsys, "device", "bundle", uuid, "--repo", str(repo), "--out", str(out), "--force")
    return out.read_bytes()


def offline_signed(repo: Path) -> set[str]:
    """The sha256 of every artifact the offline targets keys signed (genuine waves)."""
    found = set()
    for f in (repo / "metadata").glob("*.wave.*.json"):
        md = Metadata[Targets].from_bytes(f.read_bytes())
        found.update(str(t.hashes["sha256"]) for t in md.signed.targets.values())
    return found


def uncancel(evil: Repository, wave: str) -> None:
    """The attacker signs rollout.W back to active with the leaked rollout key."""
    with evil.locked():
        ctx = load_wave(evil, wave)
        assert ctx.rollout is not None
        md = build_rollout(
            wave,
            "active",
            ctx.ripple_count,
            ctx.rollout_delegation.keyids,
            ctx.rollout_keys,
            1,
            ctx.rollout.signed.version + 1,
            ctx.expires,
        )
        md.sign(evil.online_signer("rollout"))
        evil.publish({f"rollout.{wave}": md})


def fast_forward(evil: Repository, version: int) -> None:
    """Timestamp and snapshot at ``version``, the snapshot listing a bogus role."""
    with evil.locked():
        state = evil.state()
        meta = dict(state.snapshot.signed.meta)
        meta["bogus.json"] = MetaFile(version=version)
        expires = evil.now() + timedelta(days=7)
        snap = Metadata(Snapshot(version=version, expires=expires, meta=meta))
        snap.sign(evil.online_signer("snapshot"))
        data = snap.to_bytes()
        (evil.metadata_dir / f"{version}.snapshot.json").write_bytes(data)
        ts = Metadata(
            Timestamp(
                version=version,
                expires=expires,
                snapshot_meta=MetaFile(
                    version, len(data), {"sha256": hashlib.sha256(data).hexdigest()}
                ),
            )
        )
        ts.sign(evil.online_signer("timestamp"))
        (evil.metadata_dir / "timestamp.json").write_bytes(ts.to_bytes())


def test_online_keys_leak_and_every_device_recovers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys, repo = tmp_path / "keys", tmp_path / "repo"
    for name in ("root", "t1"):
        cli(capsys, "keys", "generate", name, "--dir", str(keys))
    cli(
        capsys,
        "repo",
        "init",
        str(repo),
        "--root-key",
        str(keys / "root.key"),
        "--targets-key",
        str(keys / "t1.key"),
    )
    fleet_csv = tmp_path / "fleet.csv"
    fleet_csv.write_text(
        "uuid,hardware_id,tag,groups,installed_version\n"
        + "".join(f"{u},hw1,{t},,1\n" for u, t in TAGS.items())
    )
    cli(capsys, "fleet", "import", str(fleet_csv), "--repo", str(repo))
    for wave, tag in (("w1", "prod"), ("w2", "beta")):
        art = tmp_path / f"{wave}.img"
        art.write_bytes(wave.encode() * 100)
        cli(
            capsys,
            "waves",
            "init",
            wave,
            "10",
            tag,
            "--repo",
            str(repo),
            "--artifact",
            str(art),
            "--hardware-id",
            "hw1",
            "--key",
            str(keys / "t1.key"),
        )
    cli(capsys, "waves", "rollout", "w1", "--repo", str(repo), "--uuids", A)
    cli(capsys, "waves", "rollout", "w2", "--repo", str(repo), "--uuids", f"{C},{D}")
    fleet = Fleet(repo / "metadata" / "1.root.json", tmp_path)
    genuine = offline_signed(repo)
    b = tmp_path / "b.bundle"

    # Before the leak: A and C may install, X may not; then w2 is cancelled and C sees it.
    assert fleet.decide(A, bundle(capsys, repo, A, b)).reason is Reason.ALLOWED_RIPPLE
    assert fleet.decide(X, bundle(capsys, repo, X, b)).reason is Reason.NOT_MEMBER
    assert fleet.decide(C, bundle(capsys, repo, C, b)).reason is Reason.ALLOWED_RIPPLE
    cli(capsys, "waves", "cancel", "w2", "--repo", str(repo))
    assert fleet.decide(C, bundle(capsys, repo, C, b)).reason is Reason.WAVE_CANCELLED

    # The leak: the attacker has the repository's online keys (a copy of repo/keys
    # and the rest) and their passphrase.
    evil_path = tmp_path / "evil"
    shutil.copytree(repo, evil_path)
    cli(capsys, "waves", "rollout", "w1", "--repo", str(evil_path), "--uuids", X)
    evil = Repository.open(evil_path)
    uncancel(evil, "w2")
    fast_forward(evil, FAR)

    # Devices see the attacker's metadata. They follow it, but are allowed
    # nothing the offline keys did not sign, and a cancel seen stays final.
    seen = {u: fleet.decide(u, bundle(capsys, evil_path, u, b)) for u in TAGS}
    assert seen[C].reason is Reason.WAVE_CANCELLED
    for uuid, decision in seen.items():
        assert fleet.state(uuid)["timestamp"]["version"] == FAR  # type: ignore[index]
        if decision.allowed:
            assert decision.artifact is not None
            assert decision.artifact.hashes["sha256"] in genuine
    assert seen[X].reason is Reason.ALLOWED_RIPPLE  # the attacker's ripple, genuine artifact
    assert seen[D].allowed  # un-cancelled for a device that never saw the cancel

    # Every genuine update is now refused as a rollback, and refresh does not help.
    cli(capsys, "repo", "refresh", "--repo", str(repo))
    stuck = fleet.decide(A, bundle(capsys, repo, A, b))
    assert stuck.reason is Reason.ROLLBACK, stuck.message

    # Recovery: new snapshot, timestamp and rollout keys in one ceremony.
    out = cli(
        capsys,
        "repo",
        "rotate-online-keys",
        "--repo",
        str(repo),
        "--key",
        str(keys / "root.key"),
        "--key",
        str(keys / "t1.key"),
    )
    assert "published" in out
    cli(capsys, "repo", "refresh", "--repo", str(repo))  # the new keys sign from now on

    after = {u: fleet.decide(u, bundle(capsys, repo, u, b)) for u in TAGS}
    assert after[A].reason is Reason.ALLOWED_RIPPLE, after[A].message
    assert after[A].ripple == 1
    assert after[X].reason is Reason.NOT_MEMBER, after[X].message
    assert after[C].reason is Reason.WAVE_CANCELLED
    assert after[D].reason is Reason.WAVE_CANCELLED, after[D].message
    for uuid in TAGS:
        state = fleet.state(uuid)
        assert state["root"]["version"] == 2  # type: ignore[index]
        assert state["timestamp"]["version"] < FAR  # type: ignore[index]
        assert "bogus.json" not in state["snapshot"]["meta"]  # type: ignore[index]

    # The attacker's keys no longer count: its metadata, rebuilt, is refused.
    cli(capsys, "repo", "refresh", "--repo", str(evil_path))
    refused = fleet.decide(X, bundle(capsys, evil_path, X, b))
    assert not refused.allowed
    assert refused.reason is Reason.TIMESTAMP_INVALID, refused.message

    # The genuine rollout goes on with the new rollout key.
    cli(capsys, "waves", "rollout", "w1", "--repo", str(repo), "--uuids", X)
    assert fleet.decide(X, bundle(capsys, repo, X, b)).reason is Reason.ALLOWED_RIPPLE
    assert fleet.decide(A, bundle(capsys, repo, A, b)).reason is Reason.ALLOWED_RIPPLE
