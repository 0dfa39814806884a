"""Build the device-verifier conformance vectors of ``specs/vectors/``.

Run ``python -m tests.vectors_gen`` to regenerate them; ``tests/test_vectors.py``
checks that the files match this generator byte for byte and that the
project's verifier gives every expected outcome. The format and the harness
protocol are in ``specs/implementing.md`` section 9.

Every case is built with the test simulator (:mod:`tests.simulator`: fixed
Ed25519 seeds, fixed expiry) and the forging helpers (:mod:`tests.forge`), at
fixed reference times, so the output is deterministic. Expected outcomes are
written here by hand from ``specs/verifier.md``, except the fraction
boundary, which is searched with the verifier (it depends on the salt rule).
"""

from __future__ import annotations

import base64
import copy
import json
import re
import shutil
import uuid as uuid_mod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from securesystemslib.formats import encode_canonical
from securesystemslib.signer import CryptoSigner

from tests.forge import meta_of, sign, top, with_files
from tests.simulator import EXPIRY, NOW, Simulator, device, signer
from tufwaves.device.bundle import LIMITS, Bundle, BundleFile
from tufwaves.device.membership import MerkleEvidence
from tufwaves.verify import DeviceIdentity, Verifier

OUT = Path(__file__).resolve().parent.parent / "specs" / "vectors"
FORMAT = "tufwaves-vector"
INDEX_FORMAT = "tufwaves-vectors"
ME = device(1)
OTHER = device(2)
HEXY = "abcdef01-2345-4678-9abc-def012345678"  # a UUID with letters, for case forms
ONE_SECOND = timedelta(seconds=1)
_UNITS = ((b" ", 4096), (b"ICAg", 1024), (b"{},", 1024))  # long runs become "repeat"


@dataclass
class Step:
    """One decision: bundle bytes, identity, time and what must come out."""

    bundle: bytes
    reason: str | None = None  # None: the identity is refused (exit 2)
    uuid: str = ME
    hardware_id: str = "hw-a"
    tag: str = "main"
    installed_version: int = 1
    at: datetime = NOW
    state: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        expect: dict[str, Any] = (
            {"exit": 2}
            if self.reason is None
            else {"allowed": self.reason.startswith("allowed_"), "reason": self.reason}
        )
        out: dict[str, Any] = {
            "bundle": chunks(self.bundle),
            "device": {
                "uuid": self.uuid,
                "hardware_id": self.hardware_id,
                "tag": self.tag,
                "installed_version": self.installed_version,
            },
            "at": self.at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "expect": expect,
        }
        if self.state is not None:
            out["state"] = self.state
        return out


@dataclass
class Case:
    """A named sequence of steps from one trusted root."""

    name: str
    description: str
    trusted_root: bytes
    steps: list[Step] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        body = {
            "format": FORMAT,
            "version": 1,
            "name": self.name,
            "description": self.description,
            "trusted_root": base64.b64encode(self.trusted_root).decode("ascii"),
            "steps": [s.to_dict() for s in self.steps],
        }
        return (json.dumps(body, indent=1) + "\n").encode("ascii")


def chunks(data: bytes) -> list[dict[str, Any]]:
    """``data`` as pieces: numbered runs of array entries as ``template``
    pieces, long runs of padding as ``repeat`` pieces, the rest as ``base64``."""
    out: list[dict[str, Any]] = []
    buffer: list[bytes] = []
    parts = data.split(b"},")
    items = [part + b"}," for part in parts[:-1]] + [parts[-1]]
    pos = 0
    while pos < len(items):
        end, key, first = pos + 1, *_numbered(items[pos])
        if key is not None:
            while end < len(items) and _numbered(items[end]) == (key, first + end - pos):
                end += 1
        if key is not None and end - pos >= _MIN_RUN:
            out += _plain(b"".join(buffer))
            buffer = []
            out.append({"template": key, "first": first, "count": end - pos})
            pos = end
        else:
            buffer.append(items[pos])
            pos += 1
    out += _plain(b"".join(buffer))
    return out or [{"base64": ""}]


_MIN_RUN = 64
_NUMBER = re.compile(rb"[1-9][0-9]*")


def _numbered(item: bytes) -> tuple[str | None, int]:
    m = _NUMBER.search(item)
    if len(item) > 1024 or m is None or not item.isascii() or b"{n}" in item:
        return None, 0
    return (item[: m.start()] + b"{n}" + item[m.end() :]).decode("ascii"), int(m.group())


