"""The verifier's public API on bad input: identities, decisions, roots, state dirs.

Misuse of the API raises (``InputError``, ``ValueError``); an unusable trusted
root is a ``VerificationError``; an unusable state directory a
``StorageError`` (never a silent reset); a state that cannot be saved turns an
allow into ``state_write_failed`` and leaves a denial as it is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import tree_digest
from tests.simulator import NOW, Simulator, device
from tufwaves.device.bundle import LIMITS
from tufwaves.errors import InputError, StorageError, VerificationError
from tufwaves.verify import Artifact, Decision, DeviceIdentity, Reason, Verifier

MEMBER = device(1)
OUTSIDER = device(3)
IDENTITY = DeviceIdentity(MEMBER, "hw-a", "main", 4)


def repository() -> Simulator:
    sim = Simulator()
    sim.add_production(5)
    sim.add_wave("w1", 7)
    sim.add_list_ripple("w1", [MEMBER])
    return sim


# -- DeviceIdentity and Decision ------------------------------------------------


@pytest.mark.parametrize(
    ("uuid", "hw", "tag", "installed"),
    [
        ("not-a-uuid", "hw-a", "main", 1),
        (MEMBER, "", "main", 1),
        (MEMBER, "-hw", "main", 1),
        (MEMBER, 7, "main", 1),
        (MEMBER, "hw-a", "m" * 65, 1),
        (MEMBER, "hw-a", "main", -1),
        (MEMBER, "hw-a", "main", 2**64),
        (MEMBER, "hw-a", "main", True),
        (MEMBER, "hw-a", "main", "4"),
    ],
    ids=[
        "bad-uuid",
        "empty-hardware-id",
        "hardware-id-leading-dash",
        "hardware-id-not-a-string",
        "tag-too-long",
        "installed-negative",
        "installed-too-big",
        "installed-bool",
        "installed-string",
    ],
)
def test_device_identity_rejects(uuid: str, hw: Any, tag: Any, installed: Any) -> None:
    with pytest.raises(InputError):
        DeviceIdentity(uuid, hw, tag, installed)


ART = Artifact("production/hw-a/fw-5.bin", 3, {"sha256": "00" * 32}, {"version": "5"})


@pytest.mark.parametrize(
    "make",
    [
        lambda: Decision(True, Reason.NOT_MEMBER, "no"),
        lambda: Decision(False, Reason.ALLOWED_PRODUCTION, "yes", ART),
        lambda: Decision(True, Reason.ALLOWED_PRODUCTION, "yes"),
    ],
    ids=["allowed-with-a-denial-reason", "denied-with-an-allowed-reason", "allowed-no-artifact"],
)
def test_decision_invariants(make: Callable[[], Decision]) -> None:
    with pytest.raises(ValueError, match="allowed"):
        make()


# -- trusted roots and decide ---------------------------------------------------------


@pytest.mark.parametrize(
    ("root", "error"),
    [
        (lambda s: s.trusted_root().decode(), InputError),
        (lambda s: b" " * (LIMITS.root_bytes + 1), VerificationError),
        (lambda s: s.latest("timestamp"), VerificationError),
        (lambda s: b"{}", VerificationError),
    ],
    ids=["not-bytes", "over-cap", "a-timestamp", "not-metadata"],
)
def test_unusable_trusted_root(root: Callable[[Simulator], Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        Verifier.from_trusted_root(root(repository()))


def test_decide_misuse_raises_but_bad_bundles_are_denials() -> None:
    sim = repository()
    verifier = Verifier.from_trusted_root(sim.trusted_root())
    bundle = sim.bundle(MEMBER)
    with pytest.raises(InputError):
        verifier.decide(bundle, MEMBER, NOW)  # type: ignore[arg-type]
    d = verifier.decide(bundle.to_bytes().decode(), IDENTITY, NOW)  # type: ignore[arg-type]
    assert d.reason is Reason.BUNDLE_MALFORMED
    assert verifier.decide(bytearray(bundle.to_bytes()), IDENTITY, NOW).allowed


# -- state directories ------------------------------------------------------------------


def _state(edit: Callable[[dict[str, Any]], object]) -> Callable[[Path], None]:
    def damage(directory: Path) -> None:
        path = directory / "state.json"
        data = json.loads(path.read_bytes())
        edit(data)
        path.write_text(json.dumps(data))

    return damage


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda directory: (directory / name).write_bytes(data)


STATE_DAMAGE: dict[str, Callable[[Path], None]] = {
    "no-root-json": lambda d: (d / "state.json").unlink() or (d / "root.json").unlink(),
    "root-json-over-cap": lambda d: (
        (d / "state.json").unlink() or (d / "root.json").write_bytes(b" " * (LIMITS.root_bytes + 1))
    ),
    "root-json-not-metadata": lambda d: (
        (d / "state.json").unlink() or (d / "root.json").write_bytes(b"{}")
    ),
    "root-json-is-a-timestamp": lambda d: (
        (d / "state.json").unlink()
        or (d / "root.json").write_bytes(repository().latest("timestamp"))
    ),
    "state-not-json": _write("state.json", b"{"),
    "state-over-cap": _write("state.json", b" " * 16_000_001),
    "state-not-an-object": _write("state.json", b"[]"),
    "state-other-format": _state(lambda s: s.update(format="other")),
    "state-other-version": _state(lambda s: s.update(version=2)),
    "state-unknown-key": _state(lambda s: s.update(note="x")),
    "cancelled-not-a-list": _state(lambda s: s.update(cancelled="w1")),
    "cancelled-bad-name": _state(lambda s: s.update(cancelled=["-w1"])),
    "root-version-negative": _state(lambda s: s["root"].update(version=-1)),
    "root-version-bool": _state(lambda s: s["root"].update(version=True)),
    "root-sha-not-hex": _state(lambda s: s["root"].update(sha256="zz" * 32)),
    "root-sha-short": _state(lambda s: s["root"].update(sha256="ab")),
    "root-sha-mismatch": _state(lambda s: s["root"].update(sha256="ab" * 32)),
    "root-file-missing": lambda d: (d / "roots" / "1.root.json").unlink(),
    "roots-sha-uppercase": _state(lambda s: s["roots"].update({"1": s["roots"]["1"].upper()})),
    "timestamp-sha-0x-prefixed": _state(
        lambda s: s["timestamp"].update(sha256="0x" + s["timestamp"]["sha256"][2:])
    ),
    "timestamp-sha-signed": _state(
        lambda s: s["timestamp"].update(sha256="+" + s["timestamp"]["sha256"][1:])
    ),
    "snapshot-version-not-int": _state(lambda s: s["snapshot"].update(version="2")),
    "snapshot-meta-not-object": _state(lambda s: s["snapshot"].update(meta=[])),
}


@pytest.mark.parametrize("damage", list(STATE_DAMAGE), ids=list(STATE_DAMAGE))
def test_unusable_state_directory(damage: str, tmp_path: Path) -> None:
    sim = repository()
    (tmp_path / "root.json").write_bytes(sim.trusted_root())
    assert Verifier.from_state_dir(tmp_path).decide(sim.bundle(MEMBER), IDENTITY, NOW).allowed
    STATE_DAMAGE[damage](tmp_path)
    with pytest.raises(StorageError):
        Verifier.from_state_dir(tmp_path)


def test_state_directory_that_is_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StorageError):
        Verifier.from_state_dir(tmp_path / "file")


@pytest.mark.parametrize(
    ("uuid", "reason"),
    [(MEMBER, Reason.STATE_WRITE_FAILED), (OUTSIDER, Reason.NOT_MEMBER)],
    ids=["allow-becomes-state-write-failed", "denial-stands"],
)
def test_state_that_cannot_be_saved(uuid: str, reason: Reason, tmp_path: Path) -> None:
    sim = repository()
    (tmp_path / "root.json").write_bytes(sim.trusted_root())
    (tmp_path / "roots").write_bytes(b"")  # a file where the roots directory goes
    before = tree_digest(tmp_path)
    verifier = Verifier.from_state_dir(tmp_path)
    d = verifier.decide(sim.bundle(uuid), DeviceIdentity(uuid, "hw-a", "main", 5), NOW)
    assert d.reason is reason and not d.allowed
    assert tree_digest(tmp_path) == before
