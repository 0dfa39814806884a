"""An in-memory tufwaves repository that signs on demand, for verifier tests.

Builds root, timestamp, snapshot, targets, ``wave.W``, ``rollout.W`` and
``ripple.W.K`` per ``specs/metadata.md`` with deterministic Ed25519 keys (from
fixed seeds) and a fixed far-future expiry, and makes per-device bundles.
Tests change the repository (new waves, ripples, cancel, complete, root
rotation, thresholds, expiry) and call :meth:`Simulator.bundle`; every signed
version of every role is kept in :attr:`Simulator.signed` so tests can replay
old files.

The simulator is independent of the repository code on purpose: it is the
verifier's second opinion on the profile.
"""

from __future__ import annotations

import copy
import hashlib
import uuid as uuid_mod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from tufwaves.device.bundle import Bundle, BundleFile
from tufwaves.device.membership import MerkleEvidence, merkle_inclusion_proof, merkle_root

EXPIRY = datetime(2100, 1, 1, tzinfo=UTC)
NOW = datetime(2030, 1, 1, tzinfo=UTC)
PAST = datetime(2029, 6, 1, tzinfo=UTC)
SALT = "5a" * 32
TOP_ROLES = ("root", "timestamp", "snapshot", "targets")

_SERIALIZER = JSONSerializer(compact=True)


def signer(name: str) -> CryptoSigner:
    """A deterministic Ed25519 signer named ``name``."""
    seed = hashlib.sha256(b"tufwaves-test-key:" + name.encode()).digest()
    return CryptoSigner(Ed25519PrivateKey.from_private_bytes(seed))


def device(i: int) -> str:
    """The canonical UUID of test device ``i``."""
    return str(uuid_mod.UUID(int=0x1000_0000_0000_4000_8000_0000_0000_0000 + i))


@dataclass
class WaveSim:
    """One wave's roles and keys."""

    name: str
    tag: str
    version: int
    wave: Metadata[Targets]
    rollout: Metadata[Targets]
    rollout_signers: list[CryptoSigner]
    ripples: dict[int, Metadata[Targets]] = field(default_factory=dict)
    merkle_leaves: dict[int, list[bytes]] = field(default_factory=dict)