def _plain(data: bytes) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    pos = 0
    while True:
        found = [(data.find(unit * n, pos), unit, n) for unit, n in _UNITS]
        found = [f for f in found if f[0] >= 0]
        if not found:
            break
        start, unit, _ = min(found)
        m = re.compile(b"(?:" + re.escape(unit) + b")+").match(data, start)
        assert m is not None
        if start > pos:
            out.append({"base64": base64.b64encode(data[pos:start]).decode("ascii")})
        out.append({"repeat": unit.decode("ascii"), "count": (m.end() - start) // len(unit)})
        pos = m.end()
    if pos < len(data):
        out.append({"base64": base64.b64encode(data[pos:]).decode("ascii")})
    return out


# --------------------------------------------------------------------------
# Helpers


def sim_with_production(version: int = 5) -> Simulator:
    sim = Simulator()
    sim.add_production(version)
    return sim


def sim_with_wave(**policy: Any) -> Simulator:
    """Wave ``w1`` (v10, hw-a, main) with no ripple yet, and no production artifact."""
    sim = Simulator()
    sim.add_wave("w1", 10, policy=policy or None)
    return sim


def one(name: str, description: str, sim: Simulator, step: Step) -> Case:
    return Case(name, description, sim.trusted_root(), [step])


def raw(bundle: Bundle, change: Callable[[dict[str, Any]], None]) -> bytes:
    """``bundle`` as JSON, changed by ``change`` (for malformed bundles)."""
    d = bundle.to_dict()
    change(d)
    return json.dumps(d, separators=(",", ":")).encode("ascii")


def resign_json(
    data: bytes,
    change: Callable[[dict[str, Any]], None],
    signers: list[CryptoSigner],
    post: Callable[[dict[str, Any]], None] | None = None,
) -> bytes:
    """Metadata ``data`` with ``signed`` changed as JSON and signed again.

    ``post`` changes the whole object after signing (the signatures list).
    A ``signed`` that canonical JSON cannot encode keeps its old signatures.
    """
    md = json.loads(data)
    change(md["signed"])
    try:
        payload = encode_canonical(md["signed"]).encode()
        md["signatures"] = [
            {"keyid": s.public_key.keyid, "sig": s.sign(payload).signature} for s in signers
        ]
    except Exception:  # noqa: S110 - floats: canonical JSON has none
        pass
    if post is not None:
        post(md)
    return json.dumps(md, separators=(",", ":")).encode("ascii")


def replace(bundle: Bundle, role: str, data: bytes) -> Bundle:
    version = next(f.version for f in bundle.files if f.role == role)
    return with_files(bundle, {role: (version, data)})


def replace_raw(bundle: Bundle, role: str, data: bytes) -> bytes:
    """``bundle`` as bytes with the data of ``role`` replaced, even over its cap."""

    def change(d: dict[str, Any]) -> None:
        for f in d["files"]:
            if f["role"] == role:
                f["data"] = base64.b64encode(data).decode("ascii")

    return raw(bundle, change)


def pad(data: bytes, size: int) -> bytes:
    """``data`` with trailing spaces up to ``size`` bytes (JSON ignores them)."""
    assert len(data) <= size
    return data + b" " * (size - len(data))


def unchecked(
    device_uuid: str, files: tuple[BundleFile, ...], evidence: tuple[MerkleEvidence, ...] = ()
) -> bytes:
    """A bundle serialised as :meth:`Bundle.to_bytes` does, without its checks."""
    d = {
        "format": "tufwaves-bundle",
        "version": 1,
        "device": device_uuid,
        "files": [f.to_dict() for f in files],
        "evidence": [e.to_dict() for e in evidence],
    }
    return json.dumps(d, separators=(",", ":")).encode("ascii")


def junk(role: str, version: int = 1) -> BundleFile:
    return BundleFile(role, version, b"{}")


def decide(sim: Simulator, data: bytes | Bundle, *, uuid: str = ME) -> str:
    d = Verifier.from_trusted_root(sim.trusted_root()).decide(
        data, DeviceIdentity(uuid, "hw-a", "main", 1), NOW
    )
    return d.reason.value


# --------------------------------------------------------------------------
# Cases


def reasons() -> Iterator[Case]:
    """At least one vector per reason code a bundle can produce."""
    sim = sim_with_production()
    yield one(
        "reasons/allowed-production",
        "a production artifact in targets, newer than the installed version",
        sim,
        Step(sim.bundle(ME).to_bytes(), "allowed_production"),
    )
    sim = sim_with_wave()
    sim.add_list_ripple("w1", [ME])
    yield one(
        "reasons/allowed-ripple",
        "wave w1 (v10) is active and its list ripple names the device",
        sim,
        Step(sim.bundle(ME).to_bytes(), "allowed_ripple"),
    )
    sim = sim_with_wave()
    sim.add_fraction_ripple("w1", 1_000_000)
    yield one(
        "reasons/allowed-fraction",
        "a fraction ripple of 1,000,000 ppm admits every device",
        sim,
        Step(sim.bundle(ME).to_bytes(), "allowed_fraction"),
    )
    sim = sim_with_wave()
    sim.set_state("w1", "complete")
    yield one(
        "reasons/allowed-complete",
        "the wave is complete and its policy has online_complete true",
        sim,
        Step(sim.bundle(ME).to_bytes(), "allowed_complete"),
    )
    sim = sim_with_production()
    yield one(
        "reasons/bundle-malformed",
        "the bundle is not JSON",
        sim,
        Step(b"not a bundle", "bundle_malformed"),
    )
    yield one(
        "reasons/device-mismatch",
        "the bundle was made for another device",
        sim,
        Step(sim.bundle(OTHER).to_bytes(), "device_mismatch"),
    )
    sim = sim_with_production()
    sim.rotate_root(keys={"root": ["root-new-0"]}, sign_with=[signer("root-new-0")])
    yield one(
        "reasons/root-invalid",
        "root v2 is signed only by its new key, not by the trusted root's threshold",
        sim,
        Step(sim.bundle(ME).to_bytes(), "root_invalid"),
    )
    sim = sim_with_production()
    b = sim.bundle(ME)
    altered = json.loads(sim.trusted_root())
    altered["signed"]["expires"] = "2099-01-01T00:00:00Z"  # other signed content
    other_v1 = json.dumps(altered).encode()
    b = Bundle(b.device, (BundleFile("root", 1, other_v1), *b.files), b.evidence)
    yield one(
        "reasons/root-rollback",
        "the bundle repeats root v1 with other bytes than the trusted root v1",
        sim,
        Step(b.to_bytes(), "root_rollback"),
    )
    sim = sim_with_production()
    b = sim.bundle(ME)
    yield one(
        "reasons/timestamp-invalid",
        "the timestamp is signed by the snapshot key",
        sim,
        Step(
            replace(b, "timestamp", sign(sim.timestamp, sim.signers["snapshot"])).to_bytes(),
            "timestamp_invalid",
        ),
    )
    yield one(
        "reasons/snapshot-invalid",
        "the snapshot is signed by the timestamp key (and named by a valid timestamp)",
        sim,
        Step(
            top(sim, b, snapshot_bytes=sign(sim.snapshot, sim.signers["timestamp"])).to_bytes(),
            "snapshot_invalid",
        ),
    )
    yield one(
        "reasons/targets-invalid",
        "targets is signed by the snapshot key",
        sim,
        Step(
            replace(b, "targets", sign(sim.targets, sim.signers["snapshot"])).to_bytes(),
            "targets_invalid",
        ),
    )
    yield one(
        "reasons/rollback",
        "snapshot names targets v2; the bundle carries the older targets v1",
        sim,
        Step(with_files(b, {"targets": (1, sim.signed["targets"][1])}).to_bytes(), "rollback"),
    )
    sim = sim_with_wave()
    b = sim.bundle(ME)
    yield one(
        "reasons/delegation-invalid",
        "wave.w1 is signed by the wave's rollout key, not by its delegation's key",
        sim,
        Step(
            replace(
                b, "wave.w1", sign(sim.waves["w1"].wave.signed, sim.waves["w1"].rollout_signers)
            ).to_bytes(),
            "delegation_invalid",
        ),
    )
    sim = sim_with_production()
    sim.expire("timestamp")
    yield one(
        "reasons/metadata-expired",
        "the timestamp expired before the reference time",
        sim,
        Step(sim.bundle(ME).to_bytes(), "metadata_expired"),
    )
    sim = sim_with_wave()
    sim.waves["w1"].wave.signed.unrecognized_fields["x-tufwaves-wave"]["tag"] = "main tag"
    yield one(
        "reasons/wave-invalid-tag",
        "the wave's tag does not match [A-Za-z0-9][A-Za-z0-9_.+-]{0,63}",
        sim,
        Step(sim.bundle(ME).to_bytes(), "wave_invalid"),
    )
    sim = sim_with_wave()
    sim.add_list_ripple("w1", [ME])
    sim.waves["w1"].ripples[1].signed.unrecognized_fields["x-tufwaves-ripple"]["index"] = 2
    yield one(
        "reasons/ripple-invalid",
        "ripple.w1.1 says it is ripple 2",
        sim,
        Step(sim.bundle(ME).to_bytes(), "ripple_invalid"),
    )
    sim = sim_with_wave(max_rate=5)
    yield one(
        "reasons/policy-unsupported",
        "the wave's policy has a member this verifier does not know (max_rate)",
        sim,
        Step(sim.bundle(ME).to_bytes(), "policy_unsupported"),
    )
    sim = sim_with_wave(max_fraction_ppm=100)
    sim.add_fraction_ripple("w1", 101)
    yield one(
        "reasons/policy-violation-fraction",
        "a fraction ripple of 101 ppm; the policy allows 100",
        sim,
        Step(sim.bundle(ME).to_bytes(), "policy_violation"),
    )
    sim = sim_with_wave(online_complete=False, max_fraction_ppm=0)
    sim.set_state("w1", "complete")
    yield one(
        "reasons/policy-violation-complete",
        "the rollout keys mark the wave complete; its policy has online_complete false",
        sim,
        Step(sim.bundle(ME).to_bytes(), "policy_violation"),
    )
    sim = sim_with_wave()
    sim.add_merkle_ripple("w1", [device(i) for i in range(1, 6)])
    b = sim.bundle(ME)
    other = sim.evidence("w1", 1, device(3))
    assert other is not None
    yield one(
        "reasons/evidence-invalid",
        "the evidence is another device's inclusion proof",
        sim,
        Step(Bundle(b.device, b.files, (other,)).to_bytes(), "evidence_invalid"),
    )
    sim = sim_with_production()
    yield one(
        "reasons/no-matching-artifact",
        "no artifact for hardware id hw-b",
        sim,
        Step(sim.bundle(ME).to_bytes(), "no_matching_artifact", hardware_id="hw-b"),
    )
    yield one(
        "reasons/not-newer",
        "the device already runs version 5",
        sim,
        Step(sim.bundle(ME).to_bytes(), "not_newer", installed_version=5),
    )
    sim = sim_with_wave()
    sim.add_list_ripple("w1", [ME])
    sim.set_state("w1", "cancelled")
    yield one(
        "reasons/wave-cancelled",
        "the newest candidate's wave is cancelled",
        sim,
        Step(sim.bundle(ME).to_bytes(), "wave_cancelled"),
    )
    sim = sim_with_wave()
    sim.add_list_ripple("w1", [OTHER])
    yield one(
        "reasons/not-member",
        "the wave's only ripple lists another device",
        sim,
        Step(sim.bundle(ME).to_bytes(), "not_member"),
    )
    sim = _planned("2031-01-01T00:00:00Z", accounted=1)
    yield one(
        "reasons/plan-not-started",
        "the device's ripple is in a plan stage whose not_before is after the device clock",
        sim,
        Step(sim.bundle(ME).to_bytes(), "plan_not_started"),
    )
    sim = _planned(None, accounted=0)
    yield one(
        "reasons/plan-violation",
        "the rollout's accounting understates the device's ripple (0, it names 1 device)",
        sim,
        Step(sim.bundle(ME).to_bytes(), "plan_violation"),
    )
    sim = _planned(None, accounted=1, first=OTHER)
    k = sim.add_list_ripple("w1", [ME])
    sim.signed_of(f"ripple.w1.{k}").unrecognized_fields["x-tufwaves-ripple"]["stage"] = 1
    sim.signed_of("rollout.w1").unrecognized_fields["x-tufwaves-rollout"]["accounting"].append(
        {"stage": 1, "size": 1}
    )
    yield one(
        "reasons/plan-violation-cap",
        "the device's ripple takes the wave to 2 devices; its stage allows 1",
        sim,
        Step(sim.bundle(ME).to_bytes(), "plan_violation"),
    )
    sim = _planned("2031-01-01T00:00:00Z", accounted=1, first=OTHER)
    sim.set_state("w1", "complete")
    yield one(
        "reasons/plan-not-started-complete",
        "the planned wave is complete before its last stage's not_before",
        sim,
        Step(sim.bundle(ME).to_bytes(), "plan_not_started"),
    )
    sim = _planned(None, accounted=1)
    sim.set_state("w1", "paused")
    yield one(
        "reasons/wave-paused",
        "the planned wave's rollout state is paused",
        sim,
        Step(sim.bundle(ME).to_bytes(), "wave_paused"),
    )


def _planned(not_before: str | None, *, accounted: int, first: str = ME) -> Simulator:
    """Wave w1 with a one-stage plan (1 device) and a stage-1 list ripple naming ``first``."""
    stage = {
        "name": "canary",
        "size": {"devices": 1},
        "group": None,
        "not_before": not_before,
        "soak_seconds": None,
        "success": None,
        "abort": None,
        "timeout_seconds": None,
    }
    sim = sim_with_wave(plan={"eligible": 10, "stages": [stage]})
    k = sim.add_list_ripple("w1", [first])
    sim.signed_of(f"ripple.w1.{k}").unrecognized_fields["x-tufwaves-ripple"]["stage"] = 1
    rollout = sim.signed_of("rollout.w1").unrecognized_fields["x-tufwaves-rollout"]
    rollout["accounting"] = [{"stage": 1, "size": accounted}]
    return sim


def _padded_snapshot(sim: Simulator, bundle: Bundle, size: int) -> bytes:
    """``bundle`` with its snapshot padded to ``size`` and a timestamp naming it."""
    snap = pad(sim.latest("snapshot"), size)
    ts = copy.deepcopy(sim.timestamp)
    ts.snapshot_meta = meta_of(snap, sim.snapshot.version)
    ts_bytes = sign(ts, sim.signers["timestamp"])

    def change(d: dict[str, Any]) -> None:
        for f in d["files"]:
            if f["role"] in ("snapshot", "timestamp"):
                data = snap if f["role"] == "snapshot" else ts_bytes
                f["data"] = base64.b64encode(data).decode("ascii")

    return raw(bundle, change)


def caps() -> Iterator[Case]:
    """Every size cap of specs/bundle.md section 4: at the cap and one over."""
    sim = sim_with_production()
    b = sim.bundle(ME).to_bytes()
    for size, reason, label in (
        (LIMITS.bundle_bytes, "allowed_production", "at"),
        (LIMITS.bundle_bytes + 1, "bundle_too_large", "over"),
    ):
        yield one(
            f"caps/bundle-bytes-{label}",
            f"the bundle is {size:,} bytes (trailing JSON whitespace); cap 32,000,000",
            sim,
            Step(pad(b, size), reason),
        )

    # one root file
    sim = sim_with_production()
    sim.rotate_root()
    b = sim.bundle(ME)
    for size, reason, label in (
        (LIMITS.root_bytes, "allowed_production", "at"),
        (LIMITS.root_bytes + 1, "bundle_too_large", "over"),
    ):
        yield one(
            f"caps/root-file-{label}",
            f"root v2 is {size:,} bytes (trailing whitespace); cap 512,000",
            sim,
            Step(replace_raw(b, "root", pad(sim.signed["root"][2], size)), reason),
        )
    sim = sim_with_production()
    b = sim.bundle(ME)
    for size, reason, label in (
        (LIMITS.timestamp_bytes, "allowed_production", "at"),
        (LIMITS.timestamp_bytes + 1, "bundle_too_large", "over"),
    ):
        yield one(
            f"caps/timestamp-file-{label}",
            f"the timestamp is {size:,} bytes; cap 16,384",
            sim,
            Step(replace_raw(b, "timestamp", pad(sim.latest("timestamp"), size)), reason),
        )
    for size, reason, label in (
        (LIMITS.snapshot_bytes, "allowed_production", "at"),
        (LIMITS.snapshot_bytes + 1, "bundle_too_large", "over"),
    ):
        yield one(
            f"caps/snapshot-file-{label}",
            f"the snapshot is {size:,} bytes (the timestamp hashes these bytes); cap 2,000,000",
            sim,
            Step(
                _padded_snapshot(sim, b, size),
                reason,
            ),
        )
    for size, reason, label in (
        (LIMITS.targets_bytes, "allowed_production", "at"),
        (LIMITS.targets_bytes + 1, "bundle_too_large", "over"),
    ):
        yield one(
            f"caps/targets-file-{label}",
            f"targets is {size:,} bytes; cap 5,000,000",
            sim,
            Step(replace_raw(b, "targets", pad(sim.latest("targets"), size)), reason),
        )
    sim = sim_with_wave()
    sim.add_list_ripple("w1", [ME])
    b = sim.bundle(ME)
    for size, reason, label in (
        (LIMITS.targets_bytes, "allowed_ripple", "at"),
        (LIMITS.targets_bytes + 1, "bundle_too_large", "over"),
    ):
        yield one(
            f"caps/ripple-file-{label}",
            f"ripple.w1.1 is {size:,} bytes; cap 5,000,000 (as targets, wave.W, rollout.W)",
            sim,
            Step(replace_raw(b, "ripple.w1.1", pad(sim.latest("ripple.w1.1"), size)), reason),
        )

    # counts: junk files pass the bundle parser; the first one fails verification
    sim = sim_with_production()
    b = sim.bundle(ME)
    tops = tuple(f for f in b.files if f.role != "root")
    for count, reason, label in (
        (LIMITS.root_files, "root_invalid", "at"),
        (LIMITS.root_files + 1, "bundle_too_large", "over"),
    ):
        roots = tuple(junk("root", v) for v in range(2, 2 + count))
        yield one(
            f"caps/root-files-{label}",
            f"{count} root files (v2..v{count + 1}, not valid roots); cap 256: "
            + ("the first fails verification" if label == "at" else "refused before verifying"),
            sim,
            Step(unchecked(ME, roots + tops), reason),
        )
    for count, reason, label in (
        (LIMITS.waves, "delegation_invalid", "at"),
        (LIMITS.waves + 1, "bundle_too_large", "over"),
    ):
        waves = tuple(
            f for i in range(count) for f in (junk(f"wave.w{i:03d}"), junk(f"rollout.w{i:03d}"))
        )
        yield one(
            f"caps/waves-{label}",
            f"{count} wave/rollout pairs (not in snapshot); cap 256",
            sim,
            Step(unchecked(ME, tops + waves), reason),
        )
    ripples = tuple(junk(f"ripple.a.{k}") for k in range(1, LIMITS.ripples + 2))
    yield one(
        "caps/ripples-over",
        "10,001 ripple files of one wave; cap 10,000",
        sim,
        Step(
            unchecked(ME, (*tops, junk("wave.a"), junk("rollout.a"), *ripples)),
            "bundle_too_large",
        ),
    )
    roots = tuple(junk("root", v) for v in range(2, 2 + LIMITS.root_files))
    waves = tuple(
        f
        for i in range(1, LIMITS.waves)
        for f in (junk(f"wave.b{i:03d}"), junk(f"rollout.b{i:03d}"))
    )
    full = (*roots, *tops, junk("wave.a"), junk("rollout.a"), *ripples[:-1], *waves)
    assert len(full) == LIMITS.root_files + 3 + 2 * LIMITS.waves + LIMITS.ripples
    evidence = tuple(MerkleEvidence(f"ripple.a.{k}", 0, ()) for k in range(1, 10_001))
    yield one(
        "caps/all-counts-at",
        "256 roots, 256 waves, 10,000 ripples (10,771 files) and 10,000 evidence "
        "entries: every count at its cap; the first root fails verification",
        sim,
        Step(Bundle(ME, full, evidence).to_bytes(), "root_invalid"),
    )
    yield one(
        "caps/files-over",
        "10,772 files entries; cap 10,771, checked before the entries are parsed",
        sim,
        Step(
            raw(b, lambda d: d.__setitem__("files", [{}] * 10_772)),
            "bundle_too_large",
        ),
    )
    yield one(
        "caps/evidence-over",
        "10,001 evidence entries; cap 10,000, checked before they are parsed",
        sim,
        Step(raw(b, lambda d: d.__setitem__("evidence", [{}] * 10_001)), "bundle_too_large"),
    )
    # list ripple and policy bounds
    members = [ME] + [str(uuid_mod.UUID(int=(7 << 124) + i)) for i in range(256)]
    for count, reason, label in ((256, "allowed_ripple", "at"), (257, "ripple_invalid", "over")):
        sim = sim_with_wave()
        sim.add_list_ripple("w1", members[:count])
        yield one(
            f"caps/list-ripple-{label}",
            f"a list ripple of {count} UUIDs; at most 256",
            sim,
            Step(sim.bundle(ME).to_bytes(), reason),
        )
    for count, reason, label in ((3, "allowed_ripple", "at"), (4, "policy_violation", "over")):
        sim = sim_with_wave(max_ripple_size=3)
        sim.add_list_ripple("w1", members[:count])
        yield one(
            f"caps/max-ripple-size-{label}",
            f"a list ripple of {count} devices; the policy's max_ripple_size is 3",
            sim,
            Step(sim.bundle(ME).to_bytes(), reason),
        )
    for ppm, label in ((500_000, "at"), (500_001, "over")):
        sim = sim_with_wave(max_fraction_ppm=500_000)
        sim.add_fraction_ripple("w1", ppm)
        b = sim.bundle(OTHER)
        reason = "policy_violation"
        if label == "at":  # member or not, as the fraction rule says; never a violation
            reason = decide(sim, b, uuid=OTHER)
            assert reason in ("allowed_fraction", "not_member")
        yield one(
            f"caps/max-fraction-{label}",
            f"a fraction ripple of {ppm} ppm; max_fraction_ppm is 500,000",
            sim,
            Step(b.to_bytes(), reason, uuid=OTHER),
        )


def _merkle_sim(n: int) -> tuple[Simulator, list[str]]:
    sim = sim_with_wave()
    devices = sorted(str(uuid_mod.UUID(int=(0x42 << 120) + i * 7919)) for i in range(n))
    sim.add_merkle_ripple("w1", devices)
    return sim, devices


def merkle() -> Iterator[Case]:
    """Inclusion proofs: tree shapes, first and last leaf, broken proofs."""
    for n in (1, 2, 3, 4, 5, 8, 9, 16, 17):
        sim, devices = _merkle_sim(n)
        for which, dev in (("first", devices[0]), ("last", devices[-1])):
            if n == 1 and which == "last":
                continue
            yield one(
                f"merkle/size-{n}-{which}",
                f"a Merkle ripple of {n} devices; the {which} leaf's proof",
                sim,
                Step(sim.bundle(dev).to_bytes(), "allowed_ripple", uuid=dev),
            )
    sim, devices = _merkle_sim(5)
    dev = devices[1]
    b = sim.bundle(dev)
    ev = sim.evidence("w1", 1, dev)
    assert ev is not None

    def with_ev(e: MerkleEvidence) -> bytes:
        return Bundle(b.device, b.files, (e,)).to_bytes()

    def ev_json(change: Callable[[dict[str, Any]], None]) -> bytes:
        return raw(b, lambda d: change(d["evidence"][0]))

    role, i, path = ev.role, ev.leaf_index, ev.path
    bad = [
        ("short", "the proof without its last hash", with_ev(MerkleEvidence(role, i, path[:-1]))),
        (
            "long",
            "the proof with an extra hash",
            with_ev(MerkleEvidence(role, i, (*path, path[0]))),
        ),
        (
            "interior-as-leaf",
            "the proof of the parent node: index I/2 and the path without its first hash",
            with_ev(MerkleEvidence(role, i // 2, path[1:])),
        ),
        ("index-is-size", "leaf_index = size (5)", with_ev(MerkleEvidence(role, 5, path))),
        (
            "index-neighbour",
            "leaf_index of the next leaf",
            with_ev(MerkleEvidence(role, i + 1, path)),
        ),
        (
            "index-max",
            "leaf_index 2^64-2 (the largest the parser accepts)",
            with_ev(MerkleEvidence(role, 2**64 - 2, path)),
        ),
        (
            "path-at-cap",
            "a path of 64 hashes (the cap): parses, then fails",
            with_ev(MerkleEvidence(role, i, (path[0],) * 64)),
        ),
    ]
    for label, text, data in bad:
        yield one(f"merkle/{label}", text, sim, Step(data, "evidence_invalid", uuid=dev))
    malformed = [
        ("index-over", "leaf_index 2^64-1", lambda e: e.__setitem__("leaf_index", 2**64 - 1)),
        ("index-negative", "leaf_index -1", lambda e: e.__setitem__("leaf_index", -1)),
        ("index-bool", "leaf_index true", lambda e: e.__setitem__("leaf_index", True)),
        ("index-float", "leaf_index 1.0", lambda e: e.__setitem__("leaf_index", 1.0)),
        (
            "hash-uppercase",
            "a path entry in uppercase hex",
            lambda e: e["path"].__setitem__(0, e["path"][0].upper()),
        ),
        (
            "hash-short",
            "a path entry of 62 hex digits",
            lambda e: e["path"].__setitem__(0, "ab" * 31),
        ),
        ("unknown-member", "an extra member in the evidence", lambda e: e.__setitem__("x", 1)),
        ("missing-member", "no leaf_index", lambda e: e.pop("leaf_index")),
    ]
    for label, text, change in malformed:
        yield one(
            f"merkle/malformed-{label}",
            f"malformed evidence: {text}",
            sim,
            Step(ev_json(change), "bundle_malformed", uuid=dev),
        )
    yield one(
        "merkle/path-over-cap",
        "a path of 65 hashes: refused before hashing",
        sim,
        Step(
            ev_json(lambda e: e.__setitem__("path", e["path"][:1] * 65)),
            "bundle_too_large",
            uuid=dev,
        ),
    )
    yield one(
        "merkle/path-over-cap-malformed-entry",
        "a path of 65 hashes in an entry that is malformed too (unknown member): the cap wins",
        sim,
        Step(
            ev_json(lambda e: (e.__setitem__("path", ["zz"] * 65), e.__setitem__("x", 1))),
            "bundle_too_large",
            uuid=dev,
        ),
    )
    yield one(
        "merkle/no-evidence",
        "a member of the Merkle ripple whose bundle carries no evidence",
        sim,
        Step(Bundle(b.device, b.files, ()).to_bytes(), "not_member", uuid=dev),
    )
    sim = sim_with_wave()
    sim.add_merkle_ripple("w1", [])
    yield one(
        "merkle/empty-tree",
        "a Merkle ripple of size 0 holds nobody",
        sim,
        Step(sim.bundle(ME).to_bytes(), "not_member"),
    )
    sim = sim_with_wave()
    sim.add_list_ripple("w1", [ME])
    b = sim.bundle(ME)
    yield one(
        "merkle/evidence-for-list-ripple",
        "evidence naming a list ripple",
        sim,
        Step(
            Bundle(b.device, b.files, (MerkleEvidence("ripple.w1.1", 0, ()),)).to_bytes(),
            "evidence_invalid",
        ),
    )
    yield one(
        "merkle/evidence-for-absent-ripple",
        "evidence naming a ripple that is not in the bundle",
        sim,
        Step(
            raw(
                b,
                lambda d: d["evidence"].append(
                    {"role": "ripple.w1.2", "leaf_index": 0, "path": []}
                ),
            ),
            "bundle_malformed",
        ),
    )


def fraction() -> Iterator[Case]:
    """The fraction rule at its boundary for one device."""

    def bundle_at(p: int) -> tuple[Simulator, Bundle]:
        sim = sim_with_wave()
        sim.add_fraction_ripple("w1", p)
        return sim, sim.bundle(ME)

    lo, hi = 0, 1_000_000  # not a member at lo, a member at hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        sim, b = bundle_at(mid)
        if decide(sim, b) == "allowed_fraction":
            hi = mid
        else:
            lo = mid
    for p, reason, label in (
        (hi, "allowed_fraction", "at-boundary"),
        (hi - 1, "not_member", "below-boundary"),
        (0, "not_member", "zero"),
    ):
        sim, b = bundle_at(p)
        yield one(
            f"fraction/{label}",
            f"a fraction ripple of {p} ppm; {ME}'s hash admits it from {hi} ppm",
            sim,
            Step(b.to_bytes(), reason),
        )


def uuids() -> Iterator[Case]:
    """Device UUID forms: the identity's input form, the bundle's canonical form."""
    sim = sim_with_production()
    b = sim.bundle(HEXY).to_bytes()
    for label, form in (("uppercase", HEXY.upper()), ("mixed-case", HEXY[:9].upper() + HEXY[9:])):
        yield one(
            f"uuid/identity-{label}",
            f"the device's UUID given as {form!r}: canonicalised",
            sim,
            Step(b, "allowed_production", uuid=form),
        )
    for label, form in (
        ("braces", "{" + HEXY + "}"),
        ("urn", "urn:uuid:" + HEXY),
        ("no-hyphens", HEXY.replace("-", "")),
        ("whitespace", " " + HEXY),
        ("short", HEXY[:-1]),
    ):
        yield one(
            f"uuid/identity-{label}",
            f"the device's UUID given as {form!r}: an input error (exit 2)",
            sim,
            Step(b, None, uuid=form),
        )
    yield one(
        "uuid/bundle-uppercase",
        "the bundle's device is not in canonical (lowercase) form",
        sim,
        Step(b.replace(HEXY.encode(), HEXY.upper().encode()), "bundle_malformed", uuid=HEXY),
    )


def _ts_variant(
    name: str,
    description: str,
    reason: str,
    change: Callable[[dict[str, Any]], None],
    post: Callable[[dict[str, Any]], None] | None = None,
) -> Case:
    sim = sim_with_production()
    b = sim.bundle(ME)
    data = resign_json(sim.latest("timestamp"), change, sim.signers["timestamp"], post)
    return one(name, description, sim, Step(replace(b, "timestamp", data).to_bytes(), reason))


def parsing() -> Iterator[Case]:
    """What "parses as TUF metadata" means (python-tuf 7.0.1), shown on the timestamp."""
    for sv, reason in (
        ("1.0", "allowed_production"),
        ("1.0.0", "allowed_production"),
        ("1.99.99", "allowed_production"),
        ("1", "timestamp_invalid"),
        ("2.0.0", "timestamp_invalid"),
        ("1.0.0.0", "timestamp_invalid"),
    ):
        yield _ts_variant(
            f"parsing/spec-version-{sv}",
            f"spec_version {sv!r}: major version 1 with two or three numeric parts is accepted",
            reason,
            lambda s, sv=sv: s.__setitem__("spec_version", sv),
        )
    yield _ts_variant(
        "parsing/duplicate-signature-keyid",
        "two signature objects with the same keyid",
        "timestamp_invalid",
        lambda s: None,
        lambda md: md["signatures"].append(dict(md["signatures"][0])),
    )
    yield _ts_variant(
        "parsing/expires-fractional-seconds",
        "expires with fractional seconds (2100-01-01T00:00:00.5Z)",
        "timestamp_invalid",
        lambda s: s.__setitem__("expires", "2100-01-01T00:00:00.5Z"),
    )
    yield _ts_variant(
        "parsing/expires-offset",
        "expires with +00:00 instead of Z",
        "timestamp_invalid",
        lambda s: s.__setitem__("expires", "2100-01-01T00:00:00+00:00"),
    )
    yield _ts_variant(
        "parsing/signature-extra-member",
        "a signature object with an extra member: accepted",
        "allowed_production",
        lambda s: None,
        lambda md: md["signatures"][0].__setitem__("x-note", "ok"),
    )
    yield _ts_variant(
        "parsing/timestamp-meta-version-only",
        "the timestamp's snapshot entry has neither length nor hashes: accepted "
        "(the snapshot is then bound by version and signature only)",
        "allowed_production",
        lambda s: s["meta"].__setitem__(
            "snapshot.json", {"version": s["meta"]["snapshot.json"]["version"]}
        ),
    )
    yield _ts_variant(
        "parsing/float-in-signed",
        "a float in signed: canonical JSON cannot encode it, so no signature verifies",
        "timestamp_invalid",
        lambda s: s.__setitem__("x-ratio", 0.5),
    )
    yield _ts_variant(
        "parsing/uppercase-signature-unauthorised-key",
        "an extra signature in uppercase hex from a key the role does not authorise",
        "timestamp_invalid",
        lambda s: None,
        lambda md: md["signatures"].append({"keyid": "ab" * 32, "sig": "AB" * 64}),
    )
    yield _ts_variant(
        "parsing/lowercase-signature-unauthorised-key",
        "an extra (invalid) signature in lowercase hex from a key the role does not "
        "authorise: ignored",
        "allowed_production",
        lambda s: None,
        lambda md: md["signatures"].append({"keyid": "ab" * 32, "sig": "ab" * 64}),
    )
    yield _ts_variant(
        "parsing/uppercase-signature",
        "the timestamp key's signature in uppercase hex",
        "timestamp_invalid",
        lambda s: None,
        lambda md: md["signatures"][0].__setitem__("sig", md["signatures"][0]["sig"].upper()),
    )
    sim = sim_with_wave()
    b = sim.bundle(ME)

    def no_paths(s: dict[str, Any]) -> None:
        s["delegations"]["roles"][0].pop("paths")

    yield one(
        "parsing/delegation-without-paths",
        "targets delegates wave.w1 with neither paths nor path_hash_prefixes",
        sim,
        Step(
            replace(
                b, "targets", resign_json(sim.latest("targets"), no_paths, sim.signers["targets"])
            ).to_bytes(),
            "targets_invalid",
        ),
    )

    def hash_prefixes(s: dict[str, Any]) -> None:
        role = s["delegations"]["roles"][0]
        role.pop("paths")
        role["path_hash_prefixes"] = []

    yield one(
        "parsing/rollout-delegation-hash-prefixes",
        'wave.w1 delegates rollout.w1 with "path_hash_prefixes": [] instead of "paths": []',
        sim,
        Step(
            replace(
                b,
                "wave.w1",
                resign_json(sim.latest("wave.w1"), hash_prefixes, sim.signers["targets"]),
            ).to_bytes(),
            "wave_invalid",
        ),
    )
    b1 = Bundle(b.device, (BundleFile("root", 1, sim.trusted_root()), *b.files), b.evidence)
    yield one(
        "parsing/trusted-root-repeated",
        "the bundle starts with the trusted root v1 itself, byte for byte: accepted",
        sim,
        Step(b1.to_bytes(), "not_member"),
    )
    at = EXPIRY
    yield one(
        "parsing/expiry-at-reference-time",
        "the reference time equals every role's expiry: expired (the final root first)",
        sim,
        Step(b.to_bytes(), "metadata_expired", at=at),
    )
    yield one(
        "parsing/expiry-one-second-after",
        "the reference time is one second before every role's expiry",
        sim,
        Step(b.to_bytes(), "not_member", at=at - ONE_SECOND),
    )


def profile() -> Iterator[Case]:
    """The undefined terms of the profile, pinned down."""
    sim = sim_with_production()
    sim.targets.targets["production/hw-a/fw-9.bin"] = sim.artifact(
        "production/hw-a/fw-9.bin", 9, ["hw-a", "hw a"], ["main"]
    )
    yield one(
        "profile/production-custom-bad-hardware-id",
        "production v9's hardwareIds has an entry that is not a hardware id: the "
        "target is not for devices and is ignored (v5 wins)",
        sim,
        Step(sim.bundle(ME).to_bytes(), "allowed_production"),
    )
    sim = sim_with_production()
    t = sim.artifact("production/hw-a/fw-9.bin", 9, ["hw-a"], ["main"])
    del t.unrecognized_fields["custom"]["version"]
    sim.targets.targets["production/hw-a/fw-9.bin"] = t
    yield one(
        "profile/production-custom-no-version",
        "production v9 has no custom.version: ignored (v5 wins)",
        sim,
        Step(sim.bundle(ME).to_bytes(), "allowed_production"),
    )
    sim = sim_with_wave()
    path = "waves/w1/hw-a/fw-10.bin"
    sim.waves["w1"].wave.signed.targets[path] = sim.artifact(path, 10, ["hw-a", "hw a"], ["main"])
    yield one(
        "profile/wave-custom-bad-hardware-id",
        "a wave artifact's hardwareIds has an entry that is not a hardware id",
        sim,
        Step(sim.bundle(ME).to_bytes(), "wave_invalid"),
    )
    sim = sim_with_wave(max_rate=1)
    del sim.waves["w1"].wave.signed.unrecognized_fields["x-tufwaves-wave"]["policy"][
        "online_complete"
    ]
    yield one(
        "profile/policy-unknown-and-missing",
        "the policy lacks online_complete and has an unknown member: unknown wins",
        sim,
        Step(sim.bundle(ME).to_bytes(), "policy_unsupported"),
    )
    sim = sim_with_wave()
    yield one(
        "profile/zero-ripples-no-delegations",
        "rollout.w1 with ripples 0 and no delegations object: active, nobody in",
        sim,
        Step(sim.bundle(ME).to_bytes(), "not_member"),
    )
    sim = sim_with_wave()
    b = sim.bundle(ME)

    def empty(s: dict[str, Any]) -> None:
        s["delegations"] = {"keys": {}, "roles": []}

    rollout = resign_json(sim.latest("rollout.w1"), empty, sim.waves["w1"].rollout_signers)
    yield one(
        "profile/zero-ripples-empty-roles",
        "rollout.w1 with ripples 0 and an empty delegations object: active, nobody in",
        sim,
        Step(replace(b, "rollout.w1", rollout).to_bytes(), "not_member"),
    )
    sim = Simulator()
    sim.add_production(5)
    sim.add_wave("w1", 10, rollout_keys=2)
    sim.add_list_ripple("w1", [ME])
    b = sim.bundle(ME)

    def reverse(s: dict[str, Any]) -> None:
        role = s["delegations"]["roles"][0]
        role["keyids"] = list(reversed(role["keyids"]))

    rollout = resign_json(sim.latest("rollout.w1"), reverse, sim.waves["w1"].rollout_signers)
    yield one(
        "profile/same-keyids-other-order",
        "the ripple delegation lists the rollout key ids in another order: same set, accepted",
        sim,
        Step(replace(b, "rollout.w1", rollout).to_bytes(), "allowed_ripple"),
    )


def order() -> Iterator[Case]:
    """Which denial wins when several apply (specs/verifier.md section 2, step order)."""
    sim = sim_with_production()
    b = sim.bundle(ME)
    yield one(
        "order/file-over-cap-bad-version",
        "a root file of 512,001 bytes that also claims version 0: the cap wins",
        sim,
        Step(
            raw(
                b,
                lambda d: d["files"].insert(
                    0,
                    {
                        "role": "root",
                        "version": 0,
                        "data": base64.b64encode(b" " * 512_001).decode("ascii"),
                    },
                ),
            ),
            "bundle_too_large",
        ),
    )
    sim = sim_with_production()
    sim.expire("timestamp")
    b = sim.bundle(ME)
    yield one(
        "order/timestamp-expired-and-unsigned",
        "the timestamp is expired and signed by the wrong key: signature first",
        sim,
        Step(
            replace(b, "timestamp", sign(sim.timestamp, sim.signers["snapshot"])).to_bytes(),
            "timestamp_invalid",
        ),
    )
    sim = sim_with_production()
    sim.rotate_root(keys={"root": ["root-new-0"]}, sign_with=[signer("root-new-0")])
    b = sim.bundle(ME)
    altered = json.loads(sim.trusted_root())
    altered["signed"]["expires"] = "2099-01-01T00:00:00Z"  # other signed content
    other_v1 = json.dumps(altered).encode()
    b = Bundle(b.device, (BundleFile("root", 1, other_v1), *b.files), b.evidence)
    yield one(
        "order/root-rollback-before-root-invalid",
        "an altered root v1 and an invalid root v2: older roots are compared first",
        sim,
        Step(b.to_bytes(), "root_rollback"),
    )
    sim = sim_with_production()
    sim.add_wave("a", 10)
    sim.add_wave("b", 11)
    sim.waves["a"].wave.signed.unrecognized_fields["x-tufwaves-wave"]["tag"] = "bad tag"
    b = sim.bundle(ME)
    yield one(
        "order/delegations-before-profile",
        "wave a breaks the profile, wave b is badly signed: every delegation is "
        "verified before any profile check",
        sim,
        Step(
            replace(
                b, "wave.b", sign(sim.waves["b"].wave.signed, sim.waves["b"].rollout_signers)
            ).to_bytes(),
            "delegation_invalid",
        ),
    )
    sim = sim_with_wave(max_fraction_ppm=10)
    sim.add_merkle_ripple("w1", [ME, OTHER])
    sim.add_fraction_ripple("w1", 11)
    b = sim.bundle(ME)
    yield one(
        "order/profile-before-evidence",
        "ripple 2 violates the policy and the evidence for ripple 1 is another "
        "device's: every profile check comes before evidence",
        sim,
        Step(
            Bundle(b.device, b.files, (sim.evidence("w1", 1, OTHER),)).to_bytes(),  # type: ignore[arg-type]
            "policy_violation",
        ),
    )
    sim = sim_with_production()
    b = sim.bundle(ME)
    yield one(
        "order/device-after-parse",
        "a bundle for another device that is also malformed (unknown member)",
        sim,
        Step(
            raw(sim.bundle(OTHER), lambda d: d.__setitem__("x", 1)),
            "bundle_malformed",
        ),
    )
    sim = sim_with_production(12)
    sim.add_wave("w1", 12)
    sim.add_list_ripple("w1", [ME])
    yield one(
        "order/choice-tie-production-first",
        "production and a wave both allow version 12: production is chosen",
        sim,
        Step(sim.bundle(ME).to_bytes(), "allowed_production"),
    )
    sim = Simulator()
    sim.add_wave("a", 10)
    sim.add_wave("b", 10)
    sim.add_list_ripple("a", [OTHER])
    sim.set_state("b", "cancelled")
    yield one(
        "order/denial-tie",
        "two waves of version 10 deny: wave_cancelled comes before not_member",
        sim,
        Step(sim.bundle(ME).to_bytes(), "wave_cancelled"),
    )


def _state(root: int, ts: int | None, snap: int | None, cancelled: tuple[str, ...] = ()) -> Any:
    return {"root": root, "timestamp": ts, "snapshot": snap, "cancelled": list(cancelled)}


def sequences() -> Iterator[Case]:
    """Multi-step cases: the trust state carries from one step to the next."""
    sim = sim_with_production()
    trusted = sim.trusted_root()
    s1 = sim.bundle(ME)
    sim.rotate_root(keys={"root": ["root-b-0", "root-b-1"]}, thresholds={"root": 2})
    s2 = sim.bundle(ME)
    sim.rotate_root(sign_with=[signer("root-b-0")])
    s3 = sim.bundle(ME)
    sim.signed["root"].pop(3)
    sim.root.version = 2
    sim.rotate_root(keys={"root": ["root-c-0"]}, thresholds={"root": 1})
    s4 = sim.bundle(ME)
    yield Case(
        "sequences/root-rotation",
        "root v2 moves to two new keys with threshold 2; v3 signed by one of them "
        "is refused; a good v3 (one new key, threshold 1) is accepted; the old "
        "bundle is then a rollback",
        trusted,
        [
            Step(s1.to_bytes(), "allowed_production", state=_state(1, 2, 2)),
            Step(s2.to_bytes(), "allowed_production", state=_state(2, 3, 3)),
            Step(s3.to_bytes(), "root_invalid", state=_state(2, 3, 3)),
            Step(s4.to_bytes(), "allowed_production", state=_state(3, 5, 5)),
            Step(s2.to_bytes(), "rollback", state=_state(3, 5, 5)),
        ],
    )
    sim = sim_with_production()
    old = sim.bundle(ME)
    sim.add_production(6)
    new = sim.bundle(ME)
    yield Case(
        "sequences/rollback-after-newer",
        "after a bundle at timestamp v3, the earlier bundle at v2 is a rollback",
        sim.trusted_root(),
        [
            Step(new.to_bytes(), "allowed_production", state=_state(1, 3, 3)),
            Step(old.to_bytes(), "rollback", state=_state(1, 3, 3)),
        ],
    )
    sim = sim_with_wave()
    sim.add_list_ripple("w1", [ME])
    active = sim.bundle(ME)
    pre_cancel_rollout = (sim.current["rollout.w1"], sim.latest("rollout.w1"))
    sim.set_state("w1", "cancelled")
    cancelled = sim.bundle(ME)
    replayed = top(
        sim,
        with_files(cancelled, {"rollout.w1": pre_cancel_rollout}),
        snapshot=sim.snapshot,
    )
    sim.timestamp.version += 1  # the forged timestamp above used the next version
    sim._rollout_field("w1")["state"] = "active"
    sim.waves["w1"].rollout.signed.version += 1
    reactivated = sim.bundle(ME)
    yield Case(
        "sequences/cancel-is-final",
        "allowed, then cancelled; the pre-cancel bundle replayed is a rollback; the "
        "pre-cancel rollout role under a fresh timestamp is a rollback; the rollout "
        "keys signing the wave active again do not undo the cancel",
        sim.trusted_root(),
        [
            Step(active.to_bytes(), "allowed_ripple", state=_state(1, 2, 2)),
            Step(cancelled.to_bytes(), "wave_cancelled", state=_state(1, 3, 3, ("w1",))),
            Step(active.to_bytes(), "rollback", state=_state(1, 3, 3, ("w1",))),
            Step(replayed.to_bytes(), "rollback", state=_state(1, 3, 3, ("w1",))),
            Step(reactivated.to_bytes(), "wave_cancelled", state=_state(1, 5, 4, ("w1",))),
        ],
    )
    sim = sim_with_production()
    normal = sim.bundle(ME)
    forged = top(sim, normal, snapshot=sim.snapshot, timestamp_version=1000)
    sim.rotate_root(keys={"timestamp": ["timestamp-new"], "snapshot": ["snapshot-new"]})
    recovered = sim.bundle(ME)
    yield Case(
        "sequences/online-key-rotation-recovery",
        "a leaked timestamp key signs timestamp v1000; the real v2 is then a "
        "rollback; root v2 replaces the timestamp and snapshot keys, so the device "
        "forgets v1000 and accepts timestamp v3",
        sim.trusted_root(),
        [
            Step(forged.to_bytes(), "allowed_production", state=_state(1, 1000, 2)),
            Step(normal.to_bytes(), "rollback", state=_state(1, 1000, 2)),
            Step(recovered.to_bytes(), "allowed_production", state=_state(2, 3, 3)),
        ],
    )


def build_vectors() -> dict[str, bytes]:
    """Every vector file, by path relative to ``specs/vectors/``."""
    out: dict[str, bytes] = {}
    for group in (reasons, caps, merkle, fraction, uuids, parsing, profile, order, sequences):
        for case in group():
            out[f"{case.name}.json"] = case.to_bytes()
    index = {
        "format": INDEX_FORMAT,
        "version": 1,
        "cases": sorted(out),
    }
    out["index.json"] = (json.dumps(index, indent=1) + "\n").encode("ascii")
    return out


def write(directory: Path = OUT) -> None:
    files = build_vectors()
    if directory.exists():
        shutil.rmtree(directory)
    for name, data in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


if __name__ == "__main__":
    write()
    print(OUT)
