"""Forged bundles for verifier tests: metadata really re-signed with test keys.

The simulator (:mod:`tests.simulator`) publishes a consistent repository;
these helpers take its live ``Signed`` objects, change a copy, sign it with
the simulator's keys (python-tuf's Metadata API) and put the bytes into a
bundle, so the verifier sees validly signed but inconsistent metadata.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable, Mapping

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, MetaFile, Signed
from tuf.api.serialization.json import JSONSerializer

from tests.simulator import Simulator
from tufwaves.device.bundle import Bundle, BundleFile

_SERIALIZER = JSONSerializer(compact=True)


def sign(signed: Signed, signers: Iterable[CryptoSigner]) -> bytes:
    """``signed`` (copied) signed by every one of ``signers``, as bytes."""
    md = Metadata(copy.deepcopy(signed))
    for s in signers:
        md.sign(s, append=True)
    return md.to_bytes(_SERIALIZER)


def meta_of(data: bytes, version: int) -> MetaFile:
    """A ``MetaFile`` naming ``data`` by version, length and SHA-256."""
    return MetaFile(version, length=len(data), hashes={"sha256": hashlib.sha256(data).hexdigest()})


def with_files(bundle: Bundle, files: Mapping[str, tuple[int, bytes]]) -> Bundle:
    """``bundle`` with the files of the roles in ``files`` replaced (version, data)."""
    out = tuple(BundleFile(f.role, *files[f.role]) if f.role in files else f for f in bundle.files)
    return Bundle(bundle.device, out, bundle.evidence)


def without_files(bundle: Bundle, *roles: str) -> Bundle:
    """``bundle`` without the files of ``roles`` (and their evidence)."""
    files = tuple(f for f in bundle.files if f.role not in roles)
    evidence = tuple(e for e in bundle.evidence if e.role not in roles)
    return Bundle(bundle.device, files, evidence)


def top(
    sim: Simulator,
    bundle: Bundle,
    *,
    snapshot: Signed | None = None,
    snapshot_bytes: bytes | None = None,
    timestamp_version: int | None = None,
    named: MetaFile | None = None,
) -> Bundle:
    """``bundle`` with a new snapshot and a timestamp signed for it.

    ``snapshot`` (a ``Snapshot``) is signed with the snapshot key, unless
    ``snapshot_bytes`` are given as they are. The timestamp (version
    ``timestamp_version``, default the simulator's next) names the snapshot
    bytes, or ``named`` when given.
    """
    if snapshot_bytes is None:
        assert snapshot is not None
        snapshot_bytes = sign(snapshot, sim.signers["snapshot"])
    snap_version = Metadata.from_bytes(snapshot_bytes).signed.version
    ts = copy.deepcopy(sim.timestamp)
    ts.version = sim.timestamp.version + 1 if timestamp_version is None else timestamp_version
    ts.snapshot_meta = named or meta_of(snapshot_bytes, snap_version)
    ts_bytes = sign(ts, sim.signers["timestamp"])
    return with_files(
        bundle, {"timestamp": (ts.version, ts_bytes), "snapshot": (snap_version, snapshot_bytes)}
    )


def next_snapshot(sim: Simulator) -> Signed:
    """A copy of the simulator's snapshot at the next version."""
    snap = copy.deepcopy(sim.snapshot)
    snap.version += 1
    return snap
