"""What a signer sees cannot lie: keys come from the signed bytes, names from the keyring.

The attack these tests reproduce: whoever prepares a ceremony file delegates
the new wave to their own keys and labels them with the honest signers' names
in the file's (untrusted) ``key_names``. Before, the summary was byte-identical
to the honest one; now the delegated keys show as UNKNOWN and ``--yes``
refuses to sign.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from securesystemslib.signer import SSlibKey
from tuf.api.metadata import DelegatedRole

from tests.conftest import KeyStore, RepoFactory
from tufwaves.cli import main
from tufwaves.server.ceremony import Ceremony
from tufwaves.server.metadata import expiry, wave_role
from tufwaves.server.review import Keyring, fingerprint, review
from tufwaves.server.roots import rotate_root
from tufwaves.server.staging import load_ceremony
from tufwaves.server.waves import init_wave


def sign_file(
    capsys: pytest.CaptureFixture[str], path: Path, key: Path, *extra: str
) -> tuple[int, str]:
    code = main(["waves", "ceremony", "sign", str(path), "--key", str(key), *extra])
    out, err = capsys.readouterr()
    return code, out + err


def prepared(repo_factory: RepoFactory, keystore: KeyStore, artifact: Path) -> tuple[Path, Path]:
    """A 2-of-3 repository with wave w1 pending (signed by t1), exported to a file."""
    repo = repo_factory(2, 3)
    init_wave(
        repo,
        "w1",
        10,
        "prod",
        artifacts=[artifact],
        hardware_ids=["hw1"],
        expires=expiry(),
        keys=[keystore.ref("t1")],
    )
    exported = repo.path.parent / "ceremony.json"
    exported.write_bytes(load_ceremony(repo, wave_role("w1")).to_bytes())
    return repo.path, exported


def relabelled_attack(exported: Path, keystore: KeyStore) -> None:
    """Delegate wave.w1 to attacker keys, named alice/bob/carol's t1/t2/t3 in key_names."""
    ceremony = Ceremony.read(exported)
    targets, wave = ceremony.roles
    attackers = {(ref := keystore.ref(f"evil{i}")).key.keyid: ref.key for i in range(1, 4)}
    delegations = targets.metadata.signed.delegations
    assert delegations is not None and delegations.roles is not None
    honest = delegations.roles["wave.w1"]
    delegations.roles["wave.w1"] = DelegatedRole(
        "wave.w1", sorted(attackers), honest.threshold, True, paths=honest.paths
    )
    delegations.keys.update(attackers)
    targets.metadata.signatures.clear()  # the preparer re-signs what they can
    wave.keys = dict(attackers)
    honest_names = [ceremony.key_names[k] for k in sorted(ceremony.key_names)][:3]
    ceremony.key_names.update(dict(zip(sorted(attackers), honest_names, strict=False)))
    exported.write_bytes(ceremony.to_bytes())


