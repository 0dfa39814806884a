"""Waves and the offline threshold ceremony, through the library API."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from tuf.api.metadata import Metadata, Targets

from tests.conftest import KeyStore, RepoFactory
from tufwaves.demo.ngcheck import ngclient_fetch
from tufwaves.errors import InputError, KeyUseError, RefusedError, StorageError
from tufwaves.server.ceremony import Ceremony
from tufwaves.server.keys import generate_key, import_uri_key, load_key_ref
from tufwaves.server.metadata import expiry, wave_info, wave_role
from tufwaves.server.repository import Repository
from tufwaves.server.review import Keyring, review
from tufwaves.server.roots import create_repository
from tufwaves.server.staging import load_ceremony
from tufwaves.server.waves import (
    discard_ceremony,
    import_ceremony,
    init_wave,
    list_waves,
    sign_ceremony,
    wave_summary,
)


def new_wave(repo: Repository, artifact: Path, name: str = "w1", version: int = 10, **kw):  # type: ignore[no-untyped-def]
    kw.setdefault("hardware_ids", ["hw1"])
    kw.setdefault("expires", expiry())
    return init_wave(repo, name, version, "prod", artifacts=[artifact], **kw)


@pytest.mark.parametrize(("threshold", "signers"), [(2, 3), (3, 5)], ids=["2-of-3", "3-of-5"])
def test_ceremony_any_signing_order(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path, threshold: int, signers: int
) -> None:
    orders = list(itertools.permutations(range(1, signers + 1), threshold))[:4]
    for n, order in enumerate(orders):
        repo = make_repo(threshold, signers, name=f"repo{n}")
        new_wave(repo, artifact)
        for i, signer in enumerate(order):
            assert not repo.state().version_of("wave.w1"), "published too early"
            if i % 2:  # alternate direct signing and the air-gapped path
                sign_ceremony(repo, "wave.w1", keystore.ref(f"t{signer}"))
            else:
                exported = repo.path.parent / f"c{n}{i}.json"
                exported.write_bytes(load_ceremony(repo, "wave.w1").to_bytes())
                offline = Ceremony.read(exported)
                ref = keystore.ref(f"t{signer}")
                assert ref.signer is not None
                offline.sign(ref.key.keyid, ref.signer)
                exported.write_bytes(offline.to_bytes())
                import_ceremony(repo, exported)
        assert repo.state().version_of("wave.w1") == 1
        assert wave_summary(repo, "w1").status == "active"
        assert not (repo.staging_dir / "wave.w1.json").exists()


def test_pending_wave_status_names_missing_keys(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> None:
    repo = make_repo(2, 3)
    ceremony = new_wave(repo, artifact, keys=[keystore.ref("t2")])
    lines = ceremony.status_lines()
    assert lines[0].startswith("targets: 1 of 2 signatures, waiting for: ")
    assert "t1" in lines[0] and "t3" in lines[0] and "t2" not in lines[0].split(":")[-1]
    summary = wave_summary(repo, "w1")
    assert summary.status == "pending"
    assert [w.name for w in list_waves(repo, status="pending")] == ["w1"]


def test_published_wave_is_walkable_by_ngclient(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> None:
    repo = make_repo()
    new_wave(repo, artifact, hardware_ids=["hw1", "hw2"], keys=[keystore.ref("t1")])
    for hw in ("hw1", "hw2"):
        info, data, fetched = ngclient_fetch(
            repo.path, repo.role_bytes("root", 1), f"waves/w1/{hw}/{artifact.name}"
        )
        assert data == artifact.read_bytes()
        assert info.custom["hardwareIds"] == [hw]
        assert info.custom["version"] == "10"
        assert "metadata/1.wave.w1.json" in fetched


def test_wave_role_content(make_repo: RepoFactory, keystore: KeyStore, artifact: Path) -> None:
    repo = make_repo()
    new_wave(repo, artifact, keys=[keystore.ref("t1")])
    md = repo.load_targets("wave.w1")
    info = wave_info(md)
    assert (info.name, info.tag, info.version) == ("w1", "prod", 10)
    target = md.signed.targets[f"waves/w1/hw1/{artifact.name}"]
    assert set(target.hashes) == {"sha256", "sha512"}
    assert md.signed.expires.microsecond == 0
    top = repo.load_targets("targets")
    assert top.signed.delegations is not None and top.signed.delegations.roles is not None
    assert wave_role("w1") in top.signed.delegations.roles
    rollout = repo.load_targets("rollout.w1")
    assert rollout.signed.unrecognized_fields["x-tufwaves-rollout"]["state"] == "active"


def test_dry_run_changes_nothing(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path, unchanged
) -> None:  # type: ignore[no-untyped-def]
    repo = make_repo()
    unchanged(repo.path)
    ceremony = new_wave(repo, artifact, keys=[keystore.ref("t1")], dry_run=True)
    ring = Keyring.load([repo.metadata_dir / "root.json"])
    assert "waves/w1/hw1/fw-1.img" in review(ceremony, ring).text()


def _nothing(repo: Repository, ks: KeyStore, art: Path, tmp: Path) -> None:
    del repo, ks, art, tmp


def _published_w1_v10(repo: Repository, ks: KeyStore, art: Path, tmp: Path) -> None:
    new_wave(repo, art, name="w1", version=10, keys=[ks.ref("t1")])


def _pending_v12(repo: Repository, ks: KeyStore, art: Path, tmp: Path) -> None:
    new_wave(repo, art, name="pending", version=12)  # no key: stays pending


def _bad_targets_file(repo: Repository, ks: KeyStore, art: Path, tmp: Path) -> None:
    (tmp / "targets.json").write_text(json.dumps({"fw": {"length": "x", "hashes": {}}}))


def _stranger_key(repo: Repository, ks: KeyStore, art: Path, tmp: Path) -> None:
    ks.make("stranger")


def _wrong_passphrase(repo: Repository, ks: KeyStore, art: Path, tmp: Path) -> None:
    ks.make("t9")
    import os

    os.environ["TUFWAVES_KEY_PASSPHRASE"] = "wrong"


REFUSALS = [
    # (id, setup, failing call, error)
    (
        "version-not-greater",
        _published_w1_v10,
        lambda r, ks, a, t: new_wave(r, a, name="w2", version=10),
        RefusedError,
    ),
    (
        "version-below-pending",
        _pending_v12,
        lambda r, ks, a, t: new_wave(r, a, name="w2", version=11),
        RefusedError,
    ),
    (
        "duplicate-wave",
        _published_w1_v10,
        lambda r, ks, a, t: new_wave(r, a, name="w1", version=11),
        RefusedError,
    ),
    (
        "expiry-in-past",
        _nothing,
        lambda r, ks, a, t: new_wave(r, a, expires=expiry(at="2001-01-01T00:00:00Z")),
        InputError,
    ),
    (
        "missing-artifact",
        _nothing,
        lambda r, ks, a, t: init_wave(
            r, "w1", 10, "prod", artifacts=[t / "nope.img"], hardware_ids=["hw"], expires=expiry()
        ),
        InputError,
    ),
    (
        "malformed-targets-file",
        _bad_targets_file,
        lambda r, ks, a, t: init_wave(
            r,
            "w1",
            10,
            "prod",
            targets_file=t / "targets.json",
            hardware_ids=["hw"],
            expires=expiry(),
        ),
        InputError,
    ),
    ("bad-wave-name", _nothing, lambda r, ks, a, t: new_wave(r, a, name="a/b"), InputError),
    ("bad-version", _nothing, lambda r, ks, a, t: new_wave(r, a, version=-1), InputError),
    (
        "key-not-in-role",
        _stranger_key,
        lambda r, ks, a, t: new_wave(r, a, keys=[ks.ref("stranger")]),
        RefusedError,
    ),
    (
        "wrong-passphrase",
        _wrong_passphrase,
        lambda r, ks, a, t: new_wave(r, a, keys=[ks.ref("t9")]),
        KeyUseError,
    ),
]


@pytest.mark.parametrize(
    ("setup", "call", "error"), [c[1:] for c in REFUSALS], ids=[c[0] for c in REFUSALS]
)
def test_refusals_leave_repository_unchanged(
    make_repo: RepoFactory,
    keystore: KeyStore,
    artifact: Path,
    tmp_path: Path,
    setup,
    call,
    error,
    unchanged,  # type: ignore[no-untyped-def]
) -> None:
    repo = make_repo()
    setup(repo, keystore, artifact, tmp_path)
    unchanged(repo.path)
    with pytest.raises(error) as exc:
        call(repo, keystore, artifact, tmp_path)
    assert str(exc.value)


def test_import_refusals(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path, tmp_path: Path, unchanged
) -> None:  # type: ignore[no-untyped-def]
    repo = make_repo(2, 3)
    new_wave(repo, artifact, keys=[keystore.ref("t1")])
    exported = tmp_path / "c.json"
    exported.write_bytes(load_ceremony(repo, "wave.w1").to_bytes())
    unchanged(repo.path)

    # Duplicate: the file adds nothing new.
    with pytest.raises(RefusedError, match="no new signature"):
        import_ceremony(repo, exported)

    # A key that is not in the role.
    c = Ceremony.read(exported)
    stranger = keystore.ref("stranger")
    assert stranger.signer is not None
    for role in c.roles:
        role.metadata.sign(stranger.signer, append=True)
    exported.write_bytes(c.to_bytes())
    with pytest.raises(RefusedError, match="not from a key of"):
        import_ceremony(repo, exported)

    # A signature over other bytes: sign, then change the content.
    c = (
        Ceremony.read(tmp_path / "c.json")
        if False
        else Ceremony.from_bytes(load_ceremony(repo, "wave.w1").to_bytes())
    )
    t2 = keystore.ref("t2")
    assert t2.signer is not None
    c.sign(t2.key.keyid, t2.signer)
    doc = json.loads(c.to_bytes())
    sig = doc["roles"][1]["metadata"]["signatures"]
    good = next(s for s in sig if s["keyid"] == t2.key.keyid)
    good["sig"] = ("00" if good["sig"][:2] != "00" else "11") + good["sig"][2:]
    exported.write_text(json.dumps(doc))
    with pytest.raises(RefusedError, match="does not verify"):
        import_ceremony(repo, exported)

    # Different content than pending.
    doc = json.loads(c.to_bytes())
    doc["roles"][1]["metadata"]["signed"]["x-tufwaves-wave"]["version"] = "99"
    exported.write_text(json.dumps(doc))
    with pytest.raises(RefusedError, match="differs from the pending"):
        import_ceremony(repo, exported)

    # Garbage.
    exported.write_text("{not json")
    with pytest.raises(InputError, match="malformed"):
        import_ceremony(repo, exported)


def test_duplicate_direct_signature_refused(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> None:
    repo = make_repo(2, 3)
    new_wave(repo, artifact, keys=[keystore.ref("t1")])
    with pytest.raises(RefusedError, match="already signed"):
        sign_ceremony(repo, "wave.w1", keystore.ref("t1"))


@pytest.mark.parametrize("point", ["snapshot", "timestamp", "artifact"])
def test_crash_during_publish_keeps_previous_state(
    make_repo: RepoFactory,
    keystore: KeyStore,
    artifact: Path,
    monkeypatch: pytest.MonkeyPatch,
    point: str,
) -> None:
    repo = make_repo(2, 3)
    new_wave(repo, artifact, keys=[keystore.ref("t1")])
    from tests.conftest import tree_digest

    before = tree_digest(repo.path)
    from tufwaves.server import repository

    real = repository.atomic_write

    def failing(path: Path, data: bytes) -> None:
        name = path.name
        hit = {
            "snapshot": name.endswith(".snapshot.json"),
            "timestamp": name == "timestamp.json",
            "artifact": "targets" in path.parts,
        }[point]
        if hit:
            raise OSError(28, "No space left on device (injected)")
        real(path, data)

    monkeypatch.setattr(repository, "atomic_write", failing)
    # A failed write is a StorageError (exit 3) naming the cause, not a traceback.
    with pytest.raises(StorageError, match="injected"):
        sign_ceremony(repo, "wave.w1", keystore.ref("t2"))
    assert tree_digest(repo.path) == before
    # Still readable by a TUF client, and the wave can still be published.
    monkeypatch.setattr(repository, "atomic_write", real)
    assert repo.state().version_of("wave.w1") is None
    sign_ceremony(repo, "wave.w1", keystore.ref("t2"))
    assert repo.state().version_of("wave.w1") == 1


def test_one_targets_ceremony_at_a_time_and_discard(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path, unchanged
) -> None:  # type: ignore[no-untyped-def]
    """A second ceremony that changes targets would sign a version the first
    publishes first and could never publish: it is refused until the first is
    finished or discarded."""
    repo = make_repo(2, 3)
    new_wave(repo, artifact, name="a", version=10, keys=[keystore.ref("t1")])
    with pytest.raises(RefusedError, match=r"ceremony wave\.a is pending"):
        new_wave(repo, artifact, name="b", version=11, keys=[keystore.ref("t1")])
    discard_ceremony(repo, "wave.a")
    assert not any(repo.staging_dir.iterdir())
    new_wave(repo, artifact, name="a", version=10, keys=[keystore.ref("t1")])
    sign_ceremony(repo, "wave.a", keystore.ref("t2"))
    new_wave(repo, artifact, name="b", version=11, keys=[keystore.ref("t1")])
    sign_ceremony(repo, "wave.b", keystore.ref("t2"))
    assert repo.state().version_of("targets") == 3
    unchanged(repo.path)
    with pytest.raises(InputError, match="no pending ceremony"):
        discard_ceremony(repo, "wave.b")


def test_targets_file_hashes_are_checked(make_repo: RepoFactory, tmp_path: Path) -> None:
    repo = make_repo()
    for hashes in (
        {"md5": "00"},
        {"sha512": "ab" * 64},
        {"sha256": "AB" * 32},
        {"sha256": "ab" * 32, "sha512": "x"},
    ):
        tf = tmp_path / "t.json"
        tf.write_text(
            json.dumps({"fw": {"length": 1, "hashes": hashes, "custom": {"hardwareIds": ["hw"]}}})
        )
        with pytest.raises(InputError, match="sha"):
            init_wave(repo, "w1", 1, "prod", targets_file=tf, expires=expiry())


def test_targets_file_wave(make_repo: RepoFactory, keystore: KeyStore, tmp_path: Path) -> None:
    repo = make_repo()
    tf = tmp_path / "t.json"
    tf.write_text(
        json.dumps(
            {
                "targets": {
                    "lmp-42": {
                        "length": 10,
                        "hashes": {"sha256": "ab" * 32},
                        "custom": {"hardwareIds": ["hw1"], "targetFormat": "OSTREE"},
                    }
                }
            }
        )
    )
    init_wave(repo, "w1", 42, "prod", targets_file=tf, expires=expiry(), keys=[keystore.ref("t1")])
    md: Metadata[Targets] = repo.load_targets("wave.w1")
    target = md.signed.targets["waves/w1/lmp-42"]
    assert target.custom["targetFormat"] == "OSTREE"
    assert target.custom["tags"] == ["prod"] and target.custom["version"] == "42"


def test_private_key_uri_signers(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path, tmp_path: Path
) -> None:
    """A securesystemslib private-key URI signs like a key file: directly
    (file2:) and through a .pub that names the URI (HSM, KMS, ...)."""
    signers = []
    for name in ("u1", "u2"):
        signer = generate_key("ecdsa")
        pem = tmp_path / f"{name}.pem"
        pem.write_bytes(
            signer._private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        )
        pem.chmod(0o600)  # a private key readable by others is refused
        signers.append((name, signer, pem))
    (_, _, pem1), (n2, s2, pem2) = signers
    pub2 = import_uri_key(
        n2,
        tmp_path / "pubs",
        f"file2:{pem2}",
        s2.public_key._crypto_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
    )
    direct = load_key_ref(f"file2:{pem1}")
    via_pub = load_key_ref(str(pub2))
    assert direct.signer is not None and via_pub.signer is not None
    repo, _ = create_repository(
        tmp_path / "uri-repo",
        root_keys=[keystore.ref("root")],
        root_threshold=1,
        targets_keys=[direct, via_pub],
        targets_threshold=2,
    )
    assert repo.is_published()
    init_wave(
        repo,
        "w1",
        1,
        "prod",
        artifacts=[artifact],
        hardware_ids=["hw"],
        expires=expiry(),
        keys=[direct, via_pub],
    )
    assert repo.state().version_of("wave.w1") == 1
    with pytest.raises(InputError, match="needs its public key"):
        load_key_ref("awskms:arn:aws:kms:eu-west-1:1:key/x")


def test_publish_refuses_versions_that_do_not_follow(make_repo: RepoFactory) -> None:
    repo = make_repo()
    stale = repo.load_targets("targets")  # version 1: already published
    with repo.locked(), pytest.raises(StorageError, match="does not follow"):
        repo.publish({"targets": stale})
    assert repo.state().version_of("targets") == 1
