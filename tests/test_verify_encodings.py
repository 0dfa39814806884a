"""Re-encoded copies of genuine metadata must not lock a device out.

Signatures cover the canonical JSON of ``signed``, so anyone can re-encode a
genuine file (whitespace, key order) or change its signature list (a signature
for no key, a surplus signature dropped) and it still verifies. The trust
state remembers the content (``specs/verifier.md`` §5), so the genuine file
is still the same file afterwards.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.forge import with_files
from tests.simulator import NOW, Simulator, device
from tufwaves.verify import DeviceIdentity, Reason, Verifier

D = device(1)
ME = DeviceIdentity(D, "hw-a", "main", 4)


def _reversed_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reversed_keys(value[k]) for k in sorted(value, reverse=True)}
    if isinstance(value, list):
        return [_reversed_keys(v) for v in value]
    return value


def _junk_signature(data: bytes) -> bytes:
    obj = json.loads(data)
    obj["signatures"].append({"keyid": "ab" * 32, "sig": "00" * 64})
    return json.dumps(obj, separators=(",", ":")).encode()


def _drop_last_signature(data: bytes) -> bytes:
    obj = json.loads(data)
    assert len(obj["signatures"]) > 1
    obj["signatures"].pop()
    return json.dumps(obj, separators=(",", ":")).encode()


ENCODINGS: dict[str, Callable[[bytes], bytes]] = {
    "trailing_newline": lambda d: d + b"\n",
    "whitespace": lambda d: json.dumps(json.loads(d), indent=3).encode(),
    "key_order": lambda d: json.dumps(_reversed_keys(json.loads(d))).encode(),
    "junk_signature": _junk_signature,
}


def sim_with_wave(**kw: int) -> Simulator:
    sim = Simulator(**kw)
    sim.add_wave("w1", 7)
    sim.add_list_ripple("w1", [D])
    return sim


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_a_reencoded_root_does_not_lock_the_device_out(encoding: str) -> None:
    sim = sim_with_wave()
    genuine = sim.rotate_root(keys={"root": ["root-2"]})
    verifier = Verifier.from_trusted_root(sim.trusted_root())
    changed = ENCODINGS[encoding](genuine)
    assert changed != genuine
    d = verifier.decide(with_files(sim.bundle(D), {"root": (2, changed)}), ME, NOW)
    assert d.allowed, d.message
    assert verifier.trusted_root_version == 2
    # The normal bundle repeats the genuine v2: the same root.
    d = verifier.decide(sim.bundle(D), ME, NOW)
    assert d.allowed, d.message
    # And after the repository rotates to v3.
    sim.rotate_root(keys={"root": ["root-3"]})
    d = verifier.decide(sim.bundle(D), ME, NOW)
    assert d.allowed, d.message
    assert verifier.trusted_root_version == 3


def test_a_root_without_a_surplus_signature_is_the_same_root() -> None:
    sim = sim_with_wave(root_keys=2, root_threshold=1)
    genuine = sim.rotate_root()
    verifier = Verifier.from_trusted_root(sim.trusted_root())
    d = verifier.decide(
        with_files(sim.bundle(D), {"root": (2, _drop_last_signature(genuine))}), ME, NOW
    )
    assert d.allowed, d.message
    d = verifier.decide(sim.bundle(D), ME, NOW)
    assert d.allowed, d.message


def test_a_reencoded_trusted_root_in_the_state_dir(tmp_path: Path) -> None:
    sim = sim_with_wave()
    genuine = sim.rotate_root(keys={"root": ["root-2"]})
    (tmp_path / "root.json").write_bytes(sim.trusted_root())
    bundle = with_files(sim.bundle(D), {"root": (2, genuine + b"\n")})
    assert Verifier.from_state_dir(tmp_path).decide(bundle, ME, NOW).allowed
    sim.rotate_root(keys={"root": ["root-3"]})
    verifier = Verifier.from_state_dir(tmp_path)
    d = verifier.decide(sim.bundle(D), ME, NOW)
    assert d.allowed, d.message
    assert Verifier.from_state_dir(tmp_path).trusted_root_version == 3


def test_a_root_with_other_content_is_still_a_rollback() -> None:
    sim = sim_with_wave()
    sim.rotate_root(keys={"root": ["root-2"]})
    verifier = Verifier.from_trusted_root(sim.trusted_root())
    assert verifier.decide(sim.bundle(D), ME, NOW).allowed
    other = sim_with_wave()
    other.rotate_root(keys={"root": ["other-2"]})
    forged = with_files(sim.bundle(D), {"root": (2, other.trusted_root(2))})
    assert verifier.decide(forged, ME, NOW).reason is Reason.ROOT_ROLLBACK
    garbage = with_files(sim.bundle(D), {"root": (2, b"{}")})
    assert verifier.decide(garbage, ME, NOW).reason is Reason.ROOT_ROLLBACK


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_a_reencoded_timestamp_does_not_lock_the_device_out(encoding: str) -> None:
    sim = sim_with_wave()
    verifier = Verifier.from_trusted_root(sim.trusted_root())
    bundle = sim.bundle(D)
    genuine = sim.latest("timestamp")
    changed = ENCODINGS[encoding](genuine)
    assert changed != genuine
    version = sim.timestamp.version
    d = verifier.decide(with_files(bundle, {"timestamp": (version, changed)}), ME, NOW)
    assert d.allowed, d.message
    # The genuine timestamp of the same version is the same timestamp.
    d = verifier.decide(bundle, ME, NOW)
    assert d.allowed, d.message
    d = verifier.decide(sim.bundle(D), ME, NOW)
    assert d.allowed, d.message


def test_a_reencoded_timestamp_across_runs(tmp_path: Path) -> None:
    sim = sim_with_wave()
    (tmp_path / "root.json").write_bytes(sim.trusted_root())
    bundle = sim.bundle(D)
    spaced = sim.latest("timestamp") + b" "
    changed = with_files(bundle, {"timestamp": (sim.timestamp.version, spaced)})
    assert Verifier.from_state_dir(tmp_path).decide(changed, ME, NOW).allowed
    d = Verifier.from_state_dir(tmp_path).decide(bundle, ME, NOW)
    assert d.allowed, d.message


def test_a_state_file_with_byte_digests_still_matches_the_same_files(tmp_path: Path) -> None:
    """State written before records named content: the identical files match."""
    sim = sim_with_wave()
    sim.rotate_root(keys={"root": ["root-2"]})
    (tmp_path / "root.json").write_bytes(sim.trusted_root())
    bundle = sim.bundle(D, trusted_root=0)  # repeats root v1 and v2
    assert Verifier.from_state_dir(tmp_path).decide(bundle, ME, NOW).allowed
    state_file = tmp_path / "state.json"
    state = json.loads(state_file.read_text())
    state["roots"]["1"] = hashlib.sha256(sim.trusted_root()).hexdigest()
    state["timestamp"]["sha256"] = hashlib.sha256(sim.latest("timestamp")).hexdigest()
    state_file.write_text(json.dumps(state))
    d = Verifier.from_state_dir(tmp_path).decide(bundle, ME, NOW)
    assert d.allowed, d.message
