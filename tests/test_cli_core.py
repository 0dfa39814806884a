"""The command line of keys, repo, waves and demo, through ``main(argv)``."""

from __future__ import annotations

import json
import logging
import re
import stat
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE
from tufwaves.cli import build_parser, main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    d = tmp_path / "keys"
    for name in ("root", "t1", "t2", "t3"):
        assert run(capsys, "keys", "generate", name, "--dir", str(d))[0] == 0
    return d


def test_keys_generate_files(keys: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = keys / "t1.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in key.read_bytes()
    pub = json.loads((keys / "t1.pub").read_text())
    assert pub["x-tufwaves-name"] == "t1" and len(pub["keyid"]) == 64
    code, _, err = run(capsys, "keys", "generate", "t1", "--dir", str(keys))
    assert code == 3 and "never overwritten" in err
    assert key.read_bytes() == key.read_bytes()


def test_missing_passphrase_is_a_key_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TUFWAVES_KEY_PASSPHRASE")
    code, _, err = run(capsys, "keys", "generate", "k", "--dir", str(tmp_path))
    assert code == 3 and "TUFWAVES_KEY_PASSPHRASE" in err
    assert not (tmp_path / "k.key").exists()


def test_full_workflow_with_exit_codes(
    keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = str(tmp_path / "repo")
    code, out, _ = run(
        capsys,
        "repo",
        "init",
        repo,
        "--root-key",
        str(keys / "root.key"),
        "--targets-key",
        str(keys / "t1.key"),
        "--targets-key",
        str(keys / "t2.pub"),
        "--targets-key",
        str(keys / "t3.pub"),
        "--targets-threshold",
        "3",
    )
    assert code == 0 and "waiting for" in out
    assert run(capsys, "repo", "sign", "--repo", repo, "--key", str(keys / "t2.key"))[0] == 0
    cfile = str(tmp_path / "repo-ceremony.json")
    assert run(capsys, "repo", "ceremony", "export", cfile, "--repo", repo)[0] == 0
    ring = ["--keyring", str(keys), "--keyring", str(Path(repo) / "keys")]
    code, out, _ = run(
        capsys, "repo", "ceremony", "sign", cfile, "--key", str(keys / "t3.key"), "--yes", *ring
    )
    assert code == 0 and "targets keys: 3 of 3 keys" in out and "UNKNOWN" not in out
    code, out, _ = run(capsys, "repo", "ceremony", "import", cfile, "--repo", repo)
    assert code == 0 and "published" in out

    art = tmp_path / "fw.img"
    art.write_bytes(b"fw")
    base = [
        "waves",
        "init",
        "w1",
        "7",
        "prod",
        "--repo",
        repo,
        "--artifact",
        str(art),
        "--hardware-id",
        "hw",
    ]
    code, out, _ = run(capsys, *base, "--dry-run", "--key", str(keys / "t1.key"))
    assert code == 0 and "dry run" in out and "sha512" in out
    code, out, _ = run(capsys, *base, "--key", str(keys / "t1.key"), "--json")
    assert code == 0 and json.loads(out)["status"] == "pending"
    code, out, _ = run(capsys, "waves", "show", "w1", "--repo", repo)
    assert "1 of 3 signatures, waiting for: " in out
    cfile = str(tmp_path / "wave.json")
    assert run(capsys, "waves", "ceremony", "export", "w1", cfile, "--repo", repo)[0] == 0
    for k in ("t2", "t3"):
        assert (
            run(
                capsys,
                "waves",
                "ceremony",
                "sign",
                cfile,
                "--key",
                str(keys / f"{k}.key"),
                "--yes",
                *ring,
            )[0]
            == 0
        )
    code, out, _ = run(capsys, "waves", "ceremony", "import", cfile, "--repo", repo)
    assert code == 0 and "published" in out
    code, out, _ = run(capsys, "waves", "list", "--repo", repo, "--json")
    assert [w["status"] for w in json.loads(out)["waves"]] == ["active"]
    # Exit codes: refused (1), usage (2), I/O (3).
    code, _, err = run(capsys, *base[:3], "7", *base[4:], "--key", str(keys / "t1.key"))
    assert code == 1 and "already exists" in err
    code, _, err = run(
        capsys,
        "waves",
        "init",
        "w2",
        "x",
        "prod",
        "--repo",
        repo,
        "--artifact",
        str(art),
        "--hardware-id",
        "hw",
    )
    assert code == 2 and "bad version" in err
    code, _, err = run(
        capsys, "waves", "ceremony", "sign", cfile, "--key", str(tmp_path / "missing.key")
    )
    assert code == 3 and "does not exist" in err


def test_ceremony_sign_without_confirmation_refuses(
    keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = tmp_path / "c.json"
    c.write_text("{}")
    code, _, err = run(capsys, "waves", "ceremony", "sign", str(c), "--key", str(keys / "t1.key"))
    assert code == 2 and "malformed" in err


def _all_parsers() -> list[tuple[str, object]]:
    found = []

    def walk(parser, path):  # type: ignore[no-untyped-def]
        import argparse

        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found.append((" ".join([*path, name]), sub))
                    if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                        walk(sub, [*path, name])

    walk(build_parser(), [])
    return found


@pytest.mark.parametrize(("name", "parser"), _all_parsers(), ids=[n for n, _ in _all_parsers()])
def test_every_command_has_help_with_example(name: str, parser) -> None:  # type: ignore[no-untyped-def]
    text = parser.format_help()
    assert "example:" in text and "tufwaves" in text, name


def test_demo_runs_and_no_secret_leaks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tufwaves")
    code, out, err = run(capsys, "-v", "demo", "--dir", str(tmp_path / "d"))
    assert code == 0, err
    assert "python-tuf ngclient found waves/canary-42/" in out
    assert "1.wave.canary-42.json" in out
    # Devices updated over HTTP: the installs the simulated devices reported are
    # what the inventory records.
    http = re.search(r"(\d+) installed and (\d+) failed.* records (\d+) devices on version 42", out)
    assert http is not None, out
    installed, failed, recorded = map(int, http.groups())
    assert installed + failed == 20 and installed == recorded and installed > 0
    text = out + err + caplog.text
    assert PASSPHRASE not in text
    for pem in (tmp_path / "d").rglob("*.key"):
        body = pem.read_text().splitlines()[1]
        assert body not in text
    assert "PRIVATE KEY" not in text
