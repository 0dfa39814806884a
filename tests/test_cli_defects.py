"""Regression tests for command-line defects found on the landed code.

Each test failed on the code as it landed; the table-driven ones name the
defect in their parameters.
"""

from __future__ import annotations

import argparse
import json
import re
import uuid as uuidlib
from pathlib import Path

import pytest

from tufwaves import errors
from tufwaves.cli import DEBUG_ENV, EXIT_INTERNAL, build_parser, main, walk_parsers
from tufwaves.server.repository import Repository

Run = tuple[int, str, str]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> Run:
    try:
        code = main(list(argv))
    except SystemExit as e:  # --help and argparse errors
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    d = tmp_path / "keys"
    for name in ("root", "t1"):
        assert run(capsys, "keys", "generate", name, "--dir", str(d))[0] == 0
    return d


@pytest.fixture
def bare_repo(tmp_path: Path, keys: Path, capsys: pytest.CaptureFixture[str]) -> str:
    path = str(tmp_path / "repo")
    code, _, err = run(
        capsys,
        "repo",
        "init",
        path,
        "--root-key",
        str(keys / "root.key"),
        "--targets-key",
        str(keys / "t1.key"),
    )
    assert code == 0, err
    return path


def wave_init(
    capsys: pytest.CaptureFixture[str],
    repo: str,
    keys: Path,
    name: str,
    *extra: str,
    version: str = "10",
) -> Run:
    art = Path(repo).parent / "fw.img"
    art.write_bytes(b"fw" * 50)
    return run(
        capsys,
        "waves",
        "init",
        name,
        version,
        "prod",
        "--repo",
        repo,
        "--artifact",
        str(art),
        "--hardware-id",
        "hw1",
        "--key",
        str(keys / "t1.key"),
        *extra,
    )


FLEET = 400


