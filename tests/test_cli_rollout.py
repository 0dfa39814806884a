"""waves rollout / cancel / complete / status / show and device bundle via the CLI."""

from __future__ import annotations

import io
import json
import uuid as uuidlib
from pathlib import Path

import pytest

from tests.conftest import tree_digest
from tufwaves.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def repo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    keys = tmp_path / "keys"
    for name in ("root", "t1"):
        assert run(capsys, "keys", "generate", name, "--dir", str(keys))[0] == 0
    path = str(tmp_path / "repo")
    assert (
        run(
            capsys,
            "repo",
            "init",
            path,
            "--root-key",
            str(keys / "root.key"),
            "--targets-key",
            str(keys / "t1.key"),
        )[0]
        == 0
    )
    art = tmp_path / "fw.img"
    art.write_bytes(b"fw" * 50)
    assert (
        run(
            capsys,
            "waves",
            "init",
            "w1",
            "10",
            "prod",
            "--repo",
            path,
            "--artifact",
            str(art),
            "--hardware-id",
            "hw1",
            "--key",
            str(keys / "t1.key"),
        )[0]
        == 0
    )
    fleet = tmp_path / "fleet.csv"
    rows = ["uuid,hardware_id,tag,groups,installed_version"]
    rows += [
        f"{uuidlib.UUID(int=i * 7919 + 13)},hw1,prod,{'eu' if i % 2 else 'us'},5"
        for i in range(400)
    ]
    fleet.write_text("\n".join(rows) + "\n")
    code, _, err = run(capsys, "fleet", "import", str(fleet), "--repo", path)
    assert code == 0, err
    return path


def test_print_uuids_pipes_into_uuids(
    repo: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    code, out, _ = run(
        capsys,
        "waves",
        "rollout",
        "w1",
        "--repo",
        repo,
        "--limit",
        "5",
        "--seed",
        "x",
        "--dry-run",
        "--print-uuids",
    )
    lines = out.splitlines()
    assert code == 0 and len(lines) == 5
    assert all(str(uuidlib.UUID(line)) == line for line in lines)
    monkeypatch.setattr("sys.stdin", io.StringIO(out))
    code, out2, _ = run(
        capsys, "waves", "rollout", "w1", "--repo", repo, "--uuids", "@-", "--print-uuids"
    )
    assert code == 0 and out2.splitlines() == sorted(lines)
    (tmp_path / "again.txt").write_text(out)
    code, _, err = run(
        capsys, "waves", "rollout", "w1", "--repo", repo, "--uuids", f"@{tmp_path / 'again.txt'}"
    )
    assert code == 1 and "selected by ripple 1" in err


def test_malformed_uuid_list_names_entry(repo: str, capsys: pytest.CaptureFixture[str]) -> None:
    before = tree_digest(Path(repo))
    good = str(uuidlib.UUID(int=13))
    code, _, err = run(
        capsys, "waves", "rollout", "w1", "--repo", repo, "--uuids", f"{good};not-a-uuid"
    )
    assert code == 2 and "not-a-uuid" in err and "2" in err
    assert tree_digest(Path(repo)) == before


def test_history_status_cancel(repo: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "waves", "rollout", "w1", "--repo", repo, "--limit", "10")[0] == 0
    code, out, _ = run(
        capsys,
        "waves",
        "rollout",
        "w1",
        "--repo",
        repo,
        "--group",
        "eu",
        "--limit",
        "10%",
        "--json",
    )
    assert code == 0 and json.loads(out)["devices"] == 20
    code, out, _ = run(capsys, "waves", "show", "w1", "--repo", repo)
    assert "RIPPLE" in out and "group=eu, limit=10%" in out
    code, out, _ = run(capsys, "waves", "status", "w1", "--repo", repo, "--json")
    groups = {g["group"] or g["kind"]: g for g in json.loads(out)["groups"]}
    assert groups["total"]["selected"] == 30 and groups["total"]["total"] == 400
    code, out, _ = run(capsys, "waves", "cancel", "w1", "--repo", repo, "--json")
    assert code == 0 and json.loads(out)["status"] == "cancelled"
    code, _, err = run(capsys, "waves", "rollout", "w1", "--repo", repo, "--limit", "1")
    assert code == 1 and "cancelled" in err
    code, out, _ = run(capsys, "waves", "list", "--repo", repo, "--status", "cancelled")
    assert "w1" in out


def test_device_bundle_and_verify(
    repo: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run(
        capsys, "waves", "rollout", "w1", "--repo", repo, "--limit", "300", "--print-uuids"
    )
    member = out.splitlines()[7]
    bundle = tmp_path / "b.json"
    code, _, err = run(capsys, "device", "bundle", member, "--repo", repo, "--out", str(bundle))
    assert code == 0, err
    root = Path(repo) / "metadata" / "1.root.json"
    code, out, _ = run(
        capsys,
        "device",
        "verify",
        "--trusted-root",
        str(root),
        "--bundle",
        str(bundle),
        "--uuid",
        member,
        "--hardware-id",
        "hw1",
        "--tag",
        "prod",
        "--installed-version",
        "5",
        "--json",
    )
    result = json.loads(out)
    assert code == 0 and result["allowed"] and result["ripple"] == 1
    code, _, err = run(capsys, "device", "bundle", member, "--repo", repo, "--out", str(bundle))
    assert code == 2 and "--force" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["--fraction", "Infinity"],
        ["--fraction", "sNaN"],
        ["--fraction", "1.5"],
        ["--fraction", "0.0000001"],
        ["--limit", "²"],
        ["--limit", "-3"],
        ["--limit", "10%%"],
    ],
    ids=["inf", "snan", "above-one", "below-ppm", "unicode-digit", "negative", "double-percent"],
)
def test_bad_numbers_are_usage_errors(
    repo: str, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = run(capsys, "waves", "rollout", "w1", "--repo", repo, *argv)
    assert code == 2 and "Traceback" not in err and out == ""
