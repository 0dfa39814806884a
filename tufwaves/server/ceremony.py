"""Threshold ceremonies: pending metadata that collects offline signatures.

A ceremony holds one or more roles that must all reach their thresholds before
anything is published (a wave: the new ``targets`` and ``wave.W``; a new
repository: ``root`` and ``targets``). The ceremony file (``specs/ceremony.md``)
is what travels to air-gapped signers: it carries the exact metadata to sign,
the keys allowed to sign each role and the thresholds, and needs no repository.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from securesystemslib.signer import Key, Signature, Signer, SSlibKey
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata

from tufwaves.device.profile import RIPPLE_INDEX_PATTERN, WAVE_NAME_PATTERN
from tufwaves.errors import InputError, RefusedError
from tufwaves.server.signers import signing_failed

__all__ = ["Ceremony", "PendingRole", "RoleStatus", "check_ceremony_id"]

FORMAT = "tufwaves-ceremony"
MAX_CEREMONY_FILE = 20_000_000

_WAVE = WAVE_NAME_PATTERN
_ID_RE = re.compile(
    rf"repository|(?:root|rollout-keys)\.(?:{RIPPLE_INDEX_PATTERN})|wave\.{_WAVE}|production\.{_WAVE}"
)
_ROLE_RE = re.compile(rf"root|targets|wave\.{_WAVE}")


def check_ceremony_id(value: object) -> str:
    """A ceremony id (``repository``, ``root.N``, ``wave.W``, ``production.W``), or InputError.

    Ids and role names read from a ceremony file become file names in the
    repository's staging folder, so nothing else may pass.

    Args:
        value: the id as read.

    Raises:
        InputError: it is not a ceremony id.
    """
    if not isinstance(value, str) or _ID_RE.fullmatch(value) is None:
        raise InputError(
            f"{value!r} is not a ceremony id "
            "(repository, root.N, rollout-keys.N, wave.W or production.W)"
        )
    return value


@dataclass
class PendingRole:
    """One role waiting for signatures, with the keys allowed to sign it.

    Attributes:
        name: The role's name.
        metadata: The exact metadata to sign (signatures collected so far).
        keys: The keys allowed to sign it, by key id.
        threshold: How many of them must sign.
        previous: For a root rotation: the previous root's key ids and
            threshold, which must be met too.
    """

    name: str
    metadata: Metadata[Any]
    keys: dict[str, Key]
    threshold: int
    # A root rotation must also be signed by a threshold of the previous root's
    # keys: (their key ids, that threshold). ``keys`` then holds old and new keys,
    # and ``threshold`` counts only the new root's own keys.
    previous: tuple[frozenset[str], int] | None = None
    # The currently published version of this role, if any, so that a signer
    # sees what changes (untrusted: verified against the signer's own root).
    published: Metadata[Any] | None = None

    def requirements(self) -> list[tuple[str, frozenset[str], int]]:
        """Every (label, key ids, threshold) that must be met.

        Returns:
            One requirement, or two for a root rotation (new and previous root).
        """
        if self.previous is None:
            return [("", frozenset(self.keys), self.threshold)]
        new = frozenset(self.metadata.signed.roles["root"].keyids)
        return [("new root", new, self.threshold), ("previous root", *self.previous)]

    def valid_signers(self) -> list[str]:
        """The key ids whose signatures on the metadata verify.

        Returns:
            Key ids allowed to sign this role, with a valid signature.
        """
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
        """The role's entry in a ceremony file.

        Returns:
            A dict of JSON types.
        """
        out: dict[str, Any] = {
            "role": self.name,
            "metadata": self.metadata.to_dict(),
            "threshold": self.threshold,
            "keys": {kid: k.to_dict() for kid, k in sorted(self.keys.items())},
        }
        if self.previous is not None:
            out["previous"] = {"keyids": sorted(self.previous[0]), "threshold": self.previous[1]}
        if self.published is not None:
            out["published"] = self.published.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PendingRole:
        """A role's entry in a ceremony file.

        Args:
            data: The entry.

        Returns:
            The pending role.

        Raises:
            ValueError: the role name is not root, targets or wave.W (the
                caller, :meth:`Ceremony.from_bytes`, reports it as malformed).
        """
        name = data["role"]
        if not isinstance(name, str) or _ROLE_RE.fullmatch(name) is None:
            raise ValueError(f"role {name!r} is not root, targets or wave.W")
        return cls(
            name=name,
            metadata=Metadata.from_dict(json.loads(json.dumps(data["metadata"]))),
            keys={kid: SSlibKey.from_dict(kid, dict(k)) for kid, k in data["keys"].items()},
            threshold=int(data["threshold"]),
            previous=(
                (frozenset(data["previous"]["keyids"]), int(data["previous"]["threshold"]))
                if "previous" in data
                else None
            ),
            published=(
                Metadata.from_dict(json.loads(json.dumps(data["published"])))
                if "published" in data
                else None
            ),
        )


@dataclass(frozen=True)
class RoleStatus:
    """One requirement of a role: ``threshold`` signatures among its keys.

    Attributes:
        role: The role (and, for a root rotation, which keys).
        threshold: How many signatures are needed.
        signed: Key ids that signed.
        waiting: Key ids that have not.
    """

    role: str
    threshold: int
    signed: tuple[str, ...]
    waiting: tuple[str, ...]

    @property
    def complete(self) -> bool:
        """Whether the threshold is met."""
        return len(self.signed) >= self.threshold


@dataclass
class Ceremony:
    """A set of roles published together once every one meets its threshold.

    Its file (:meth:`to_bytes`, :meth:`read`) is what travels to air-gapped
    signers; it needs no repository to be signed.

    Attributes:
        id: The ceremony id (``repository``, ``root.N``, ``wave.W``, ``production.W``).
        roles: The roles to sign.
        key_names: Key id to name, for messages.
    """

    id: str
    roles: list[PendingRole]
    key_names: dict[str, str]

    # ------------------------------------------------------------ status
    def status(self) -> list[RoleStatus]:
        """Who signed and who is awaited.

        Returns:
            One entry per requirement of each role.
        """
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
        """Whether every role meets its thresholds (then it can be published)."""
        return all(s.complete for s in self.status())

    def name_of(self, keyid: str) -> str:
        """The name of a key, for messages.

        Args:
            keyid: The key id.

        Returns:
            Its name, or the first 12 digits of the key id.
        """
        return self.key_names.get(keyid, keyid[:12])

    def status_lines(self, name_of: Callable[[str], str] | None = None) -> list[str]:
        """:meth:`status` for people, e.g. ``targets: 1 of 2 signatures, waiting for: bob``.

        Args:
            name_of: how to name a key id; by default the repository's own names
                (``key_names``), which a signer must not trust.

        Returns:
            One line per requirement.
        """
        name_of = name_of or self.name_of
        lines = []
        for s in self.status():
            waiting = ", ".join(name_of(k) for k in s.waiting) or "nobody"
            lines.append(
                f"{s.role}: {len(s.signed)} of {s.threshold} signatures"
                + ("" if s.complete else f", waiting for: {waiting}")
            )
        return lines

    # ------------------------------------------------------------ signing
    def sign(self, keyid: str, signer: Signer) -> list[str]:
        """Sign every role this key may sign (the air-gapped step).

        Args:
            keyid: The signing key's id.
            signer: Its signer.

        Returns:
            The names of the roles signed.

        Raises:
            RefusedError: The key may sign no role, or already signed one.
        """
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

        Args:
            other: The same ceremony, signed elsewhere.

        Returns:
            The (role, key id) signatures added.

        Raises:
            RefusedError: Content that differs from ours, signatures by keys
                not in the role, signatures over other bytes, or a file that
                adds nothing.
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

    # ------------------------------------------------------------ files
    def to_bytes(self) -> bytes:
        """The ceremony file (``specs/ceremony.md``).

        Returns:
            Its bytes.
        """
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
        """Parse a ceremony file.

        Args:
            data: Its bytes.
            source: What to call it in messages.

        Returns:
            The ceremony.

        Raises:
            InputError: It is too large or malformed.
        """
        if len(data) > MAX_CEREMONY_FILE:
            raise InputError(f"{source} is larger than {MAX_CEREMONY_FILE} bytes")
        try:
            doc = json.loads(data)
            if doc.get("format") != FORMAT or doc.get("version") != 1:
                raise ValueError("not a tufwaves ceremony file (format/version)")
            roles = [PendingRole.from_dict(r) for r in doc["roles"]]
            names = {str(k): str(v) for k, v in doc.get("key_names", {}).items()}
            ceremony = cls(check_ceremony_id(doc["id"]), roles, names)
        except Exception as e:
            raise InputError(f"{source} is malformed: {e}") from None
        return ceremony

    @classmethod
    def read(cls, path: Path) -> Ceremony:
        """Read a ceremony file.

        Args:
            path: The file.

        Returns:
            The ceremony.

        Raises:
            InputError: It does not exist, is too large or is malformed.
        """
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise InputError(f"ceremony file {path} does not exist") from None
        return cls.from_bytes(data, source=str(path))
