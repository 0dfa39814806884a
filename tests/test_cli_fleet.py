"""`tufwaves fleet ...` through tufwaves.cli.main."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tufwaves.cli import main
from tufwaves.server.inventory.sqlite import FILENAME, SqliteInventory

A = "123e4567-e89b-12d3-a456-426614174000"
B = "223e4567-e89b-12d3-a456-426614174000"
C = "323e4567-e89b-12d3-a456-426614174000"
CSV = (
    "uuid,hardware_id,tag,groups,installed_version\n"
    f"{A.upper()},rpi4,main,lab;canary,3\n"
    f"{B},imx8,main,,\n"
    f"{C},rpi4,devel,lab,7\n"
)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """Just enough of a repository for the fleet commands (they refuse other folders)."""
    path = tmp_path / "repo"
    path.mkdir()
    (path / "tufwaves.json").write_text("{}\n")
    return path


@pytest.fixture
def devices(tmp_path: Path) -> Path:
    path = tmp_path / "devices.csv"
    path.write_text(CSV)
    return path


@pytest.fixture
def imported(repo: Path, devices: Path) -> Path:
    assert main(["fleet", "import", str(devices), "--repo", str(repo)]) == 0
    return repo


@pytest.mark.parametrize(
    "argv",
    [
        ["fleet"],
        ["fleet", "import"],
        ["fleet", "report"],
        ["fleet", "list"],
        ["fleet", "show"],
    ],
    ids=["fleet", "import", "report", "list", "show"],
)
def test_help_has_an_example(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main([*argv, "--help"])
    assert raised.value.code == 0
    out = capsys.readouterr().out
    assert "example:\n  tufwaves fleet" in out


def test_import_json(repo: Path, devices: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fleet", "import", str(devices), "--repo", str(repo), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["format"], result["rows"], result["added"], result["updated"]) == (
        "csv",
        3,
        3,
        0,
    )
    assert (repo / FILENAME).is_file()
    with SqliteInventory.open(repo / FILENAME) as inventory:
        (entry,) = inventory.audit_log()
    assert entry.action == "fleet import"
    assert entry.arguments_data["rows"] == 3


def test_import_for_people_goes_to_stderr(
    repo: Path, devices: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fleet", "import", str(devices), "--repo", str(repo)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "imported 3 devices" in captured.err
    assert "3 new, 0 updated" in captured.err


def test_import_bad_file_names_the_line(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(CSV + "not-a-uuid,rpi4,main,,\n")
    assert main(["fleet", "import", str(bad), "--repo", str(repo)]) == 2
    err = capsys.readouterr().err
    assert f"{bad} line 5: uuid 'not-a-uuid'" in err
    assert "nothing from this file was imported" in err
    with SqliteInventory.open(repo / FILENAME) as inventory:
        assert list(inventory.list_devices()) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["fleet", "import", "devices.csv"],
        ["fleet", "report", A, "--installed-version", "1"],
        ["fleet", "list"],
        ["fleet", "show", A],
    ],
    ids=["import", "report", "list", "show"],
)
def test_missing_repo_is_refused(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    (tmp_path / "devices.csv").write_text(CSV)
    argv = [a if a != "devices.csv" else str(tmp_path / a) for a in argv]
    assert main([*argv, "--repo", str(missing)]) == 2
    assert "tufwaves repo init" in capsys.readouterr().err
    assert not missing.exists()


def test_import_missing_file(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fleet", "import", str(repo / "nope.csv"), "--repo", str(repo)]) == 2
    assert "is not a file" in capsys.readouterr().err


def test_report_then_show(imported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert (
        main(
            [
                "fleet",
                "report",
                B.upper(),
                "--installed-version",
                "12",
                "--repo",
                str(imported),
                "--json",
            ]
        )
        == 0
    )
    reported = json.loads(capsys.readouterr().out)
    assert (reported["uuid"], reported["installed_version"]) == (B, 12)
    assert reported["last_seen"].endswith("Z")
    assert main(["fleet", "show", B, "--repo", str(imported), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["installed_version"] == 12
    assert shown["selections"] == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["fleet", "report", "323e4567-0000-0000-0000-000000000000", "--installed-version", "1"],
            "import it first",
        ),
        (["fleet", "report", "bad", "--installed-version", "1"], "is not a device UUID"),
        (["fleet", "report", A, "--installed-version", "-1"], "is not a version"),
        (["fleet", "report", A, "--installed-version", "01"], "is not a version"),
        (["fleet", "show", "423e4567-0000-0000-0000-000000000000"], "not in the inventory"),
        (["fleet", "list", "--group", "a b"], "group 'a b'"),
        (["fleet", "list", "--limit", "x"], "not a non-negative integer"),
    ],
    ids=[
        "report-unknown",
        "report-bad-uuid",
        "report-negative",
        "report-leading-zero",
        "show-unknown",
        "list-bad-group",
        "list-bad-limit",
    ],
)
def test_errors_exit_2_and_say_why(
    imported: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = None
    try:
        code = main([*argv, "--repo", str(imported)])
    except SystemExit as e:  # argparse rejects bad argument types itself
        code = e.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_show_lists_the_ripples_that_selected_a_device(
    imported: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with SqliteInventory.open(imported / FILENAME) as inventory:
        for wave in ("w1", "w2"):
            inventory.record_ripple(
                wave,
                1,
                [A],
                selector={"uuids": [A]},
                encoding="list",
                key_ids=["k"],
                at=datetime(2030, 1, 1, tzinfo=UTC),
            )
    capsys.readouterr()
    assert main(["fleet", "show", A.upper(), "--repo", str(imported), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == {
        "uuid": A,
        "hardware_id": "rpi4",
        "tag": "main",
        "groups": ["canary", "lab"],
        "installed_version": 3,
        "last_seen": None,
        "selections": [{"wave": "w1", "ripple": 1}, {"wave": "w2", "ripple": 1}],
        "public_key": None,
        "recent_reports": [],
    }
    assert main(["fleet", "show", A, "--repo", str(imported)]) == 0
    text = capsys.readouterr().out
    assert "selected by:       wave w1 ripple 1, wave w2 ripple 1" in text
    assert "groups:            canary, lab" in text


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ([], [A, B, C]),
        (["--group", "lab"], [A, C]),
        (["--tag", "devel"], [C]),
        (["--group", "lab", "--tag", "main"], [A]),
        (["--limit", "2"], [A, B]),
        (["--group", "nobody"], []),
    ],
    ids=["all", "group", "tag", "group-and-tag", "limit", "empty-group"],
)
def test_list_json(
    imported: Path, filters: list[str], expected: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["fleet", "list", *filters, "--repo", str(imported), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [d["uuid"] for d in listed["devices"]] == expected


def test_list_for_people(imported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["fleet", "list", "--repo", str(imported)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [A, "rpi4", "main", "v3", "never", "canary;lab"]
    assert lines[1].split() == [B, "imx8", "main", "v?", "never", "-"]


def test_list_empty_inventory_says_what_to_do(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fleet", "list", "--repo", str(repo)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "tufwaves fleet import" in captured.err


def test_set_key_sets_rotates_and_removes(
    imported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = Ed25519PrivateKey.generate().public_key()
    pem = tmp_path / "device.pub"
    pem.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
    assert main(["fleet", "set-key", A, "--public-key", str(pem), "--repo", str(imported)]) == 0
    capsys.readouterr()
    assert main(["fleet", "show", A, "--repo", str(imported), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["public_key"] == raw
    hex_file = tmp_path / "device.hex"
    hex_file.write_text("ab" * 32 + "\n")
    assert (
        main(["fleet", "set-key", A, "--public-key", str(hex_file), "--repo", str(imported)]) == 0
    )
    with SqliteInventory.open(imported / FILENAME) as inventory:
        assert inventory.public_key(A) == "ab" * 32
        assert inventory.audit_log()[-1].action == "fleet set-key"
    assert main(["fleet", "set-key", A, "--remove", "--repo", str(imported)]) == 0
    with SqliteInventory.open(imported / FILENAME) as inventory:
        assert inventory.public_key(A) is None
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key")
    assert main(["fleet", "set-key", A, "--public-key", str(bad), "--repo", str(imported)]) == 2
    unknown = "ffffffff-e89b-12d3-a456-426614174000"
    assert (
        main(["fleet", "set-key", unknown, "--public-key", str(hex_file), "--repo", str(imported)])
        == 2
    )
