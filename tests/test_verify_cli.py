"""`tufwaves device verify`: exit codes, output, state directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.simulator import Simulator, device
from tufwaves.cli import main

D = device(1)
AT = "2030-01-01T00:00:00Z"


@pytest.fixture
def files(tmp_path: Path) -> Path:
    sim = Simulator()
    sim.add_wave("w1", 7)
    sim.add_list_ripple("w1", [D])
    (tmp_path / "root.json").write_bytes(sim.trusted_root())
    (tmp_path / "bundle.json").write_bytes(sim.bundle(D).to_bytes())
    (tmp_path / "other.json").write_bytes(sim.bundle(device(2)).to_bytes())
    return tmp_path


def args(tmp: Path, *extra: str, uuid: str = D, bundle: str = "bundle.json") -> list[str]:
    return [
        "device",
        "verify",
        "--trusted-root",
        str(tmp / "root.json"),
        "--bundle",
        str(tmp / bundle),
        "--uuid",
        uuid,
        "--hardware-id",
        "hw-a",
        "--tag",
        "main",
        "--installed-version",
        "4",
        "--at",
        AT,
        *extra,
    ]


def test_allowed_exits_0(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args(files)) == 0
    out = capsys.readouterr().out
    assert "allowed: allowed_ripple" in out
    assert "artifact: waves/w1/hw-a/fw-7.bin" in out
    assert "wave: w1" in out
    assert "ripple: 1" in out


def test_denied_exits_1(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args(files, uuid=device(2), bundle="other.json")) == 1
    assert capsys.readouterr().out.startswith("denied: not_member: ")


def test_json_output(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args(files, "--json")) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["allowed"] is True
    assert out["reason"] == "allowed_ripple"
    assert out["artifact"]["custom"]["version"] == "7"
    assert (out["wave"], out["ripple"]) == ("w1", 1)


def test_expired_at_a_later_time(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = args(files)
    argv[argv.index(AT)] = "2101-01-01T00:00:00+00:00"
    assert main(argv) == 1
    assert "metadata_expired" in capsys.readouterr().out


USAGE = {
    "bad-installed-version": ["--installed-version", "04"],
    "bad-at": ["--at", "yesterday"],
    "naive-at": ["--at", "2030-01-01T00:00:00"],
}


@pytest.mark.parametrize("extra", list(USAGE.values()), ids=list(USAGE))
def test_usage_errors_exit_2(files: Path, extra: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(args(files, *extra))
    assert info.value.code == 2


def test_bad_uuid_exits_2(files: Path) -> None:
    assert main(args(files, uuid="not-a-uuid")) == 2


def test_both_trust_sources_exit_2(files: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main([*args(files), "--state-dir", str(files)])
    assert info.value.code == 2


def test_missing_bundle_exits_3(files: Path) -> None:
    assert main(args(files, bundle="nope.json")) == 3


def test_unusable_state_dir_exits_3(files: Path) -> None:
    argv = args(files)
    i = argv.index("--trusted-root")
    argv[i : i + 2] = ["--state-dir", str(files / "no-such-dir")]
    assert main(argv) == 3


def test_state_dir_is_updated(files: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    state = tmp_path_factory.mktemp("state")
    (state / "root.json").write_bytes((files / "root.json").read_bytes())
    argv = args(files)
    i = argv.index("--trusted-root")
    argv[i : i + 2] = ["--state-dir", str(state)]
    assert main(argv) == 0
    assert (state / "state.json").exists()
    assert main(argv) == 0  # the same bundle again is fine


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["device", "verify", "--help"])
    assert info.value.code == 0
    assert "example:" in capsys.readouterr().out
