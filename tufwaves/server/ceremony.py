"""Threshold ceremonies: pending metadata that collects offline signatures.

A ceremony holds one or more roles that must all reach their thresholds before
anything is published (a wave: the new ``targets`` and ``wave.W``; a new
repository: ``root`` and ``targets``). The ceremony file (``specs/ceremony.md``)
is what travels to air-gapped signers: it carries the exact metadata to sign,
the keys allowed to sign each role and the thresholds, and needs no repository.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from securesystemslib.signer import Key, Signature, Signer, SSlibKey
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata

from tufwaves.errors import InputError, RefusedError
from tufwaves.server.metadata import WAVE_FIELD
from tufwaves.server.signers import signing_failed

__all__ = ["Ceremony", "PendingRole", "RoleStatus"]

FORMAT = "tufwaves-ceremony"
MAX_CEREMONY_FILE = 20_000_000


@dataclass
class PendingRole:
    """One role waiting for signatures, with the keys allowed to sign it."""

    name: str
    metadata: Metadata[Any]
    keys: dict[str, Key]
    threshold: int
    # A root rotation must also be signed by a threshold of the previous root's
    # keys: (their key ids, that threshold). ``keys`` then holds old and new keys,
    # and ``threshold`` counts only the new root's own keys.
    previous: tuple[frozenset[str], int] | None = None

    def requirements(self) -> list[tuple[str, frozenset[str], int]]:
        """Every (label, key ids, threshold) that must be met."""
        if self.previous is None:
            return [("", frozenset(self.keys), self.threshold)]
        new = frozenset(self.metadata.signed.roles["root"].keyids)
        return [("new root", new, self.threshold), ("previous root", *self.previous)]

    def valid_signers(self) -> list[str]:
        data = self.metadata.signed_bytes
        good = []
        for keyid, sig in self.metadata.signatures.items():
            key = self.keys.get(keyid)
            if key is None:
                continue
            try:
                key.verify_signature(sig, data)
            except Exception:  # noqa: S112 - a bad signature is just not counted
                continue
            good.append(keyid)
        return good

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "role": self.name,
            "metadata": self.metadata.to_dict(),
            "threshold": self.threshold,
            "keys": {kid: k.to_dict() for kid, k in sorted(self.keys.items())},
        }
        if self.previous is not None:
            out["previous"] = {"keyids": sorted(self.previous[0]), "threshold": self.previous[1]}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PendingRole:
        return cls(
            name=data["role"],
            metadata=Metadata.from_dict(json.loads(json.dumps(data["metadata"]))),
            keys={kid: SSlibKey.from_dict(kid, dict(k)) for kid, k in data["keys"].items()},
            threshold=int(data["threshold"]),
            previous=(
                (frozenset(data["previous"]["keyids"]), int(data["previous"]["threshold"]))
                if "previous" in data
                else None
            ),
        )


@dataclass(frozen=True)
class RoleStatus:
    """One requirement of a role: ``threshold`` signatures among its keys."""

    role: str
    threshold: int
    signed: tuple[str, ...]
    waiting: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return len(self.signed) >= self.threshold


@dataclass
class Ceremony:
    """A set of roles published together once every one meets its threshold."""

    id: str
    roles: list[PendingRole]
    key_names: dict[str, str]

    # ------------------------------------------------------------ status
    def status(self) -> list[RoleStatus]:
        out = []
        for role in self.roles:
            valid = set(role.valid_signers())
            for label, keyids, threshold in role.requirements():
                name = f"{role.name} ({label} keys)" if label else role.name
                signed = tuple(sorted(valid & keyids))
                waiting = tuple(sorted(keyids - valid))
                out.append(RoleStatus(name, threshold, signed, waiting))
        return out

    @property
    def complete(self) -> bool:
        return all(s.complete for s in self.status())

    def name_of(self, keyid: str) -> str:
        return self.key_names.get(keyid, keyid[:12])

    def status_lines(self) -> list[str]:
        lines = []
        for s in self.status():
            waiting = ", ".join(self.name_of(k) for k in s.waiting) or "nobody"
            lines.append(
                f"{s.role}: {len(s.signed)} of {s.threshold} signatures"
                + ("" if s.complete else f", waiting for: {waiting}")
            )
        return lines

    # ------------------------------------------------------------ signing
    def sign(self, keyid: str, signer: Signer) -> list[str]:
        """Sign every role this key may sign; return their names."""
        signed = []
        for role in self.roles:
            if keyid not in role.keys:
                continue
            if keyid in role.valid_signers():
                raise RefusedError(
                    f"{self.name_of(keyid)} has already signed {role.name}; "
                    "a duplicate signature is not added"
                )
            try:
                role.metadata.sign(signer, append=True)
            except UnsignedMetadataError as e:
                cause = e.__cause__ or e
                raise signing_failed(self.name_of(keyid), role.name, cause) from None
            signed.append(role.name)
        if not signed:
            allowed = sorted({self.name_of(k) for r in self.roles for k in r.keys})
            raise RefusedError(
                f"key {self.name_of(keyid)} ({keyid[:12]}...) may not sign any role "
                f"of {self.id}; the keys that may are: {', '.join(allowed)}"
            )
        return signed

    def merge(self, other: Ceremony) -> list[tuple[str, str]]:
        """Add the valid new signatures of ``other`` (an imported file).

        Refuses content that differs from ours, signatures by keys not in the
        role, signatures over other bytes, and a file that adds nothing.
        """
        if other.id != self.id or [r.name for r in other.roles] != [r.name for r in self.roles]:
            raise RefusedError(
                f"the file is for ceremony {other.id!r}, not the pending {self.id!r}"
            )
        added: list[tuple[str, str]] = []
        duplicates: list[str] = []
        for mine, theirs in zip(self.roles, other.roles, strict=True):
            data = mine.metadata.signed_bytes
            if theirs.metadata.signed_bytes != data:
                raise RefusedError(
                    f"{mine.name} in the file differs from the pending {mine.name}: "
                    "it was signed over other bytes (was the wave initialised "
                    "again?); nothing was imported"
                )
            for keyid, sig in theirs.metadata.signatures.items():
                key = mine.keys.get(keyid)
                if key is None:
                    raise RefusedError(
                        f"signature by key {keyid[:12]}... is not from a key of "
                        f"{mine.name}; nothing was imported"
                    )
                try:
                    key.verify_signature(sig, data)
                except Exception:
                    raise RefusedError(
                        f"signature by {self.name_of(keyid)} on {mine.name} does not "
                        "verify (over other bytes or corrupted); nothing was imported"
                    ) from None
                if keyid in mine.metadata.signatures and keyid in mine.valid_signers():
                    duplicates.append(f"{self.name_of(keyid)} on {mine.name}")
                    continue
                added.append((mine.name, keyid))
        if not added:
            raise RefusedError(
                "the file adds no new signature (duplicates: "
                + (", ".join(duplicates) or "none")
                + ")"
            )
        for mine, theirs in zip(self.roles, other.roles, strict=True):
            for role_name, keyid in added:
                if role_name == mine.name:
                    mine.metadata.signatures[keyid] = Signature(
                        keyid, theirs.metadata.signatures[keyid].signature
                    )
        return added

    # ------------------------------------------------------------ summary
    def summary(self) -> str:
        """What exactly is being signed, for people at a signing ceremony."""
        lines = [f"Ceremony {self.id}"]
        for role in self.roles:
            signed = role.metadata.signed
            lines.append(
                f"\n== {role.name} (version {signed.version}, expires "
                f"{signed.expires:%Y-%m-%dT%H:%M:%SZ}), threshold {role.threshold} of "
                + ", ".join(self.name_of(k) for k in sorted(role.keys))
            )
            if role.name == "root":
                for rname, r in signed.roles.items():
                    names = ", ".join(self.name_of(k) for k in r.keyids)
                    lines.append(f"  role {rname}: {r.threshold} of [{names}]")
                continue
            info = signed.unrecognized_fields.get(WAVE_FIELD)
            if info:
                policy = info["policy"]
                lines.append(f"  wave {info['name']}  tag {info['tag']}  version {info['version']}")
                lines.append(
                    f"  policy: max ripple size {policy['max_ripple_size'] or 'unlimited'}, "
                    f"online complete {'allowed' if policy['online_complete'] else 'refused'}, "
                    f"fractions up to {policy.get('max_fraction_ppm', 0) / 10_000:g}%"
                )
            for path, target in sorted(signed.targets.items()):
                custom = target.custom
                lines.append(f"  artifact {path}  {target.length} bytes")
                for algo, digest in sorted(target.hashes.items()):
                    lines.append(f"    {algo} {digest}")
                lines.append(
                    f"    hardware {','.join(custom.get('hardwareIds', []))}  "
                    f"tags {','.join(custom.get('tags', []))}  version {custom.get('version')}"
                )
            if signed.delegations and signed.delegations.roles:
                for dname, d in signed.delegations.roles.items():
                    names = ", ".join(self.name_of(k) for k in d.keyids)
                    lines.append(f"  delegates {dname}: {d.threshold} of [{names}]")
        lines.append("")
        lines.extend(self.status_lines())
        return "\n".join(lines)

    # ------------------------------------------------------------ files
    def to_bytes(self) -> bytes:
        doc = {
            "format": FORMAT,
            "version": 1,
            "id": self.id,
            "roles": [r.to_dict() for r in self.roles],
            "key_names": dict(sorted(self.key_names.items())),
        }
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "ceremony file") -> Ceremony:
        if len(data) > MAX_CEREMONY_FILE:
            raise InputError(f"{source} is larger than {MAX_CEREMONY_FILE} bytes")
        try:
            doc = json.loads(data)
            if doc.get("format") != FORMAT or doc.get("version") != 1:
                raise ValueError("not a tufwaves ceremony file (format/version)")
            roles = [PendingRole.from_dict(r) for r in doc["roles"]]
            names = {str(k): str(v) for k, v in doc.get("key_names", {}).items()}
            ceremony = cls(str(doc["id"]), roles, names)
        except Exception as e:
            raise InputError(f"{source} is malformed: {e}") from None
        return ceremony

    @classmethod
    def read(cls, path: Path) -> Ceremony:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise InputError(f"ceremony file {path} does not exist") from None
        return cls.from_bytes(data, source=str(path))
