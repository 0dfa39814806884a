"""Build the worked examples of specs/metadata.md from fixed keys and times.

Run ``python -m tests.spec_examples`` to regenerate ``specs/examples/``;
``tests/test_spec_examples.py`` checks that the files match.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Role,
    Root,
    Snapshot,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from tufwaves.device.membership import ListMembership, MerkleMembership, merkle_root
from tufwaves.server.metadata import (
    Policy,
    WaveInfo,
    artifact_target,
    build_ripple,
    build_rollout,
    build_wave,
)

EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)
PRETTY = JSONSerializer(compact=False)  # readable; signatures cover canonical JSON only
OUT = Path(__file__).resolve().parent.parent / "specs" / "examples"


def signer(seed: str) -> CryptoSigner:
    private = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed.encode()).digest())
    return CryptoSigner(private, SSlibKey.from_crypto(private.public_key()))


def build_examples() -> dict[str, bytes]:
    root_k, targets_k, snap_k, ts_k, roll_k = (
        signer(s) for s in ("root", "targets", "snapshot", "timestamp", "rollout")
    )
    keys = {s.public_key.keyid: s.public_key for s in (root_k, targets_k, snap_k, ts_k)}
    root = Metadata(
        Root(
            version=1,
            expires=EXPIRES,
            keys=keys,
            roles={
                "root": Role([root_k.public_key.keyid], 1),
                "targets": Role([targets_k.public_key.keyid], 1),
                "snapshot": Role([snap_k.public_key.keyid], 1),
                "timestamp": Role([ts_k.public_key.keyid], 1),
            },
            consistent_snapshot=True,
        )
    )
    root.sign(root_k)

    wave_name = "spring-fix"
    artifact = artifact_target(
        f"waves/{wave_name}/imx8mm/fw-42.img",
        b"firmware 42\n",
        hardware_ids=["imx8mm"],
        tag="production",
        version=42,
        name="fw-42.img",
    )
    wave = build_wave(
        WaveInfo(wave_name, "production", 42, Policy(100_000, True)),
        [artifact],
        [roll_k.public_key],
        1,
        EXPIRES,
    )
    wave.sign(targets_k)

    targets = Metadata(
        Targets(
            version=2,
            expires=EXPIRES,
            delegations=Delegations(
                keys={targets_k.public_key.keyid: targets_k.public_key},
                roles={
                    f"wave.{wave_name}": DelegatedRole(
                        f"wave.{wave_name}",
                        [targets_k.public_key.keyid],
                        1,
                        True,
                        paths=[f"waves/{wave_name}/*", f"waves/{wave_name}/*/*"],
                    )
                },
            ),
        )
    )
    targets.sign(targets_k)

    uuids = sorted(
        str(uuid.UUID(bytes=hashlib.sha256(f"d{i}".encode()).digest()[:16])) for i in range(300)
    )
    ripple1 = build_ripple(wave_name, 1, ListMembership(tuple(uuids[:3])).to_dict(), EXPIRES)
    leaves = b"".join(bytes.fromhex(u.replace("-", "")) for u in uuids)
    ripple2 = build_ripple(
        wave_name, 2, MerkleMembership(len(uuids), merkle_root(leaves)).to_dict(), EXPIRES
    )
    ripple3 = build_ripple(
        wave_name, 3, {"encoding": "fraction", "parts_per_million": 50_000}, EXPIRES
    )
    rid = roll_k.public_key.keyid
    rollout = build_rollout(wave_name, "active", 3, [rid], {rid: roll_k.public_key}, 1, 4, EXPIRES)
    for md in (ripple1, ripple2, ripple3, rollout):
        md.sign(roll_k)

    files: dict[str, Metadata] = {  # type: ignore[type-arg]
        "1.root.json": root,
        "2.targets.json": targets,
        f"1.wave.{wave_name}.json": wave,
        f"4.rollout.{wave_name}.json": rollout,
        f"1.ripple.{wave_name}.1.json": ripple1,
        f"1.ripple.{wave_name}.2.json": ripple2,
        f"1.ripple.{wave_name}.3.json": ripple3,
    }
    meta = {
        "targets.json": MetaFile(2),
        f"wave.{wave_name}.json": MetaFile(1),
        f"rollout.{wave_name}.json": MetaFile(4),
        **{f"ripple.{wave_name}.{k}.json": MetaFile(1) for k in (1, 2, 3)},
    }
    snapshot = Metadata(Snapshot(version=5, expires=EXPIRES, meta=meta))
    snapshot.sign(snap_k)
    snap_bytes = snapshot.to_bytes(PRETTY)
    timestamp = Metadata(
        Timestamp(
            version=5,
            expires=EXPIRES,
            snapshot_meta=MetaFile(
                5, len(snap_bytes), {"sha256": hashlib.sha256(snap_bytes).hexdigest()}
            ),
        )
    )
    timestamp.sign(ts_k)
    out = {name: md.to_bytes(PRETTY) for name, md in files.items()}
    out["5.snapshot.json"] = snapshot.to_bytes(PRETTY)
    out["timestamp.json"] = timestamp.to_bytes(PRETTY)
    return out


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for name, data in build_examples().items():
        (OUT / name).write_bytes(data)
        print(OUT / name)
