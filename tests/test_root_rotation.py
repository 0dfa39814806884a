"""Root rotation: both thresholds, devices and ngclient follow it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import KeyStore, RepoFactory, publish_wave
from tufwaves.cli import main
from tufwaves.demo.ngcheck import ngclient_fetch
from tufwaves.errors import RefusedError
from tufwaves.server.bundler import build_bundle
from tufwaves.server.inventory import DeviceRow
from tufwaves.server.metadata import expiry
from tufwaves.server.rollout import Selector, open_inventory, rollout
from tufwaves.server.roots import rotate_root
from tufwaves.server.waves import sign_ceremony
from tufwaves.verify import DeviceIdentity, Verifier

DEVICE = "6f1c3c4e-8d2a-4b7e-9a51-0c2d3e4f5a6b"


def test_rotation_needs_old_and_new_thresholds_and_devices_follow(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> None:
    repo = make_repo()
    publish_wave(repo, keystore, artifact)
    new = [keystore.ref(n) for n in ("r2", "r3", "r4")]
    ceremony = rotate_root(
        repo, root_keys=new, root_threshold=2, expires=expiry(), keys=[new[0], new[1]]
    )
    assert not ceremony.complete, "the previous root's threshold has not signed yet"
    assert any("previous root keys): 0 of 1" in line for line in ceremony.status_lines())
    assert repo.root().signed.version == 1
    with pytest.raises(RefusedError, match="already pending"):
        rotate_root(repo, expires=expiry())
    sign_ceremony(repo, "root.2", keystore.ref("root"))
    root = repo.root().signed
    assert root.version == 2 and root.roles["root"].threshold == 2
    assert set(root.roles["root"].keyids) == {r.key.keyid for r in new}
    # A device that trusts root v1 follows the rotation inside its bundle.
    with open_inventory(repo) as inv:
        inv.import_rows([DeviceRow(DEVICE, "hw1", "prod", frozenset(), 1)])
        rollout(repo, inv, "w1", Selector(uuids=(DEVICE,)))
        bundle = build_bundle(repo, inv, DEVICE, since_root=1)
    assert [f.role for f in bundle.files][:1] == ["root"]
    verifier = Verifier.from_trusted_root(repo.role_bytes("root", 1))
    decision = verifier.decide(bundle, DeviceIdentity(DEVICE, "hw1", "prod", 1))
    assert decision.allowed and verifier.trusted_root_version == 2
    # And python-tuf's own client does too.
    info, _, fetched = ngclient_fetch(
        repo.path, repo.role_bytes("root", 1), f"waves/w1/hw1/{artifact.name}"
    )
    assert "metadata/2.root.json" in fetched and info.custom["version"] == "10"
    # A second rotation is signed by the new keys (2 of 3) for both thresholds.
    done = rotate_root(repo, expires=expiry(), keys=[new[1], new[2]])
    assert done.complete and repo.root().signed.version == 3


def test_rotate_root_cli(
    make_repo: RepoFactory, keystore: KeyStore, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo()
    r2 = keystore.make("r2")
    code = main(
        [
            "repo",
            "rotate-root",
            "--repo",
            str(repo.path),
            "--root-key",
            str(r2),
            "--key",
            str(r2),
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["ceremony"] == "root.2" and not out["published"]
    assert (
        main(["repo", "sign", "--repo", str(repo.path), "--key", str(keystore.make("root"))]) == 0
    )
    assert "root.2: published" in capsys.readouterr().out
    assert repo.root().signed.version == 2