@pytest.fixture
def repo(bare_repo: str, keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """A repository with wave w1 (tag prod, hw1) and 400 devices (eu / us)."""
    code, _, err = wave_init(capsys, bare_repo, keys, "w1")
    assert code == 0, err
    fleet = tmp_path / "fleet.csv"
    rows = ["uuid,hardware_id,tag,groups,installed_version"]
    rows += [
        f"{uuidlib.UUID(int=i * 7919 + 13)},hw1,prod,{'eu' if i % 2 else 'us'},5"
        for i in range(FLEET)
    ]
    fleet.write_text("\n".join(rows) + "\n")
    code, _, err = run(capsys, "fleet", "import", str(fleet), "--repo", bare_repo)
    assert code == 0, err
    return bare_repo


# -- errors ----------------------------------------------------------------


def test_key_error_has_a_proper_name() -> None:
    assert not hasattr(errors, "KeyError_")
    assert issubclass(errors.KeyUseError, errors.TufwavesError)
    assert errors.KeyUseError.exit_code == 3


# -- waves init --max-fraction, --expires-days, cancel --help ----------------


def test_max_fraction_sets_the_signed_cap(
    repo: str, keys: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = wave_init(
        capsys, repo, keys, "w2", "--no-online-complete", "--max-fraction", "5%", version="11"
    )
    assert code == 0, err
    code, out, _ = run(capsys, "waves", "show", "w2", "--repo", repo)
    assert code == 0 and "fraction ripples up to 5%" in out
    code, _, err = run(capsys, "waves", "rollout", "w2", "--repo", repo, "--fraction", "6%")
    assert code == 1 and "at most 5%" in err
    code, _, err = run(capsys, "waves", "rollout", "w2", "--repo", repo, "--fraction", "0.05")
    assert code == 0, err


@pytest.mark.parametrize(
    ("value", "message"),
    [("100%", "below 100%"), ("1.5", "above 100%"), ("abc", "like 0.05 or 5%")],
)
def test_max_fraction_bad_values_exit_2(
    repo: str, keys: Path, capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    code, _, err = wave_init(
        capsys, repo, keys, "w2", "--no-online-complete", "--max-fraction", value, version="11"
    )
    assert code == 2 and message in err


@pytest.mark.parametrize("days", ["99999999", "0", "-1", "3651", "1e3"])
@pytest.mark.parametrize("command", ["repo init", "waves init", "repo rotate-root"])
def test_expires_days_out_of_range_exits_2(
    bare_repo: str,
    keys: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    days: str,
) -> None:
    key = str(keys / "root.key")
    argv = {
        "repo init": [
            "repo",
            "init",
            str(tmp_path / "r2"),
            "--root-key",
            key,
            "--targets-key",
            key,
        ],
        "waves init": ["waves", "init", "w9", "10", "prod", "--repo", bare_repo],
        "repo rotate-root": ["repo", "rotate-root", "--repo", bare_repo, "--key", key],
    }[command]
    code, out, err = run(capsys, *argv, f"--expires-days={days}")
    assert code == 2, err
    assert "1 to 3650" in err and "Traceback" not in err + out
    assert not (tmp_path / "r2").exists()


def test_expires_days_in_range_is_accepted(
    bare_repo: str, keys: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert wave_init(capsys, bare_repo, keys, "w9", "--expires-days", "3650")[0] == 0


def test_cancel_help_documents_only_its_own_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "waves", "cancel", "--help")
    assert code == 0 and "--offline" not in out
    code, out, _ = run(capsys, "waves", "complete", "--help")
    assert code == 0 and "--offline" in out


# -- fleet refuses what is not a repository; bundle --out never mkdirs --------


@pytest.mark.parametrize(
    "argv",
    [
        ["fleet", "list"],
        ["fleet", "import", "FLEET"],
        ["fleet", "show", str(uuidlib.UUID(int=13))],
        ["fleet", "report", str(uuidlib.UUID(int=13)), "--installed-version", "3"],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_fleet_refuses_a_folder_that_is_not_a_repository(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    fleet = tmp_path / "fleet.csv"
    fleet.write_text(
        f"uuid,hardware_id,tag,groups,installed_version\n{uuidlib.UUID(int=13)},h,t,,\n"
    )
    argv = [str(fleet) if a == "FLEET" else a for a in argv]
    code, _, err = run(capsys, *argv, "--repo", str(folder))
    assert code == 2 and "not a tufwaves repository" in err
    assert list(folder.iterdir()) == []


def test_bundle_out_in_a_missing_folder_exits_3(
    repo: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "nonexistent" / "dir" / "x.bundle"
    code, _, err = run(
        capsys, "device", "bundle", str(uuidlib.UUID(int=13)), "--repo", repo, "--out", str(out)
    )
    assert code == 3, err
    assert "does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "nonexistent").exists()


# -- dependency errors, internal errors, JSON errors, subcommand usage -------


@pytest.mark.parametrize(
    "argv",
    [
        ["waves", "list"],
        ["waves", "show", "w1"],
        ["waves", "status", "w1"],
        ["device", "bundle", str(uuidlib.UUID(int=13)), "--out", "OUT"],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_truncated_wave_file_is_a_storage_error(
    repo: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    wave_file = Path(repo) / "metadata" / "1.wave.w1.json"
    wave_file.write_bytes(wave_file.read_bytes()[:100])
    argv = [str(tmp_path / "b") if a == "OUT" else a for a in argv]
    code, out, err = run(capsys, *argv, "--repo", repo)
    assert code == 3, err
    assert str(wave_file) in err and "backup" in err
    assert "Traceback" not in out + err


@pytest.mark.parametrize(
    "argv", [["repo", "refresh"], ["waves", "rollout", "w1", "--limit", "1"]], ids=str
)
def test_missing_online_key_is_a_storage_error(
    repo: str, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    config = Path(repo) / "tufwaves.json"
    data = json.loads(config.read_text())
    data["online_keys"] = {}
    config.write_text(json.dumps(data))
    code, out, err = run(capsys, *argv, "--repo", repo)
    assert code == 3, err
    assert "names no online" in err and str(config) in err
    assert "Traceback" not in out + err


@pytest.mark.parametrize("debug", [None, "env", "verbose"])
def test_unexpected_exception_is_an_internal_error(
    bare_repo: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    debug: str | None,
) -> None:
    def boom(self: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(Repository, "state", boom)
    if debug == "env":
        monkeypatch.setenv(DEBUG_ENV, "1")
    verbose = ["-v"] if debug == "verbose" else []
    code, out, err = run(capsys, *verbose, "repo", "show", "--repo", bare_repo)
    assert code == EXIT_INTERNAL == 70
    assert "tufwaves: error: internal error: RuntimeError: boom; please report it" in err
    assert ("Traceback" in err) == (debug is not None)
    assert out == ""


def test_unknown_option_shows_the_subcommand_usage(
    repo: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "waves", "show", "w1", "--repo", repo, "--bogus")
    assert code == 2
    assert err.startswith("usage: tufwaves waves show ")
    assert "tufwaves waves show: error: unrecognized arguments: --bogus" in err
    assert "Try 'tufwaves waves show --help'" in err


@pytest.mark.parametrize(
    ("argv", "exit_code", "words"),
    [
        (["waves", "show", "nosuch", "--repo", "REPO"], 2, "no wave nosuch"),
        (["waves", "show", "w1", "--repo", "REPO", "--bogus"], 2, "unrecognized arguments"),
        (["waves", "rollout", "w1", "--repo", "REPO", "--limit", "x"], 2, "--limit"),
        (["waves", "rollout", "w1", "--repo", "REPO", "--group", "nosuch"], 1, "no eligible"),
        (["fleet", "list", "--repo", "NOTREPO"], 2, "not a tufwaves repository"),
        (["waves", "init", "w2", "11", "prod", "--repo", "REPO", "--expires-days", "0"], 2, "1 to"),
    ],
    ids=["input", "usage", "bad-limit", "refused", "not-a-repo", "parser-type"],
)
def test_json_errors_are_json_on_stdout(
    repo: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    exit_code: int,
    words: str,
) -> None:
    argv = [{"REPO": repo, "NOTREPO": str(tmp_path)}.get(a, a) for a in argv]
    code, out, err = run(capsys, *argv, "--json")
    assert code == exit_code
    error = json.loads(out)
    assert error == {"error": error["error"], "exit_code": exit_code}
    assert words in error["error"] and words in err


# -- help: every page has a description, an example and help on every option -


def _pages() -> list[tuple[str, argparse.ArgumentParser]]:
    return [(" ".join(path), p) for path, p in walk_parsers(build_parser())]


@pytest.mark.parametrize(("command", "parser"), _pages(), ids=[c for c, _ in _pages()])
def test_every_help_page_is_complete(command: str, parser: argparse.ArgumentParser) -> None:
    assert parser.description, f"{command}: no description"
    assert parser.epilog and "example:\n  tufwaves " in parser.epilog, command
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help, f"{command}: {name} has no help text"
    text = parser.format_help()
    assert "%%" not in text, f"{command}: a literal %% in --help"
    assert "example:" in text


def test_every_command_is_walked() -> None:
    commands = {c for c, _ in _pages()}
    assert len(commands) > 30
    assert {"tufwaves waves rollout", "tufwaves repo ceremony sign", "tufwaves demo"} <= commands


@pytest.mark.parametrize("argv", [["waves", "rollout", "--help"], ["demo", "--help"]], ids=str)
def test_help_shows_percent_signs_once(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "%%" not in out and "10%" in out


# -- TUFWAVES_REPO --------------------------------------------------------


def test_every_repo_option_defaults_to_tufwaves_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUFWAVES_REPO", "/srv/ota/repo")
    with_repo = []
    for path, parser in walk_parsers(build_parser()):
        for action in parser._actions:
            if "--repo" in action.option_strings:
                with_repo.append(" ".join(path))
                assert not action.required and action.default == Path("/srv/ota/repo")
                assert action.help and "$TUFWAVES_REPO" in action.help
    assert len(with_repo) > 20
    monkeypatch.delenv("TUFWAVES_REPO")
    for _, parser in walk_parsers(build_parser()):
        for action in parser._actions:
            if "--repo" in action.option_strings:
                # 'waves audit' reads a directory or a URL: --repo is one of two sources.
                assert action.required or "--url" in parser._option_string_actions


@pytest.mark.parametrize(
    "argv", [["waves", "list"], ["fleet", "list"], ["waves", "status", "w1"]], ids=str
)
def test_commands_use_tufwaves_repo(
    repo: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    monkeypatch.setenv("TUFWAVES_REPO", repo)
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert out


# -- option combinations ------------------------------------------------------


def test_print_uuids_with_json_adds_the_uuids(
    repo: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["waves", "rollout", "w1", "--repo", repo, "--limit", "3", "--seed", "s", "--dry-run"]
    code, out, _ = run(capsys, *argv, "--print-uuids", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["devices"] == 3 and len(doc["uuids"]) == 3 and doc["dry_run"] is True
    code, plain, _ = run(capsys, *argv, "--print-uuids")
    assert plain.split() == doc["uuids"]


def test_ripple_without_members_is_refused(repo: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "waves", "show", "w1", "--repo", repo, "--ripple", "1")
    assert code == 2 and "add --members" in err and out == ""


def _status_total(capsys: pytest.CaptureFixture[str], repo: str) -> dict[str, int]:
    code, out, err = run(capsys, "waves", "status", "w1", "--repo", repo, "--json")
    assert code == 0, err
    (total,) = [g for g in json.loads(out)["groups"] if g["kind"] == "total"]
    return {k: total[k] for k in ("total", "eligible", "selected")}


def test_status_counts_fraction_ripples_exactly(
    repo: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _status_total(capsys, repo)
    assert before == {"total": FLEET, "eligible": FLEET, "selected": 0}
    code, _, err = run(capsys, "waves", "rollout", "w1", "--repo", repo, "--limit", "10")
    assert code == 0, err
    code, _, err = run(capsys, "waves", "rollout", "w1", "--repo", repo, "--fraction", "20%")
    assert code == 0, err
    code, out, _ = run(capsys, "waves", "show", "w1", "--repo", repo, "--members", "--ripple", "1")
    listed = set(out.split())
    code, out, _ = run(capsys, "waves", "show", "w1", "--repo", repo, "--members", "--ripple", "2")
    members = set(out.split())
    assert 40 < len(members) < 120
    expected = len(listed | members)
    after = _status_total(capsys, repo)
    assert after == {"total": FLEET, "eligible": FLEET - expected, "selected": expected}
    code, out, _ = run(capsys, "waves", "status", "w1", "--repo", repo)
    assert f"{expected:>10,}" in out and "2 ripples" in out


# -- wording -------------------------------------------------------------------


def test_one_device_is_singular(repo: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "waves", "rollout", "w1", "--repo", repo, "--limit", "1")
    assert code == 0 and "1 device (list)" in out and "1 devices" not in out + err
    code, out, _ = run(capsys, "waves", "status", "w1", "--repo", repo)
    assert "1 ripple\n" in out


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        (["--group", "nosuch"], "no device matches --group nosuch"),
        (["--tag", "none", "--group", "eu"], "no device matches --group eu --tag none"),
    ],
)
def test_fleet_list_says_the_filter_matched_none(
    repo: str, capsys: pytest.CaptureFixture[str], filters: list[str], message: str
) -> None:
    code, out, err = run(capsys, "fleet", "list", *filters, "--repo", repo)
    assert code == 0 and out == ""
    assert message in err and "import some" not in err


def test_reimport_counts_unchanged_rows(
    repo: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = tmp_path / "fleet.csv"
    code, _, err = run(capsys, "fleet", "import", str(fleet), "--repo", repo)
    assert code == 0 and f"({0} new, 0 updated, {FLEET} unchanged)" in err
    lines = fleet.read_text().splitlines()
    lines[1] = lines[1].replace(",us,", ",us;lab,")  # groups changed
    lines[2] = lines[2].replace(",5", ",6")  # version changed
    fleet.write_text("\n".join(lines) + "\n")
    code, out, err = run(capsys, "fleet", "import", str(fleet), "--repo", repo, "--json")
    doc = json.loads(out)
    assert (doc["added"], doc["updated"], doc["unchanged"]) == (0, 2, FLEET - 2)


def test_no_eligible_device_message_is_readable(
    repo: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "waves", "rollout", "w1", "--repo", repo, "--group", "nosuch")
    assert code == 1
    assert "(group nosuch)" in err and "{" not in err


def test_repo_init_does_not_list_met_roles_as_waiting(
    keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "keys", "generate", "t2", "--dir", str(keys))[0] == 0
    code, out, _ = run(
        capsys,
        "repo",
        "init",
        str(tmp_path / "r"),
        "--root-key",
        str(keys / "root.key"),
        "--targets-key",
        str(keys / "t1.key"),
        "--targets-key",
        str(keys / "t2.pub"),
        "--targets-threshold",
        "2",
    )
    assert code == 0
    waiting, _, met = out.partition("already met:")
    assert "targets: 1 of 2 signatures, waiting for: t2" in waiting
    assert "root:" not in waiting and "root: 1 of 1" in met


# -- documented options exist ---------------------------------------------------

ROOT = Path(__file__).parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "specs").glob("*.md"))]
_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z-]*[a-z]")
_GROUPS = ("keys", "repo", "waves", "fleet", "device", "vectors", "serve", "simulate", "demo")


def _documented_commands(text: str) -> list[str]:
    """Command lines: lines with 'tufwaves ' (joined at a trailing backslash)
    and backtick spans that start with a command group."""
    found = []
    joined = re.sub(r"\\\n\s*", " ", text)
    command = re.compile(rf"(?:^|[\s`(])tufwaves ((?:{'|'.join(_GROUPS)})\b.*)")
    for line in joined.splitlines():
        match = command.search(line)
        if match:
            found.append(match.group(1))
    prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    for span in re.findall(r"`([^`]+)`", prose):
        words = span.split()
        if words and words[0] == "tufwaves":
            words = words[1:]
        if words and words[0] in _GROUPS:
            found.append(" ".join(words))
    return found


def _resolve(words: list[str]) -> argparse.ArgumentParser | None:
    """The innermost parser the words name, or None when they name no command."""
    parser: argparse.ArgumentParser = build_parser()
    depth = 0
    for word in words:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or word not in subs[0].choices:
            break
        parser = subs[0].choices[word]
        depth += 1
    return parser if depth else None


def _documented_options() -> list[tuple[str, str, str]]:
    cases = []
    for doc in DOCS:
        for command in _documented_commands(doc.read_text()):
            for option in _OPTION.findall(command):
                cases.append((doc.name, command.split(" --")[0].strip(), option))
    return sorted(set(cases))


def test_docs_name_options() -> None:
    options = {option for _, _, option in _documented_options()}
    assert {"--max-fraction", "--fraction", "--print-uuids", "--installed-version"} <= options


@pytest.mark.parametrize(("doc", "command", "option"), _documented_options())
def test_documented_option_exists(doc: str, command: str, option: str) -> None:
    every = {
        o for _, p in walk_parsers(build_parser()) for a in p._actions for o in a.option_strings
    }
    assert option in every, f"{doc}: {option} is no option of any command"
    parser = _resolve(command.split())
    if parser is not None and not any(
        isinstance(a, argparse._SubParsersAction) for a in parser._actions
    ):
        names = {o for a in parser._actions for o in a.option_strings}
        assert option in names, f"{doc}: 'tufwaves {command}' has no {option}"
