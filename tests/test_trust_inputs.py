"""Inputs that reach the file system: ids and names read from files never leave the repository."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import KeyStore, RepoFactory, publish_wave, tree_digest
from tufwaves.cli import main
from tufwaves.server.staging import load_ceremony


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", "../../usb/base"),
        ("id", "wave.w1/../../../x"),
        ("id", "wave.w1\n"),
        ("role", "../targets"),
        ("role", "wave.w1/../../x"),
    ],
    ids=["id-traversal", "id-nested-traversal", "id-newline", "role-traversal", "role-nested"],
)
def test_ceremony_import_refuses_ids_and_roles_that_are_not_names(
    make_repo: RepoFactory,
    keystore: KeyStore,
    artifact: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    field: str,
    value: str,
) -> None:
    repo = make_repo(2, 3)
    publish_wave(repo, keystore, artifact)
    doc = json.loads(load_ceremony(repo, "wave.w1").to_bytes())
    if field == "id":
        doc["id"] = value
    else:
        doc["roles"][0]["role"] = value
    # What an attacker would want loaded as the repository's own pending ceremony.
    outside = tmp_path / "usb"
    outside.mkdir()
    (outside / "base.json").write_bytes(load_ceremony(repo, "wave.w1").to_bytes())
    crafted = tmp_path / "crafted.json"
    crafted.write_text(json.dumps(doc))
    before = {**tree_digest(repo.path), **tree_digest(outside)}
    code = main(["waves", "ceremony", "import", str(crafted), "--repo", str(repo.path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "ceremony" in err and ("not a ceremony id" in err or "is not root, targets" in err)
    assert {**tree_digest(repo.path), **tree_digest(outside)} == before


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644], ids=oct)
def test_private_key_readable_by_others_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: int
) -> None:
    assert main(["keys", "generate", "k", "--dir", str(tmp_path)]) == 0
    key = tmp_path / "k.key"
    key.chmod(mode)
    capsys.readouterr()
    code = main(
        ["repo", "init", str(tmp_path / "repo"), "--root-key", str(key), "--targets-key", str(key)]
    )
    err = capsys.readouterr().err
    assert code == 3
    assert str(key) in err and "chmod 600" in err
    assert not (tmp_path / "repo").exists()
    key.chmod(0o600)
    assert (
        main(
            [
                "repo",
                "init",
                str(tmp_path / "repo"),
                "--root-key",
                str(key),
                "--targets-key",
                str(key),
            ]
        )
        == 0
    )