class Simulator:
    """A repository per ``specs/metadata.md``, signed with deterministic keys."""

    def __init__(self, *, root_keys: int = 1, root_threshold: int = 1) -> None:
        self.signers: dict[str, list[CryptoSigner]] = {}
        root = Root(version=1, expires=EXPIRY, consistent_snapshot=True)
        self.root = root
        for role in TOP_ROLES:
            count = root_keys if role == "root" else 1
            self.signers[role] = [signer(f"{role}-{i}") for i in range(count)]
            for s in self.signers[role]:
                root.add_key(s.public_key, role)
        root.roles["root"].threshold = root_threshold
        self.targets = Targets(version=1, expires=EXPIRY)
        self.snapshot = Snapshot(version=1, expires=EXPIRY)
        self.timestamp = Timestamp(version=1, expires=EXPIRY, snapshot_meta=MetaFile(version=1))
        self._published = False
        self.waves: dict[str, WaveSim] = {}
        self.artifacts: dict[str, bytes] = {}
        self.signed: dict[str, dict[int, bytes]] = {}
        self.current: dict[str, int] = {}
        self.roots: list[bytes] = []
        self._sign_root(self.signers["root"])
        self.publish()

    # -- signing ---------------------------------------------------------------

    def _serialise(self, signed: Any, signers: Iterable[CryptoSigner]) -> bytes:
        md = Metadata(copy.deepcopy(signed))
        for s in signers:
            md.sign(s, append=True)
        return md.to_bytes(_SERIALIZER)

    def _sign_root(self, signers: Iterable[CryptoSigner]) -> bytes:
        data = self._serialise(self.root, signers)
        self.roots.append(data)
        self._keep("root", self.root.version, data)
        return data

    def _keep(self, role: str, version: int, data: bytes) -> None:
        self.signed.setdefault(role, {})[version] = data
        self.current[role] = version

    def role_signers(self, role: str) -> list[CryptoSigner]:
        """The signers that sign ``role`` now."""
        if role in self.signers:
            return self.signers[role]
        kind, _, rest = role.partition(".")
        wave = rest.split(".")[0]
        if kind == "wave":
            return self.signers["targets"]
        return self.waves[wave].rollout_signers

    def delegated(self) -> dict[str, Targets]:
        """Every targets role: ``targets`` and each wave's roles."""
        out: dict[str, Targets] = {"targets": self.targets}
        for name, w in sorted(self.waves.items()):
            out[f"wave.{name}"] = w.wave.signed
            out[f"rollout.{name}"] = w.rollout.signed
            for k, r in sorted(w.ripples.items()):
                out[f"ripple.{name}.{k}"] = r.signed
        return out

    def publish(self) -> None:
        """Sign every targets role at its version, then new snapshot and timestamp."""
        roles = self.delegated()
        for role, signed in roles.items():
            data = self._serialise(signed, self.role_signers(role))
            self._keep(role, signed.version, data)
        if self._published:
            self.snapshot.version += 1
            self.timestamp.version += 1
        self._published = True
        self.snapshot.meta = {f"{r}.json": MetaFile(s.version) for r, s in roles.items()}
        snap = self._serialise(self.snapshot, self.signers["snapshot"])
        self._keep("snapshot", self.snapshot.version, snap)
        self.timestamp.snapshot_meta = MetaFile(
            self.snapshot.version,
            length=len(snap),
            hashes={"sha256": hashlib.sha256(snap).hexdigest()},
        )
        ts = self._serialise(self.timestamp, self.signers["timestamp"])
        self._keep("timestamp", self.timestamp.version, ts)

    def latest(self, role: str) -> bytes:
        """The last signed bytes of ``role``."""
        return self.signed[role][self.current[role]]

    # -- root --------------------------------------------------------------------

    def rotate_root(
        self,
        *,
        keys: Mapping[str, Sequence[str]] | None = None,
        thresholds: Mapping[str, int] | None = None,
        sign_with: Sequence[CryptoSigner] | None = None,
    ) -> bytes:
        """Publish root version N+1, optionally with new keys and thresholds.

        ``keys`` maps a top-level role to the names of its new signers.
        By default the new root is signed by every old and new root key.
        """
        old_signers = list(self.signers["root"])
        self.root.version += 1
        for role, names in (keys or {}).items():
            for keyid in list(self.root.roles[role].keyids):
                self.root.revoke_key(keyid, role)
            self.signers[role] = [signer(n) for n in names]
            for s in self.signers[role]:
                self.root.add_key(s.public_key, role)
        for role, threshold in (thresholds or {}).items():
            self.root.roles[role].threshold = threshold
        if sign_with is None:
            seen = {s.public_key.keyid: s for s in old_signers + self.signers["root"]}
            sign_with = list(seen.values())
        data = self._sign_root(sign_with)
        if keys and ("targets" in keys):
            self._retarget_wave_delegations()
        return data

    def _retarget_wave_delegations(self) -> None:
        d = self.targets.delegations
        if d is None or not d.roles:
            return
        d.keys = {s.public_key.keyid: s.public_key for s in self.signers["targets"]}
        for role in d.roles.values():
            role.keyids = sorted(d.keys)
            role.threshold = self.root.roles["targets"].threshold
        self.targets.version += 1

    # -- content -------------------------------------------------------------

    def artifact(
        self, path: str, version: int, hardware_ids: Sequence[str], tags: Sequence[str]
    ) -> TargetFile:
        """A target file whose bytes are derived from its path."""
        data = f"firmware {path} {version}".encode()
        self.artifacts[path] = data
        return TargetFile(
            length=len(data),
            hashes={
                "sha256": hashlib.sha256(data).hexdigest(),
                "sha512": hashlib.sha512(data).hexdigest(),
            },
            path=path,
            unrecognized_fields={
                "custom": {
                    "hardwareIds": list(hardware_ids),
                    "tags": list(tags),
                    "version": str(version),
                    "name": path.rsplit("/", 1)[-1],
                }
            },
        )

    def add_production(self, version: int, *, hardware_id: str = "hw-a", tag: str = "main") -> str:
        """List a production artifact directly in targets."""
        path = f"production/{hardware_id}/fw-{version}.bin"
        self.targets.targets[path] = self.artifact(path, version, [hardware_id], [tag])
        self.targets.version += 1
        return path

    def add_wave(
        self,
        name: str,
        version: int,
        *,
        tag: str = "main",
        hardware_ids: Sequence[str] = ("hw-a",),
        rollout_keys: int = 1,
        rollout_threshold: int = 1,
        policy: Mapping[str, Any] | None = None,
        rollout_key_name: str | None = None,
    ) -> WaveSim:
        """Create ``wave.W`` (with one artifact per hardware id) and ``rollout.W`` v1."""
        key_name = rollout_key_name or name
        rollout_signers = [signer(f"rollout-{key_name}-{i}") for i in range(rollout_keys)]
        rollout_keyids = sorted(s.public_key.keyid for s in rollout_signers)
        targets = {}
        for hw in hardware_ids:
            path = f"waves/{name}/{hw}/fw-{version}.bin"
            targets[path] = self.artifact(path, version, [hw], [tag])
        full_policy: dict[str, Any] = {
            "max_ripple_size": None,
            "online_complete": True,
            "fraction_salt": None,
            "max_fraction_ppm": 1_000_000,
        }
        full_policy.update(policy or {})
        wave = Targets(
            version=1,
            expires=EXPIRY,
            targets=targets,
            delegations=Delegations(
                keys={s.public_key.keyid: s.public_key for s in rollout_signers},
                roles={
                    f"rollout.{name}": DelegatedRole(
                        f"rollout.{name}",
                        rollout_keyids,
                        rollout_threshold,
                        True,
                        paths=[],
                    )
                },
            ),
            unrecognized_fields={
                "x-tufwaves-wave": {
                    "name": name,
                    "tag": tag,
                    "version": str(version),
                    "policy": full_policy,
                }
            },
        )
        rollout = Targets(
            version=1,
            expires=EXPIRY,
            unrecognized_fields={
                "x-tufwaves-rollout": {"wave": name, "state": "active", "ripples": 0}
            },
        )
        sim = WaveSim(name, tag, version, Metadata(wave), Metadata(rollout), rollout_signers)
        self.waves[name] = sim
        targets_keys = {s.public_key.keyid: s.public_key for s in self.signers["targets"]}
        if self.targets.delegations is None:
            self.targets.delegations = Delegations(keys={}, roles={})
        d = self.targets.delegations
        assert d.roles is not None
        d.keys.update(targets_keys)
        d.roles[f"wave.{name}"] = DelegatedRole(
            f"wave.{name}",
            sorted(targets_keys),
            self.root.roles["targets"].threshold,
            False,
            paths=[f"waves/{name}/*", f"waves/{name}/*/*"],
        )
        self.targets.version += 1
        return sim

    def _rollout_field(self, wave: str) -> dict[str, Any]:
        field_: dict[str, Any] = self.waves[wave].rollout.signed.unrecognized_fields[
            "x-tufwaves-rollout"
        ]
        return field_

    def add_ripple(self, wave: str, membership: Mapping[str, Any]) -> int:
        """Publish the next ripple of ``wave`` with ``membership`` (JSON form)."""
        w = self.waves[wave]
        info = self._rollout_field(wave)
        k = info["ripples"] + 1
        info["ripples"] = k
        role = f"ripple.{wave}.{k}"
        rollout = w.rollout.signed
        keyids = sorted(s.public_key.keyid for s in w.rollout_signers)
        if rollout.delegations is None:
            rollout.delegations = Delegations(
                keys={s.public_key.keyid: s.public_key for s in w.rollout_signers},
                roles={},
            )
        assert rollout.delegations.roles is not None
        wave_delegations = w.wave.signed.delegations
        assert wave_delegations is not None and wave_delegations.roles is not None
        threshold = wave_delegations.roles[f"rollout.{wave}"].threshold
        rollout.delegations.roles[role] = DelegatedRole(role, keyids, threshold, True, paths=[])
        rollout.version += 1
        w.ripples[k] = Metadata(
            Targets(
                version=1,
                expires=EXPIRY,
                unrecognized_fields={
                    "x-tufwaves-ripple": {
                        "wave": wave,
                        "index": k,
                        "membership": dict(membership),
                    }
                },
            )
        )
        return k

    def add_list_ripple(self, wave: str, uuids: Iterable[str]) -> int:
        """A ripple naming ``uuids`` explicitly."""
        return self.add_ripple(wave, {"encoding": "list", "uuids": sorted(set(uuids))})

    def add_merkle_ripple(self, wave: str, uuids: Iterable[str]) -> int:
        """A ripple committing to ``uuids`` with a Merkle root."""
        leaves = sorted({uuid_mod.UUID(u).bytes for u in uuids})
        k = self.add_ripple(
            wave,
            {
                "encoding": "merkle-sha256",
                "size": len(leaves),
                "root": merkle_root(leaves).hex(),
            },
        )
        self.waves[wave].merkle_leaves[k] = leaves
        return k

    def add_fraction_ripple(self, wave: str, parts_per_million: int) -> int:
        """A ripple of a deterministic fraction of the fleet."""
        return self.add_ripple(
            wave, {"encoding": "fraction", "parts_per_million": parts_per_million}
        )

    def set_state(self, wave: str, state: str) -> None:
        """Cancel or complete a wave (a new rollout version)."""
        self._rollout_field(wave)["state"] = state
        self.waves[wave].rollout.signed.version += 1

    def expire(self, role: str) -> None:
        """Make ``role`` expire before :data:`NOW` (a new version of it)."""
        signed = self.signed_of(role)
        signed.expires = PAST
        if role not in ("snapshot", "timestamp"):
            signed.version += 1

    def signed_of(self, role: str) -> Any:
        """The live ``Signed`` object of ``role``."""
        top = {
            "root": self.root,
            "timestamp": self.timestamp,
            "snapshot": self.snapshot,
            "targets": self.targets,
        }
        if role in top:
            return top[role]
        return self.delegated()[role]

    def evidence(self, wave: str, k: int, uuid: str) -> MerkleEvidence | None:
        """The Merkle proof of ``uuid`` in ripple ``k`` of ``wave``, or None."""
        leaves = self.waves[wave].merkle_leaves.get(k)
        leaf = uuid_mod.UUID(uuid).bytes
        if leaves is None or leaf not in leaves:
            return None
        i = leaves.index(leaf)
        return MerkleEvidence(f"ripple.{wave}.{k}", i, merkle_inclusion_proof(leaves, i))

    # -- bundles -----------------------------------------------------------------

    def bundle(
        self,
        uuid: str,
        *,
        trusted_root: int = 1,
        waves: Sequence[str] | None = None,
        publish: bool = True,
    ) -> Bundle:
        """The bundle for device ``uuid`` that trusts root ``trusted_root``.

        Includes the roots after ``trusted_root``, every wave (or ``waves``)
        with all its ripples, and the device's Merkle evidence.
        """
        if publish:
            self.publish()
        files = [
            BundleFile("root", v, self.signed["root"][v])
            for v in sorted(self.signed["root"])
            if v > trusted_root
        ]
        for role in ("timestamp", "snapshot", "targets"):
            files.append(BundleFile(role, self.current[role], self.latest(role)))
        evidence = []
        for name in sorted(self.waves if waves is None else waves):
            w = self.waves[name]
            for role, md in ((f"wave.{name}", w.wave), (f"rollout.{name}", w.rollout)):
                files.append(BundleFile(role, md.signed.version, self.latest(role)))
            for k in sorted(w.ripples):
                role = f"ripple.{name}.{k}"
                files.append(BundleFile(role, w.ripples[k].signed.version, self.latest(role)))
                ev = self.evidence(name, k, uuid)
                if ev is not None:
                    evidence.append(ev)
        return Bundle(uuid, tuple(files), tuple(evidence))

    def trusted_root(self, version: int = 1) -> bytes:
        """The signed bytes of root ``version``."""
        return self.signed["root"][version]

    def write_repository(self, directory: Path) -> None:
        """Write the published repository as static files, consistent snapshots.

        ``directory/metadata/N.ROLE.json`` (and ``timestamp.json``) and
        ``directory/targets/DIR/SHA256.BASENAME`` for every artifact.
        """
        metadata = directory / "metadata"
        metadata.mkdir(parents=True, exist_ok=True)
        for role, versions in self.signed.items():
            for version, data in versions.items():
                if role == "timestamp":
                    continue
                (metadata / f"{version}.{role}.json").write_bytes(data)
        (metadata / "timestamp.json").write_bytes(self.latest("timestamp"))
        for path, data in self.artifacts.items():
            folder, _, base = path.rpartition("/")
            out = directory / "targets" / folder
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{hashlib.sha256(data).hexdigest()}.{base}").write_bytes(data)