def test_honest_ceremony_names_every_key_from_the_keyring(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, exported = prepared(make_repo, keystore, artifact)
    ring = ["--keyring", str(keystore.directory), "--keyring", str(repo / "keys")]
    code, out = sign_file(capsys, exported, keystore.make("t2"), "--yes", *ring)
    assert code == 0, out
    assert "UNKNOWN" not in out
    assert "Every key named above is in your keyring." in out
    t3 = keystore.pub("t3").key
    assert f"fp {fingerprint(t3)[:16]}  t3" in out
    assert "delegates wave.w1" in out and "delegates rollout.w1" in out
    assert "fraction salt: derived from the offline signatures on this role" in out
    assert "changes against published version 1 (verified with your root)" not in out
    assert "changes against published version 1 (not verified: your keyring has no root)" in out


def test_relabelled_attacker_keys_show_as_unknown_and_yes_refuses(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, exported = prepared(make_repo, keystore, artifact)
    relabelled_attack(exported, keystore)
    before = exported.read_bytes()
    ring = [
        "--keyring",
        str(keystore.directory / "t1.pub"),
        "--keyring",
        str(keystore.directory / "t2.pub"),
        "--keyring",
        str(keystore.directory / "t3.pub"),
        "--keyring",
        str(repo / "keys"),
        "--keyring",
        str(repo / "metadata" / "1.root.json"),
    ]
    code, out = sign_file(capsys, exported, keystore.make("t2"), "--yes", *ring)
    assert code == 1
    assert "not signed" in out
    # The three attacker keys: where targets delegates to them and where they sign wave.w1.
    assert out.count("!! UNKNOWN to your keyring") == 6
    assert "!! WARNING: 3 key(s) UNKNOWN to your keyring" in out
    for i in range(1, 4):
        evil = keystore.pub(f"evil{i}").key
        assert fingerprint(evil)[:16] in out
    assert "+ wave.w1 keys added" in out  # against the published targets, verified
    assert "verified with your root" in out
    assert exported.read_bytes() == before  # nothing signed


def test_unknown_keys_sign_only_when_the_signer_says_so(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, exported = prepared(make_repo, keystore, artifact)
    code, out = sign_file(capsys, exported, keystore.make("t2"), "--yes")
    assert code == 1 and "UNKNOWN" in out
    code, out = sign_file(capsys, exported, keystore.make("t2"), "--yes", "--allow-unknown-keys")
    assert code == 0, out


def test_key_id_bound_to_other_key_material_is_flagged(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> None:
    repo, exported = prepared(make_repo, keystore, artifact)
    ceremony = Ceremony.read(exported)
    targets = ceremony.roles[0]
    delegations = targets.metadata.signed.delegations
    assert delegations is not None and delegations.roles is not None
    honest_id = delegations.roles["wave.w1"].keyids[0]
    evil = keystore.pub("evil").key
    # The attacker's key material under an honest key id: python-tuf does not
    # recompute key ids, so only the fingerprint reveals it.
    delegations.keys[honest_id] = SSlibKey(honest_id, evil.keytype, evil.scheme, evil.keyval)
    pubs = [keystore.directory / f"t{i}.pub" for i in (1, 2, 3)]
    ring = Keyring.load([*pubs, repo / "keys"])
    result = review(Ceremony.from_bytes(ceremony.to_bytes()), ring)
    assert honest_id in result.mismatched
    assert fingerprint(evil) in result.unknown
    assert "KEY ID DOES NOT MATCH THE KEY MATERIAL" in result.text()


def test_root_rotation_shows_new_online_keys_as_unknown(
    make_repo: RepoFactory, keystore: KeyStore
) -> None:
    repo = make_repo()
    ceremony = rotate_root(repo, root_keys=[keystore.pub("r2")], expires=expiry(days=365))
    # The preparer swaps in their own timestamp key.
    md = ceremony.roles[0].metadata
    evil = keystore.pub("evil-ts").key
    old = md.signed.roles["timestamp"].keyids[0]
    md.signed.revoke_key(old, "timestamp")
    md.signed.add_key(evil, "timestamp")
    ring = Keyring.load([keystore.directory, repo.path / "keys", repo.metadata_dir / "1.root.json"])
    result = review(Ceremony.from_bytes(ceremony.to_bytes()), ring)
    text = result.text()
    assert result.unknown == []  # evil-ts.pub is in the signer's folder: named, not unknown
    assert "evil-ts" in text
    assert f"- timestamp keys: key {old[:16]} removed" in text
    assert "verified with your root" in text
    narrow = Keyring.load([keystore.directory / "root.pub", repo.metadata_dir / "1.root.json"])
    result = review(Ceremony.from_bytes(ceremony.to_bytes()), narrow)
    assert fingerprint(evil) in result.unknown


def test_keyring_refuses_what_is_neither_a_key_nor_a_root(tmp_path: Path) -> None:
    bogus = tmp_path / "x.json"
    bogus.write_text(json.dumps({"signed": {"_type": "targets"}}))
    with pytest.raises(Exception, match=r"neither a \.pub key file nor a self-signed root"):
        Keyring.load([bogus])
    with pytest.raises(Exception, match="does not exist"):
        Keyring.load([tmp_path / "missing"])
