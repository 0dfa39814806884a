"""A targets key on a PKCS#11 token (SoftHSM2) signs a 2-of-3 ceremony through its hsm: URI.

The session fixture installs SoftHSM2 with apt when its module is missing; if that
fails the tests fail (they never skip). The token lives in a temporary
SOFTHSM2_CONF directory; its EC P-256 key pair is generated on the token.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pkcs11
import pytest
from pkcs11 import Attribute, KeyType
from pkcs11.util.ec import encode_named_curve_parameters
from tuf.api.metadata import Metadata, Root, Targets

from tufwaves.cli import main
from tufwaves.demo.ngcheck import ngclient_fetch
from tufwaves.server.repository import Repository
from tufwaves.server.signers import HSM_PIN_ENV, PKCS11_MODULE_ENV

MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
LABEL = "tufwaves-test"
PIN = "4711-token-pin"
HSM_KEYID = 7  # the key pair's CKA_ID, b"\x07"


@dataclass(frozen=True)
class Token:
    module: Path
    label: str
    keyid: int


def _install_softhsm() -> None:
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "softhsm2"]):
        result = subprocess.run(
            prefix + cmd, capture_output=True, text=True, check=False, timeout=900
        )
        if result.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed; install softhsm2:\n{result.stderr[-2000:]}")


@pytest.fixture(scope="session")
def token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Token]:
    """A SoftHSM2 token holding one EC P-256 key pair; PYKCS11LIB points at its module.

    Session-wide: a process initialises a PKCS#11 module once, with the
    SOFTHSM2_CONF it sees then.
    """
    if not MODULE.is_file():
        _install_softhsm()
    assert MODULE.is_file(), f"{MODULE} is missing after installing softhsm2"
    util = shutil.which("softhsm2-util")
    assert util is not None, "softhsm2-util is missing"
    home = tmp_path_factory.mktemp("softhsm")
    (home / "tokens").mkdir()
    conf = home / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {home / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTHSM2_CONF", str(conf))
        mp.setenv(PKCS11_MODULE_ENV, str(MODULE))
        subprocess.run(
            [util, "--init-token", "--free", "--label", LABEL, "--pin", PIN, "--so-pin", "so-pin"],
            check=True,
            capture_output=True,
        )
        lib = pkcs11.lib(str(MODULE))
        with lib.get_token(token_label=LABEL).open(rw=True, user_pin=PIN) as session:
            params = session.create_domain_parameters(
                KeyType.EC,
                {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
                local=True,
            )
            params.generate_keypair(store=True, id=bytes([HSM_KEYID]), label="targets-hsm")
        yield Token(MODULE, LABEL, HSM_KEYID)


@pytest.fixture
def pin(token: Token, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(HSM_PIN_ENV, PIN)
    return PIN


def cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert PIN not in out and PIN not in err, "the PIN appeared in a message"
    return code, out, err


def import_hsm(capsys: pytest.CaptureFixture[str], keys: Path, token: Token) -> dict[str, str]:
    code, out, err = cli(
        capsys,
        "keys",
        "import-hsm",
        "hsm",
        "--dir",
        keys,
        "--hsm-keyid",
        str(token.keyid),
        "--token-label",
        token.label,
        "--json",
    )
    assert code == 0, err
    result: dict[str, str] = json.loads(out)
    return result


def test_import_hsm_writes_a_pub_naming_the_uri(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], token: Token, pin: str
) -> None:
    result = import_hsm(capsys, tmp_path / "keys", token)
    assert result["uri"] == f"hsm:{token.keyid}?label={token.label}"
    pub = json.loads((tmp_path / "keys" / "hsm.pub").read_text())
    assert pub["keyid"] == result["keyid"]
    assert pub["x-tufwaves-private-key-uri"] == result["uri"]
    assert (pub["keytype"], pub["scheme"]) == ("ecdsa", "ecdsa-sha2-nistp256")
    assert not (tmp_path / "keys" / "hsm.key").exists()


def test_import_hsm_errors(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    token: Token,
    pin: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = tmp_path / "keys"
    code, _, err = cli(capsys, "keys", "import-hsm", "x", "--dir", keys, "--hsm-keyid", "99")
    assert code == 3 and "could not find ECDSA key" in err
    code, _, err = cli(capsys, "keys", "import-hsm", "x", "--dir", keys, "--token-label", "nope")
    assert code == 3 and "No PKCS#11 token found" in err
    monkeypatch.delenv(PKCS11_MODULE_ENV)
    code, _, err = cli(capsys, "keys", "import-hsm", "x", "--dir", keys)
    assert code == 3 and PKCS11_MODULE_ENV in err
    assert not (keys / "x.pub").exists()


def test_two_of_three_ceremony_with_a_signature_from_the_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], token: Token, pin: str
) -> None:
    keys, repo_dir = tmp_path / "keys", tmp_path / "repo"
    for name in ("root", "alice", "bob"):
        assert cli(capsys, "keys", "generate", name, "--dir", keys)[0] == 0
    hsm_keyid = import_hsm(capsys, keys, token)["keyid"]

    # targets 2-of-3: alice and bob are key files, the third key is on the token.
    # A .pub naming a URI signs at once: alice and the token publish the repository.
    code, out, err = cli(
        capsys,
        "repo",
        "init",
        repo_dir,
        "--root-key",
        keys / "root.key",
        "--targets-key",
        keys / "alice.key",
        "--targets-key",
        keys / "bob.pub",
        "--targets-key",
        keys / "hsm.pub",
        "--targets-threshold",
        "2",
    )
    assert code == 0 and "published" in out, out + err

    artifact = tmp_path / "fw-42.img"
    artifact.write_bytes(b"firmware 42 " * 1000)
    code, out, err = cli(
        capsys,
        "waves",
        "init",
        "w1",
        "42",
        "prod",
        "--repo",
        repo_dir,
        "--artifact",
        artifact,
        "--hardware-id",
        "hw1",
        "--key",
        keys / "alice.key",
    )
    assert code == 0 and "pending" in out, out + err

    ceremony = tmp_path / "ceremony.json"
    assert cli(capsys, "waves", "ceremony", "export", "w1", ceremony, "--repo", repo_dir)[0] == 0
    code, out, err = cli(
        capsys,
        "waves",
        "ceremony",
        "sign",
        ceremony,
        "--key",
        keys / "hsm.pub",
        "--yes",
        "--keyring",
        keys,
        "--keyring",
        Path(repo_dir) / "keys",
    )
    assert code == 0, err
    assert "UNKNOWN" not in out
    assert "Signing as hsm" in out and "signed targets, wave.w1" in out
    code, out, err = cli(capsys, "waves", "ceremony", "import", ceremony, "--repo", repo_dir)
    assert code == 0, err
    assert "added signature by hsm on targets" in out and "published" in out

    # python-tuf checks the published chain root -> targets -> wave.w1, and the
    # token's signature verifies on its own over both roles.
    repo = Repository.open(repo_dir)
    root = Metadata[Root].from_bytes(repo.role_bytes("root", 1))
    targets = Metadata[Targets].from_bytes(
        repo.role_bytes("targets", repo.state().version_of("targets"))
    )
    wave = Metadata[Targets].from_bytes(repo.role_bytes("wave.w1", 1))
    root.signed.verify_delegate("targets", targets.signed_bytes, targets.signatures)
    targets.signed.verify_delegate("wave.w1", wave.signed_bytes, wave.signatures)
    hsm_key = root.signed.keys[hsm_keyid]
    for md in (targets, wave):
        assert hsm_keyid in md.signatures
        hsm_key.verify_signature(md.signatures[hsm_keyid], md.signed_bytes)
    assert targets.signed.delegations is not None
    assert targets.signed.delegations.roles is not None
    assert hsm_keyid in targets.signed.delegations.roles["wave.w1"].keyids

    # An unmodified ngclient walks targets -> wave.w1 to the artifact.
    info, data, fetched = ngclient_fetch(
        repo_dir, repo.role_bytes("root", 1), f"waves/w1/hw1/{artifact.name}"
    )
    assert data == artifact.read_bytes() and info.custom["version"] == "42"
    assert "metadata/1.wave.w1.json" in fetched


def _pending_wave(tmp_path: Path, capsys: pytest.CaptureFixture[str], token: Token) -> Path:
    keys, repo_dir = tmp_path / "keys", tmp_path / "repo"
    for name in ("root", "alice"):
        assert cli(capsys, "keys", "generate", name, "--dir", keys)[0] == 0
    import_hsm(capsys, keys, token)
    args = ["--root-key", keys / "root.key", "--targets-key", keys / "alice.key"]
    args += ["--targets-key", keys / "hsm.pub", "--targets-threshold", "2"]
    assert cli(capsys, "repo", "init", repo_dir, *args)[0] == 0
    artifact = tmp_path / "fw.img"
    artifact.write_bytes(b"fw")
    code, _, err = cli(
        capsys,
        "waves",
        "init",
        "w1",
        "1",
        "prod",
        "--repo",
        repo_dir,
        "--artifact",
        artifact,
        "--hardware-id",
        "hw1",
        "--key",
        keys / "alice.key",
    )
    assert code == 0, err
    ceremony = tmp_path / "ceremony.json"
    assert cli(capsys, "waves", "ceremony", "export", "w1", ceremony, "--repo", repo_dir)[0] == 0
    return ceremony


def test_pin_missing_or_wrong_is_a_key_error_and_nothing_is_signed(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    token: Token,
    pin: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ceremony = _pending_wave(tmp_path, capsys, token)
    before = ceremony.read_bytes()
    ring = ("--keyring", tmp_path / "keys", "--keyring", tmp_path / "repo" / "keys")
    sign = (
        "waves",
        "ceremony",
        "sign",
        ceremony,
        "--key",
        tmp_path / "keys" / "hsm.pub",
        "--yes",
        *ring,
    )

    monkeypatch.delenv(HSM_PIN_ENV)  # and stdin is not a terminal under pytest
    code, _, err = cli(capsys, *sign)
    assert code == 3 and HSM_PIN_ENV in err and "Traceback" not in err

    monkeypatch.setenv(HSM_PIN_ENV, "0000-wrong")
    code, _, err = cli(capsys, *sign)
    assert code == 3 and "PinIncorrect" in err and "0000-wrong" not in err
    assert ceremony.read_bytes() == before

    monkeypatch.setenv(HSM_PIN_ENV, pin)
    code, out, err = cli(capsys, *sign)
    assert code == 0 and "signed targets, wave.w1" in out, err


def test_repo_init_with_a_wrong_pin_is_a_key_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    token: Token,
    pin: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = tmp_path / "keys"
    for name in ("root", "alice"):
        assert cli(capsys, "keys", "generate", name, "--dir", keys)[0] == 0
    import_hsm(capsys, keys, token)
    monkeypatch.setenv(HSM_PIN_ENV, "0000-wrong")
    code, _, err = cli(
        capsys,
        "repo",
        "init",
        tmp_path / "repo",
        "--root-key",
        keys / "root.key",
        "--targets-key",
        keys / "alice.key",
        "--targets-key",
        keys / "hsm.pub",
    )
    assert code == 3 and "hsm could not sign targets: PinIncorrect" in err, err
