"""The TUF engineer's baseline: the ripple in succinct hashed bins (TAP 15).

Every member gets its own target path ``waves/W/UUID/ARTIFACT`` (the
artifact's length and sha256, nothing else), and the wave role delegates
those paths with python-tuf's ``SuccinctRoles`` to ``2^k`` bin roles
(``bin-000`` ...): a device downloads root, timestamp, a snapshot that lists
every bin, targets, the wave role and its one bin::

    targets -> wave (paths waves/W/*/*, succinct_roles: k bits) -> bin-XXX

``k`` is chosen to minimise a device's expected download: the snapshot grows
by one entry per bin, a bin shrinks with ``N / 2^k`` entries. Sizes are
exact: a bin's size is its signed overhead plus its entry count times one
entry's size (every path has the same length), both measured on signed
roles; snapshots are built and signed for every ``k`` tried. Signing every
bin at 10^7 devices is what a server would pay per ripple; the benchmark signs
a sample of bins with their real entries and extrapolates (documented in
``bench/README.md``). The device side is real: python-tuf's ngclient
``Updater`` refreshes and looks its path up in the bin it downloads.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    SuccinctRoles,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.ngclient import Updater, UpdaterConfig

from bench._baseline import BASE, MemoryFetcher

PREFIX = "bin"
WAVE_ROLE = "wave"
MAX_K = 20
SAMPLE_BINS = 32


def target_path(wave: str, uuid: str, artifact_name: str) -> str:
    return f"waves/{wave}/{uuid}/{artifact_name}"


def bin_index(path: str, k: int) -> int:
    """``SuccinctRoles.get_role_for_target``'s bin number, without the name."""
    if k == 0:
        return 0
    digest = hashlib.sha256(path.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") >> (32 - k)


@dataclass
class Plan:
    k: int
    bins: int
    entry_bytes: int  # one target entry in a bin
    bin_overhead: int  # a signed bin with no entries
    snapshot_bytes: dict[int, int]  # k -> signed snapshot size
    fixed_bytes: int  # timestamp + targets + wave
    expected: dict[int, float]  # k -> expected bytes per device
    partition_seconds: float = 0.0
    sample_bins: int = 0
    sample_entries: int = 0
    sample_sign_seconds: float = 0.0
    sign_seconds_estimate: float = 0.0
    bin_sizes: dict[str, int] = field(default_factory=dict)  # min / max / device's


@dataclass
class BinRepository:
    files: dict[str, bytes]
    path: str
    plan: Plan


def _target(length: int, sha256: str, path: str) -> TargetFile:
    return TargetFile(length, {"sha256": sha256}, path)


def _signed_bytes(signed: Any, signer: CryptoSigner) -> bytes:
    md = Metadata(signed)
    md.sign(signer)
    data: bytes = md.to_bytes()
    return data


def _bin(
    expires: datetime, entries: Sequence[str], length: int, sha256: str, signer: CryptoSigner
) -> bytes:
    role = Targets(version=1, expires=expires)
    for path in entries:
        role.targets[path] = _target(length, sha256, path)
    return _signed_bytes(role, signer)


def _snapshot(expires: datetime, k: int, succinct: SuccinctRoles, signer: CryptoSigner) -> bytes:
    meta = {f"{r}.json": MetaFile(version=1) for r in ("targets", WAVE_ROLE)}
    if k == 0:
        meta[f"{PREFIX}-0.json"] = MetaFile(version=1)
    else:
        for name in succinct.get_roles():
            meta[f"{name}.json"] = MetaFile(version=1)
    return _signed_bytes(Snapshot(version=1, expires=expires, meta=meta), signer)


def build(
    wave: str,
    artifact: bytes,
    artifact_name: str,
    members_sorted: Sequence[str],
    device: str,
) -> BinRepository:
    """Choose ``k``, time signing a sample of bins, and build what ``device`` downloads."""
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=365)
    signers = {
        name: CryptoSigner.generate_ed25519()
        for name in ("root", "targets", "snapshot", "timestamp", WAVE_ROLE, PREFIX)
    }
    length, sha256 = len(artifact), hashlib.sha256(artifact).hexdigest()
    n = len(members_sorted)

    root = Root(version=1, expires=expires, consistent_snapshot=True)
    for role in ("root", "targets", "snapshot", "timestamp"):
        root.add_key(signers[role].public_key, role)
    wave_key = signers[WAVE_ROLE].public_key
    targets = Targets(
        version=1,
        expires=expires,
        delegations=Delegations(
            keys={wave_key.keyid: wave_key},
            roles={
                WAVE_ROLE: DelegatedRole(
                    WAVE_ROLE, [wave_key.keyid], 1, True, paths=[f"waves/{wave}/*/*"]
                )
            },
        ),
    )
    bin_key = signers[PREFIX].public_key

    def wave_role(k: int) -> Targets:
        return Targets(
            version=1,
            expires=expires,
            delegations=Delegations(
                keys={bin_key.keyid: bin_key},
                succinct_roles=SuccinctRoles([bin_key.keyid], 1, max(k, 1), PREFIX),
            ),
        )

    # Exact sizes: one entry, and a bin's overhead (paths all have one length).
    sample = [target_path(wave, u, artifact_name) for u in members_sorted[:2]]
    one = len(_bin(expires, sample[:1], length, sha256, signers[PREFIX]))
    two = len(_bin(expires, sample[:2], length, sha256, signers[PREFIX])) if n > 1 else one
    entry = two - one
    overhead = one - entry
    fixed = (  # root comes with the device (ngclient's bootstrap): not downloaded
        len(_signed_bytes(targets, signers["targets"]))
        + len(_signed_bytes(wave_role(8), signers[WAVE_ROLE]))
        + 420  # a timestamp (the one built below is about this size)
    )
    snapshots: dict[int, int] = {}
    expected: dict[int, float] = {}
    for k in range(1, MAX_K + 1):
        succinct = SuccinctRoles([bin_key.keyid], 1, k, PREFIX)
        snapshots[k] = len(_snapshot(expires, k, succinct, signers["snapshot"]))
        expected[k] = fixed + snapshots[k] + overhead + entry * n / 2**k
        if k > 2 and expected[k] > expected[k - 1] > expected[k - 2]:
            break  # past the minimum: the snapshot term only grows
    best = min(expected, key=lambda k: expected[k])
    plan = Plan(best, 2**best, entry, overhead, snapshots, fixed, expected)

    # What the server would do per ripple: partition, then sign every bin.
    started = time.perf_counter()
    paths = [target_path(wave, u, artifact_name) for u in members_sorted]
    counts = [0] * 2**best
    by_bin: dict[int, list[str]] = {}
    sample_ids = {(i * 2**best) // SAMPLE_BINS for i in range(min(SAMPLE_BINS, 2**best))}
    device_path = target_path(wave, device, artifact_name)
    device_bin = bin_index(device_path, best)
    sample_ids.add(device_bin)
    for path in paths:
        b = bin_index(path, best)
        counts[b] += 1
        if b in sample_ids:
            by_bin.setdefault(b, []).append(path)
    plan.partition_seconds = time.perf_counter() - started
    del paths

    started = time.perf_counter()
    signed_bins: dict[int, bytes] = {}
    for b in sorted(sample_ids):
        signed_bins[b] = _bin(expires, by_bin.get(b, []), length, sha256, signers[PREFIX])
    plan.sample_sign_seconds = time.perf_counter() - started
    plan.sample_bins = len(sample_ids)
    plan.sample_entries = sum(len(by_bin.get(b, [])) for b in sample_ids)
    per_entry = plan.sample_sign_seconds / max(1, plan.sample_entries)
    per_bin = plan.sample_sign_seconds / plan.sample_bins
    # Extrapolate by entries when bins are full, by bins when they are nearly empty.
    plan.sign_seconds_estimate = plan.partition_seconds + max(per_entry * n, per_bin * 2**best)
    plan.bin_sizes = {
        "min_entries": min(counts),
        "max_entries": max(counts),
        "device_entries": counts[device_bin],
        "device_bin_bytes": len(signed_bins[device_bin]),
    }

    succinct = SuccinctRoles([bin_key.keyid], 1, best, PREFIX)
    device_role = succinct.get_role_for_target(device_path)
    assert device_role == f"{PREFIX}-{device_bin:0{succinct.suffix_len}x}", device_role
    files: dict[str, bytes] = {
        "1.root.json": _signed_bytes(root, signers["root"]),
        "1.targets.json": _signed_bytes(targets, signers["targets"]),
        f"1.{WAVE_ROLE}.json": _signed_bytes(wave_role(best), signers[WAVE_ROLE]),
        f"1.{device_role}.json": signed_bins[device_bin],
    }
    snapshot = _snapshot(expires, best, succinct, signers["snapshot"])
    files["1.snapshot.json"] = snapshot
    files["timestamp.json"] = _signed_bytes(
        Timestamp(
            version=1,
            expires=expires,
            snapshot_meta=MetaFile(
                version=1,
                length=len(snapshot),
                hashes={"sha256": hashlib.sha256(snapshot).hexdigest()},
            ),
        ),
        signers["timestamp"],
    )
    return BinRepository(files, device_path, plan)


def write(repo: BinRepository, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in repo.files.items():
        (directory / name).write_bytes(data)
    (directory / "target-path").write_text(repo.path)


def decide(files: dict[str, bytes], path: str) -> dict[str, Any]:
    """A fresh ngclient Updater: refresh, then find the device's own target path."""
    fetcher = MemoryFetcher(files)
    with tempfile.TemporaryDirectory(prefix="tufwaves-bench-bins-") as tmp:
        started = time.perf_counter()
        error: str | None = None
        member = False
        try:
            updater = Updater(
                metadata_dir=tmp,
                metadata_base_url=BASE,
                target_base_url=BASE + "targets/",
                fetcher=fetcher,
                config=UpdaterConfig(),
                bootstrap=files["1.root.json"],
            )
            updater.refresh()
            member = updater.get_targetinfo(path) is not None
        except Exception as e:
            error = f"{type(e).__name__}: {e}"[:200]
        seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "member": member,
        "error": error,
        "downloaded": sum(n for _, n in fetcher.served),
        "fetched": [name for name, _ in fetcher.served],
    }
