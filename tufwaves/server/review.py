"""What an offline signer reviews before signing: computed from the signed bytes alone.

A ceremony file is prepared by whoever runs the repository, and the signer must
not trust anything in it but the metadata it asks them to sign. This module
turns that metadata into the summary ``ceremony sign`` prints:

* every key that every role being signed authorises (root keys, targets keys,
  a wave's keys and its rollout keys, online keys), by key id and by a short
  fingerprint computed from the key material itself, with thresholds;
* names for those keys only from the signer's own :class:`Keyring` (public
  key files and the signer's copy of the current root), never from the
  ceremony file; a key the keyring does not know is **UNKNOWN**;
* what changes against the currently published version of each role
  (verified with the keyring's root when it has one): keys added or removed,
  artifacts with lengths and hashes, versions, tags, hardware ids, policy,
  expiry; the fraction salt rule (derived from the offline signatures), or a
  carried salt checked against the published version.

``specs/ceremony.md`` ("What a signer sees") is the normative description.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from securesystemslib.formats import encode_canonical
from securesystemslib.signer import Key
from tuf.api.metadata import Metadata, Root, Targets

from tufwaves.device.plan import parse_plan
from tufwaves.device.profile import WAVE_FIELD
from tufwaves.device.salt import signature_salt
from tufwaves.errors import InputError
from tufwaves.server.ceremony import Ceremony, PendingRole
from tufwaves.server.keys import load_public_key

__all__ = ["KEYRING_ENV", "Keyring", "Review", "fingerprint", "load_keyring", "review", "ring_name"]

KEYRING_ENV = "TUFWAVES_KEYRING"
"""Default keyring: paths separated by ``os.pathsep`` (``.pub`` files, folders, root files)."""

_MAX_ROOT_FILE = 2_000_000


def fingerprint(key: Key) -> str:
    """The key id TUF computes from the key material (SHA-256 of its canonical JSON).

    Unlike ``key.keyid``, which is whatever the metadata claims, this cannot
    name other key material.

    Args:
        key: a public key.

    Returns:
        64 lowercase hex digits.
    """
    body = {"keytype": key.keytype, "scheme": key.scheme, "keyval": key.keyval}
    canonical = encode_canonical(body)
    assert isinstance(canonical, str)  # noqa: S101 - encode_canonical returns str without a sink
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class Keyring:
    """Public keys the signer has chosen to trust, by fingerprint, with names.

    Attributes:
        names: fingerprint -> the name the signer knows the key by.
        root: the signer's copy of the current root, if one was given; used to
            verify the published versions a ceremony is compared against.
    """

    names: dict[str, str] = field(default_factory=dict)
    root: Metadata[Root] | None = None

    @classmethod
    def load(cls, paths: Iterable[Path]) -> Keyring:
        """Read ``.pub`` files, folders of them, and root metadata files.

        A root file names each of its keys after the roles it holds (``root key
        of root v3``); a ``.pub`` file's own name wins over that.

        Args:
            paths: files or folders.

        Returns:
            The keyring.

        Raises:
            InputError: a path does not exist or is neither a key file nor root
                metadata.
        """
        ring = cls()
        pubs: list[Path] = []
        for path in paths:
            if path.is_dir():
                pubs.extend(sorted(path.glob("*.pub")))
            elif path.suffix == ".pub":
                pubs.append(path)
            elif path.is_file():
                ring._add_root(path)
            else:
                raise InputError(f"keyring entry {path} does not exist")
        for pub in pubs:
            name, key, _ = load_public_key(pub)
            ring.names[fingerprint(key)] = name
        return ring

    def _add_root(self, path: Path) -> None:
        try:
            if path.stat().st_size > _MAX_ROOT_FILE:
                raise ValueError("too large")
            md = Metadata[Root].from_bytes(path.read_bytes())
            if md.signed.type != "root":
                raise ValueError("not root metadata")
            md.signed.verify_delegate("root", md.signed_bytes, md.signatures)
        except Exception as e:
            raise InputError(
                f"keyring entry {path} is neither a .pub key file nor a self-signed root ({e})"
            ) from None
        if self.root is None or md.signed.version > self.root.signed.version:
            self.root = md
        for keyid, key in md.signed.keys.items():
            if keyid != fingerprint(key):
                continue
            roles = [r for r, role in md.signed.roles.items() if keyid in role.keyids]
            self.names.setdefault(keyid, f"{'/'.join(roles)} key of root v{md.signed.version}")

    def name(self, key: Key) -> str | None:
        """The signer's name for ``key``, matched by fingerprint.

        Args:
            key: a public key.

        Returns:
            Its name, or None if the keyring does not know the key material.
        """
        return self.names.get(fingerprint(key))


@dataclass
class Review:
    """The summary of a ceremony for a signer: lines to print and what needs attention.

    Attributes:
        lines: the summary, one line each.
        unknown: fingerprints of authorised keys the keyring does not know.
        mismatched: key ids whose claimed id is not the id of their key material.
    """

    lines: list[str]
    unknown: list[str]
    mismatched: list[str]

    def text(self) -> str:
        """The summary as printed.

        Returns:
            The lines joined by newlines.
        """
        return "\n".join(self.lines)


class _Namer:
    def __init__(self, ring: Keyring) -> None:
        self.ring = ring
        self.unknown: dict[str, None] = {}
        self.mismatched: dict[str, None] = {}

    def __call__(self, keyid: str, key: Key | None) -> str:
        if key is None:
            self.unknown[keyid] = None
            return f"{keyid[:16]} !! NO KEY in the metadata for this key id"
        fp = fingerprint(key)
        name = self.ring.name(key)
        label = f"{key.keytype} {keyid[:16]} fp {fp[:16]}"
        notes = []
        if keyid != fp:
            self.mismatched[keyid] = None
            notes.append("!! KEY ID DOES NOT MATCH THE KEY MATERIAL")
        if name is None:
            self.unknown[fp] = None
            notes.append("!! UNKNOWN to your keyring")
            return f"{label}  {'  '.join(notes)}"
        return f"{label}  {name}" + (f"  {'  '.join(notes)}" if notes else "")


def _expiry(signed: Any) -> str:
    return f"{signed.expires:%Y-%m-%dT%H:%M:%SZ}"


def _keys_lines(
    title: str, keyids: Sequence[str], threshold: int, keys: Mapping[str, Key], name: _Namer
) -> Iterator[str]:
    yield f"  {title}: {threshold} of {len(keyids)} keys"
    for keyid in sorted(keyids):
        yield f"    - {name(keyid, keys.get(keyid))}"


def _root_lines(md: Metadata[Root], name: _Namer) -> Iterator[str]:
    root = md.signed
    yield f"  consistent snapshots: {root.consistent_snapshot}"
    for rname in ("root", "targets", "snapshot", "timestamp"):
        role = root.roles[rname]
        yield from _keys_lines(f"{rname} keys", role.keyids, role.threshold, root.keys, name)


def _target_lines(md: Metadata[Targets], name: _Namer) -> Iterator[str]:
    signed = md.signed
    info = signed.unrecognized_fields.get(WAVE_FIELD)
    if isinstance(info, Mapping):
        policy = info.get("policy", {})
        yield f"  wave {info.get('name')}  tag {info.get('tag')}  version {info.get('version')}"
        yield (
            f"  policy: max ripple size {policy.get('max_ripple_size') or 'unlimited'}, "
            f"online complete {'allowed' if policy.get('online_complete') else 'refused'}, "
            f"fractions up to {policy.get('max_fraction_ppm', 0) / 10_000:g}%"
        )
        carried = policy.get("fraction_salt")
        if carried is None:
            yield (
                "  fraction salt: derived from the offline signatures on this role "
                "(specs/membership.md 6.1); no one can choose it"
            )
        else:
            yield f"  fraction salt {carried}: CARRIED from an earlier version (checked below)"
        if isinstance(policy, Mapping) and "plan" in policy:
            yield from _plan_lines(policy["plan"])
    for path, target in sorted(signed.targets.items()):
        custom = target.custom
        yield f"  artifact {path}  {target.length} bytes"
        for algo, digest in sorted(target.hashes.items()):
            yield f"    {algo} {digest}"
        yield (
            f"    hardware {','.join(custom.get('hardwareIds', []))}  "
            f"tags {','.join(custom.get('tags', []))}  version {custom.get('version')}"
        )
    delegations = signed.delegations
    if delegations is not None and delegations.roles:
        for dname, drole in delegations.roles.items():
            yield from _keys_lines(
                f"delegates {dname} (paths {', '.join(drole.paths or [])})",
                drole.keyids,
                drole.threshold,
                delegations.keys,
                name,
            )


def _pct(ppm: int) -> str:
    return f"{ppm / 10_000:g}%"


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return "none"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit} ({seconds} s)"
    return f"{seconds} s"


def _plan_lines(raw: object) -> Iterator[str]:
    """The signed plan, stage by stage, with each cap resolved in devices."""
    try:
        plan = parse_plan(raw)
    except InputError as e:
        yield f"  !! the plan does not parse: {e}. Do not sign."
        return
    yield (
        f"  plan: {len(plan.stages)} stage(s) over {plan.eligible} eligible devices "
        "(counted when the wave was prepared); sizes are cumulative"
    )
    for i, st in enumerate(plan.stages, 1):
        if st.kind == "devices":
            size = f"up to {st.amount} devices"
        elif st.kind == "percent_ppm":
            size = f"up to {_pct(st.amount)} = {st.cap(plan.eligible)} devices"
        else:
            size = f"fraction up to {_pct(st.amount)} of every device of the tag"
        when = f"{st.not_before:%Y-%m-%dT%H:%M:%SZ}" if st.not_before else "any time"
        yield (
            f"    stage {i} {st.name}: {size}, group {st.group or 'any'}, "
            f"not before {when}, soak {_duration(st.soak_seconds)}, "
            f"timeout {_duration(st.timeout_seconds)}"
        )
        if st.success is not None:
            yield (
                f"      to start: >= {_pct(st.success.min_installed_ppm)} of stage {i - 1}'s "
                f"devices installed, with >= {st.success.min_reports} reports"
            )
        if st.abort is not None:
            codes = ", ".join(st.abort.codes) or "none"
            yield (
                f"      abort ({st.abort.action}): failures > "
                f"{_pct(st.abort.max_failed_ppm)} with >= {st.abort.min_reports} reports, "
                f"or any failure code in: {codes}"
            )


def _authorised(md: Metadata[Any]) -> dict[str, tuple[frozenset[str], int, str]]:
    """Every (key ids, threshold, key material fingerprints) a role authorises, by label."""
    out: dict[str, tuple[frozenset[str], int, str]] = {}
    signed = md.signed
    if isinstance(signed, Root):
        for rname, role in signed.roles.items():
            fps = ",".join(sorted(fingerprint(signed.keys[k]) for k in role.keyids))
            out[f"{rname} keys"] = (frozenset(role.keyids), role.threshold, fps)
    elif isinstance(signed, Targets) and signed.delegations and signed.delegations.roles:
        keys = signed.delegations.keys
        for dname, drole in signed.delegations.roles.items():
            fps = ",".join(sorted(fingerprint(keys[k]) for k in drole.keyids if k in keys))
            out[f"{dname} keys"] = (frozenset(drole.keyids), drole.threshold, fps)
    return out


def _changes(pending: PendingRole, ring: Keyring) -> Iterator[str]:
    """What differs from the published version of the role, and whether it verified."""
    previous = pending.published
    new = pending.metadata
    if previous is None:
        yield "  changes: a new role (nothing published under this name)"
        return
    verified = "not verified: your keyring has no root"
    if ring.root is not None:
        try:
            if pending.name == "root":
                prev_root = previous.signed
                assert isinstance(prev_root, Root)  # noqa: S101 - parsed as root below
                prev_root.verify_delegate("root", previous.signed_bytes, previous.signatures)
                if prev_root.version != ring.root.signed.version or (
                    previous.signed_bytes != ring.root.signed_bytes
                ):
                    raise ValueError("it is not the root in your keyring")
            else:
                ring.root.signed.verify_delegate(
                    pending.name, previous.signed_bytes, previous.signatures
                )
            verified = "verified with your root"
        except Exception as e:
            verified = f"!! NOT VERIFIED with your root ({e})"
    yield f"  changes against published version {previous.signed.version} ({verified}):"
    old_s, new_s = previous.signed, new.signed
    if old_s.version != new_s.version:
        yield f"    version {old_s.version} -> {new_s.version}"
    if old_s.expires != new_s.expires:
        yield f"    expires {_expiry(old_s)} -> {_expiry(new_s)}"
    before, after = _authorised(previous), _authorised(new)
    for label in sorted(before.keys() | after.keys()):
        if label not in before:
            yield f"    + {label} added ({after[label][1]} of {len(after[label][0])})"
        elif label not in after:
            yield f"    - {label} removed (REVOKED: its keys no longer sign it)"
        elif before[label] != after[label]:
            (old_ids, old_t, _), (new_ids, new_t, _) = before[label], after[label]
            for k in sorted(new_ids - old_ids):
                yield f"    + {label}: key {k[:16]} added"
            for k in sorted(old_ids - new_ids):
                yield f"    - {label}: key {k[:16]} removed (REVOKED: it no longer signs this)"
            if old_t != new_t:
                yield f"    {label}: threshold {old_t} -> {new_t}"
            if old_ids == new_ids and old_t == new_t:
                yield f"    !! {label}: same key ids, different key material"
    if isinstance(old_s, Targets) and isinstance(new_s, Targets):
        for path in sorted(new_s.targets.keys() - old_s.targets.keys()):
            t = new_s.targets[path]
            yield f"    + artifact {path} ({t.length} bytes)"
        for path in sorted(old_s.targets.keys() - new_s.targets.keys()):
            yield f"    - artifact {path}"
        for path in sorted(old_s.targets.keys() & new_s.targets.keys()):
            if old_s.targets[path].to_dict() != new_s.targets[path].to_dict():
                yield f"    ~ artifact {path} changed (length, hashes or custom)"
    if (
        isinstance(old_s, Root)
        and isinstance(new_s, Root)
        and old_s.consistent_snapshot != new_s.consistent_snapshot
    ):
        yield f"    consistent snapshots -> {new_s.consistent_snapshot}"


def _policy_salt(md: Metadata[Any]) -> object:
    info = md.signed.unrecognized_fields.get(WAVE_FIELD)
    policy = info.get("policy") if isinstance(info, Mapping) else None
    return policy.get("fraction_salt") if isinstance(policy, Mapping) else None


def _carried_salt(pending: PendingRole, ceremony: Ceremony) -> Iterator[str]:
    """Check a carried fraction salt against the wave's published version.

    A carried salt is only legitimate on a re-signed wave: it must equal the
    salt of the published version (carried there too, or derived from that
    version's signatures as the published ``targets`` delegated it).
    """
    carried = _policy_salt(pending.metadata)
    if carried is None:
        return
    previous = pending.published
    if previous is None:
        yield (
            "  !! the fraction salt is carried but the wave has no published version: "
            "whoever prepared this ceremony chose it. Do not sign."
        )
        return
    before = _policy_salt(previous)
    if before is None:
        top = next((r.published for r in ceremony.roles if r.name == "targets"), None)
        try:
            if top is None or not isinstance(top.signed, Targets):
                raise InputError("the ceremony carries no published targets")
            before = signature_salt(top.signed, pending.name, previous).hex()
        except InputError as e:
            yield f"  !! cannot check the carried fraction salt: {e}"
            return
    if before == carried:
        yield f"  fraction salt: the same as published version {previous.signed.version}"
    else:
        yield (
            f"  !! the fraction salt differs from published version {previous.signed.version}'s "
            f"({before}): the fraction members would change. Do not sign."
        )


def review(ceremony: Ceremony, ring: Keyring) -> Review:
    """The summary a signer confirms, computed from the signed metadata alone.

    Args:
        ceremony: the ceremony file's content (untrusted except the metadata
            the signer is asked to sign).
        ring: the signer's keyring.

    Returns:
        The summary, with the unknown and mismatched keys it found.
    """
    name = _Namer(ring)
    lines = [f"Ceremony {ceremony.id}"]
    for pending in ceremony.roles:
        md = pending.metadata
        signed = md.signed
        lines.append("")
        lines.append(
            f"== {pending.name}: {signed.type} version {signed.version}, expires {_expiry(signed)}"
        )
        lines.extend(
            _keys_lines(
                "signed by (the ceremony asks these keys)",
                sorted(pending.requirements()[0][1]),
                pending.threshold,
                pending.keys,
                name,
            )
        )
        if pending.previous is not None:
            prev_ids, prev_threshold = pending.previous
            lines.extend(
                _keys_lines(
                    "and by the previous root keys",
                    sorted(prev_ids),
                    prev_threshold,
                    pending.keys,
                    name,
                )
            )
        if isinstance(signed, Root):
            lines.extend(_root_lines(md, name))
        elif isinstance(signed, Targets):
            lines.extend(_target_lines(md, name))
            lines.extend(_carried_salt(pending, ceremony))
        lines.extend(_changes(pending, ring))
    unknown = list(name.unknown)
    mismatched = list(name.mismatched)
    lines.append("")
    if unknown or mismatched:
        lines.append(
            f"!! WARNING: {len(unknown)} key(s) UNKNOWN to your keyring"
            + (
                f" and {len(mismatched)} key id(s) not matching their key material"
                if mismatched
                else ""
            )
            + " are named above. Sign only if you know whose keys they are."
        )
    else:
        lines.append("Every key named above is in your keyring.")
    lines.extend(ceremony.status_lines(lambda keyid: ring_name(keyid, ceremony, ring)))
    return Review(lines, unknown, mismatched)


def ring_name(keyid: str, ceremony: Ceremony, ring: Keyring) -> str:
    """The keyring's name for a key the ceremony lists, else ``UNKNOWN`` and its id.

    Args:
        keyid: a key id of the ceremony.
        ceremony: the ceremony whose keys are looked up.
        ring: the signer's keyring.
    """
    for role in ceremony.roles:
        key = role.keys.get(keyid)
        if key is not None:
            return ring.name(key) or f"UNKNOWN {keyid[:12]}"
    return f"UNKNOWN {keyid[:12]}"


def load_keyring(paths: Sequence[Path], env: Mapping[str, str]) -> Keyring:
    """The keyring from ``--keyring`` paths, else from ``TUFWAVES_KEYRING``.

    Args:
        paths: explicit keyring entries.
        env: the environment (for the default).

    Returns:
        The keyring (empty when neither names anything).

    Raises:
        InputError: an entry is missing or not a key file or root.
    """
    if not paths and env.get(KEYRING_ENV):
        paths = [Path(p) for p in env[KEYRING_ENV].split(os.pathsep) if p]
    return Keyring.load(paths)
