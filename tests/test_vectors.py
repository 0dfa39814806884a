"""The conformance vectors (specs/vectors/): current, and passed by this verifier."""

from __future__ import annotations

import base64
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from tuf.api.metadata import Metadata

from tests.vectors_gen import OUT, build_vectors
from tufwaves.cli import main
from tufwaves.cli.vectors import bundle_bytes, default_vectors_dir, load_cases
from tufwaves.errors import InputError
from tufwaves.verify import DeviceIdentity, Reason, Verifier

TUFWAVES = Path(sys.executable).parent / "tufwaves"
CASES = load_cases(OUT)


def test_vectors_match_generator() -> None:
    built = build_vectors()
    on_disk = {p.relative_to(OUT).as_posix() for p in OUT.rglob("*") if p.is_file()}
    assert on_disk == set(built), "regenerate with 'python -m tests.vectors_gen'"
    for name, data in built.items():
        assert (OUT / name).read_bytes() == data, (
            f"{name} differs: regenerate with 'python -m tests.vectors_gen'"
        )


def test_vectors_cover_every_reason_a_bundle_can_give() -> None:
    seen = {s["expect"].get("reason") for c in CASES for s in c.body["steps"]}
    not_from_a_bundle = {Reason.STATE_WRITE_FAILED.value, Reason.INTERNAL_ERROR.value}
    assert {r.value for r in Reason} - not_from_a_bundle <= seen
    assert any("exit" in s["expect"] for c in CASES for s in c.body["steps"])


def test_vectors_stay_small() -> None:
    assert sum(p.stat().st_size for p in OUT.rglob("*.json")) < 3_000_000


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _state(verifier: Verifier) -> dict[str, Any]:
    state = verifier._state
    return {
        "root": Metadata.from_bytes(state.root).signed.version,
        "timestamp": None if state.timestamp is None else state.timestamp.version,
        "snapshot": None if state.snapshot is None else state.snapshot.version,
        "cancelled": sorted(state.cancelled),
    }


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_verifier_passes_vector(case: Any) -> None:
    verifier = Verifier.from_trusted_root(base64.b64decode(case.body["trusted_root"]))
    for i, step in enumerate(case.body["steps"], start=1):
        d = step["device"]
        expect = step["expect"]
        if "exit" in expect:
            with pytest.raises(InputError):
                DeviceIdentity(d["uuid"], d["hardware_id"], d["tag"], d["installed_version"])
            continue
        device = DeviceIdentity(d["uuid"], d["hardware_id"], d["tag"], d["installed_version"])
        decision = verifier.decide(bundle_bytes(step["bundle"]), device, _at(step["at"]))
        assert (decision.allowed, decision.reason.value) == (
            expect["allowed"],
            expect["reason"],
        ), f"step {i}: {decision.message}"
        if "state" in step:
            assert _state(verifier) == step["state"], f"step {i}"


def test_bundle_pieces() -> None:
    pieces = [
        {"base64": base64.b64encode(b"[").decode()},
        {"template": "{n},", "first": 9, "count": 3},
        {"repeat": " ", "count": 2},
        {"base64": "MF0="},
    ]
    assert bundle_bytes(pieces) == b"[9,10,11,  0]"
    with pytest.raises(InputError):
        bundle_bytes([{"gzip": ""}])


def test_source_checkout_finds_its_vectors() -> None:
    assert default_vectors_dir() == OUT


def _harness(capsys: pytest.CaptureFixture[str], impl: str, *only: str) -> tuple[int, list[str]]:
    argv = ["vectors", "check", "--impl", impl, "--jobs", "2"]
    for prefix in only:
        argv += ["--only", prefix]
    code = main(argv)
    return code, capsys.readouterr().out.splitlines()


# A representative subset in the default run; the full set is marked slow and
# run by .ci/run through the command line.
SUBSET = ("reasons/", "uuid/", "sequences/", "caps/bundle-bytes", "merkle/size-17")


def test_device_verify_passes_the_harness(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = _harness(capsys, f"{TUFWAVES} device verify", *SUBSET)
    selected = [c for c in CASES if c.name.startswith(SUBSET)]
    assert lines == [f"{len(selected)} passed, 0 failed"]
    assert code == 0


@pytest.mark.slow
def test_device_verify_passes_every_vector(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = _harness(capsys, f"{TUFWAVES} device verify")
    assert lines == [f"{len(CASES)} passed, 0 failed"]
    assert code == 0


def test_harness_reports_failing_cases(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    fake = tmp_path / "always-not-member.py"
    fake.write_text(
        "import json, sys\n"
        'print(json.dumps({"allowed": False, "reason": "not_member"}))\n'
        "sys.exit(1)\n"
    )
    code, lines = _harness(capsys, f"{sys.executable} {fake}", "reasons/", "uuid/identity-braces")
    cases = [c for c in CASES if c.name.startswith(("reasons/", "uuid/identity-braces"))]
    passing = [c for c in cases if c.body["steps"][0]["expect"].get("reason") == "not_member"]
    assert lines[-1] == f"{len(passing)} passed, {len(cases) - len(passing)} failed"
    assert "FAIL reasons/allowed-production step 1: expected allowed_production (exit 0), " in (
        "\n".join(lines)
    )
    assert "FAIL uuid/identity-braces step 1: expected exit 2, got exit 1" in lines
    assert code == 1


def test_harness_without_vectors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["vectors", "check", "--impl", "x", "--vectors", str(tmp_path)]) == 3
    (tmp_path / "index.json").write_text(json.dumps({"format": "other"}))
    assert main(["vectors", "check", "--impl", "x", "--vectors", str(tmp_path)]) == 2
