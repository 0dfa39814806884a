"""Waves: create a release in an offline threshold ceremony, sign, publish, list.

A wave is created as a ceremony (``tufwaves.server.ceremony``) holding the new
top-level ``targets`` and the wave role; it is published, together with the
first version of its rollout role, only when both reach their thresholds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from securesystemslib.signer import Key
from tuf.api.metadata import DelegatedRole, Delegations, Metadata, TargetFile, Targets

from tufwaves._files import PRIVATE_MODE, atomic_write
from tufwaves.device.plan import Plan
from tufwaves.device.profile import check_version
from tufwaves.device.salt import signature_salt
from tufwaves.errors import InputError, RefusedError, StorageError
from tufwaves.server import staging
from tufwaves.server.ceremony import Ceremony, PendingRole
from tufwaves.server.inventory import Eligibility
from tufwaves.server.inventory.backend import configured_dsn, open_configured
from tufwaves.server.keys import KeyRef
from tufwaves.server.metadata import (
    Policy,
    WaveInfo,
    artifact_target,
    build_rollout,
    build_wave,
    check_basename,
    check_hardware_id,
    check_tag,
    check_wave_name,
    expiry,
    rollout_delegation,
    rollout_info,
    rollout_role,
    wave_info,
    wave_role,
)
from tufwaves.server.plan import plan_from_input
from tufwaves.server.rekey import finish_rotation, read_plan, rotation_extras
from tufwaves.server.repository import PublishedState, Repository

__all__ = [
    "WaveSummary",
    "ceremony_for_wave",
    "discard_ceremony",
    "fold_into_production",
    "import_ceremony",
    "init_wave",
    "list_waves",
    "publish_if_complete",
    "rollout_state",
    "sign_ceremony",
    "wave_summary",
]

MAX_ARTIFACT = 4 * 1024**3


@dataclass(frozen=True)
class WaveSummary:
    """A wave as people and scripts see it (``waves show`` / ``waves list``).

    Attributes:
        name: The wave's name.
        tag: The device tag it is for.
        version: Its release version.
        status: ``pending`` (ceremony not complete), ``active``,
            ``cancelled`` or ``complete``.
        expires: When the wave role expires.
        artifacts: Its target files.
        ripples: How many ripples were signed.
        rollout_keyids: The keys that sign its rollout.
        rollout_threshold: How many of them must sign.
        policy: The signed rollout policy.
        signatures: While pending, one status line per role of the ceremony.
        fraction_salt: The salt of its fraction ripples (hex): carried in the
            policy, or derived from the wave role's offline signatures; None
            while they do not meet the threshold.
    """

    name: str
    tag: str
    version: int
    status: str  # pending | active | cancelled | complete
    expires: datetime
    artifacts: tuple[TargetFile, ...]
    ripples: int
    rollout_keyids: tuple[str, ...]
    rollout_threshold: int
    policy: Policy
    signatures: tuple[str, ...]  # status lines while pending
    fraction_salt: str | None = None  # hex; None until the signatures meet the threshold

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready data (what ``--json`` prints).

        Returns:
            A dict of JSON types.
        """
        return {
            "name": self.name,
            "tag": self.tag,
            "version": str(self.version),
            "status": self.status,
            "expires": f"{self.expires:%Y-%m-%dT%H:%M:%SZ}",
            "artifacts": [
                {
                    "path": t.path,
                    "length": t.length,
                    "hashes": t.hashes,
                    "custom": t.custom,
                }
                for t in self.artifacts
            ],
            "ripples": self.ripples,
            "rollout_keyids": list(self.rollout_keyids),
            "rollout_threshold": self.rollout_threshold,
            "policy": self.policy.to_dict(),
            "signatures": list(self.signatures),
            "fraction_salt": self.fraction_salt,
        }


def ceremony_for_wave(repo: Repository, wave: str) -> str:
    """The pending ceremony of ``wave``: its creation, else its production fold.

    Args:
        repo: The repository.
        wave: The wave's name.

    Returns:
        The ceremony id (``wave.W`` or ``production.W``), for
        :func:`sign_ceremony` or :func:`~tufwaves.server.staging.load_ceremony`.

    Raises:
        InputError: The wave has no pending ceremony.
    """
    pending = staging.pending_ids(repo)
    for cid in (wave_role(wave), f"production.{wave}"):
        if cid in pending:
            return cid
    raise InputError(
        f"wave {wave} has no pending ceremony ('tufwaves waves list --status pending')"
    )


def _published_waves(repo: Repository, state: PublishedState) -> list[str]:
    return sorted(r.removeprefix("wave.") for r in state.roles() if r.startswith("wave."))


def _tag_versions(
    repo: Repository, state: PublishedState | None, tag: str
) -> list[tuple[str, int]]:
    """Every version ever used for ``tag``: waves (any state) and production."""
    found: list[tuple[str, int]] = []
    if state is not None:
        targets = repo.load_targets("targets", state)
        for t in targets.signed.targets.values():
            if tag in t.custom.get("tags", []):
                found.append(("production", int(t.custom.get("version", "0"))))
        for name in _published_waves(repo, state):
            info = wave_info(repo.load_targets(wave_role(name), state))
            if info.tag == tag:
                found.append((f"wave {name}", info.version))
    for cid in staging.pending_ids(repo):
        if not cid.startswith("wave."):
            continue
        for role in staging.load_ceremony(repo, cid).roles:
            if role.name == cid:
                info = wave_info(role.metadata)
                if info.tag == tag:
                    found.append((f"pending wave {info.name}", info.version))
    return found


def _read_artifact(path: Path) -> bytes:
    try:
        if path.stat().st_size > MAX_ARTIFACT:
            raise InputError(f"artifact {path} is larger than {MAX_ARTIFACT} bytes")
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"artifact {path} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"artifact {path} is a directory, not a file") from None
    except OSError as e:
        raise StorageError(f"cannot read artifact {path}: {e.strerror}") from None


def _targets_file_entries(
    path: Path, wave: str, tag: str, version: int, hardware_ids: Sequence[str]
) -> list[TargetFile]:
    """Targets given as TUF JSON (``{"name": {"length":..,"hashes":..,"custom":..}}``)."""
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise InputError(f"targets file {path} does not exist") from None
    except ValueError as e:
        raise InputError(f"targets file {path} is not JSON: {e}") from None
    if isinstance(doc, dict) and isinstance(doc.get("targets"), dict):
        doc = doc["targets"]
    if not isinstance(doc, dict) or not doc:
        raise InputError(f"targets file {path}: expected a non-empty object of targets")
    out = []
    for name, entry in doc.items():
        check_basename(name)
        try:
            tf = TargetFile.from_dict(json.loads(json.dumps(entry)), f"waves/{wave}/{name}")
        except Exception as e:
            raise InputError(f"targets file {path}: entry {name!r} is malformed: {e}") from None
        sha256 = tf.hashes.get("sha256")
        if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise InputError(
                f"targets file {path}: entry {name!r} needs a sha256 hash (64 lowercase hex)"
            )
        sha512 = tf.hashes.get("sha512")
        if sha512 is not None and not re.fullmatch(r"[0-9a-f]{128}", str(sha512)):
            raise InputError(f"targets file {path}: entry {name!r} has a malformed sha512 hash")
        custom = dict(tf.custom)
        hw = custom.get("hardwareIds") or list(hardware_ids)
        if not isinstance(hw, list) or not hw:
            raise InputError(
                f"targets file {path}: entry {name!r} names no hardware ids; "
                "add custom.hardwareIds or pass --hardware-id"
            )
        for h in hw:
            check_hardware_id(h)
        custom.update({"hardwareIds": hw, "tags": [tag], "version": str(version)})
        custom.setdefault("name", name)
        tf.unrecognized_fields["custom"] = custom
        out.append(tf)
    return out


def init_wave(
    repo: Repository,
    name: str,
    version: int,
    tag: str,
    *,
    artifacts: Sequence[Path] = (),
    hardware_ids: Sequence[str] = (),
    targets_file: Path | None = None,
    rollout_keys: Sequence[Key] = (),
    rollout_threshold: int = 1,
    policy: Policy | None = None,
    expires: datetime | None = None,
    keys: Sequence[KeyRef] = (),
    dry_run: bool = False,
    plan: Mapping[str, Any] | Plan | None = None,
) -> Ceremony:
    """Create wave ``name`` in a ceremony: build, sign with ``keys``; publish if complete.

    The ceremony holds the wave role and the next ``targets`` (delegating to
    it), both signed by the offline targets keys. Until a threshold of them has
    signed, the wave is pending: collect signatures with :func:`sign_ceremony`,
    or export the ceremony file (:meth:`Ceremony.to_bytes` of
    :func:`~tufwaves.server.staging.load_ceremony`), sign it elsewhere
    (:meth:`Ceremony.sign`) and :func:`import_ceremony` it.

    Args:
        repo: The repository.
        name: The wave's name (1-64 of letters, digits, ``_-``); never reused.
        version: The release version, an ``int`` from 0 to 2**63-1 above every
            version used for ``tag`` so far.
        tag: The device tag it is for.
        artifacts: Files to release; one target per file and hardware id.
        hardware_ids: The hardware ids the artifacts are for.
        targets_file: Targets given as TUF JSON instead of (or besides) files.
        rollout_keys: The keys that sign its ripples (default: the
            repository's online rollout key, threshold 1).
        rollout_threshold: How many rollout keys must sign a ripple.
        policy: The rollout policy signed into the wave (default: ``Policy()``);
            its ``fraction_salt`` must be None (the salt is derived from the
            signatures).
        expires: The wave's expiry (default: 365 days after ``repo.now()``,
            as on the command line).
        keys: Offline targets keys that sign now.
        dry_run: Build and sign in memory only; write nothing.
        plan: A rollout plan signed into the policy: a :class:`Plan`, or
            PLAN.json data (:func:`~tufwaves.server.plan.plan_from_input`)
            whose ``eligible``, when left out, is counted from the inventory
            (devices of the tag and the artifacts' hardware ids below
            ``version``).

    Returns:
        The ceremony; ``complete`` when the wave was published.

    Raises:
        InputError: A bad name, tag, hardware id, version or artifact, a
            policy with a fraction salt (see
            :func:`~tufwaves.server.metadata.build_wave`), a bad plan (the
            message names the stage and field), or a ``keys`` entry that
            cannot sign.
        RefusedError: The name is taken, the version does not increase,
            another targets ceremony is pending, or a key may not sign.
    """
    if expires is None:
        expires = expiry(start=repo.now())
    check_wave_name(name)
    check_tag(tag)
    number = check_version(version, "wave version")
    for hw in hardware_ids:
        check_hardware_id(hw)
    if artifacts and not hardware_ids:
        raise InputError("--artifact needs at least one --hardware-id")
    if not artifacts and targets_file is None:
        raise InputError("a wave needs --artifact FILE or --targets-file JSON")
    blobs: dict[str, bytes] = {}
    entries: list[TargetFile] = []
    for art in artifacts:
        data = _read_artifact(art)
        base = check_basename(art.name)
        for hw in hardware_ids:
            path = f"waves/{name}/{hw}/{base}"
            entries.append(
                artifact_target(path, data, hardware_ids=[hw], tag=tag, version=number, name=base)
            )
            blobs[path] = data
    if targets_file is not None:
        entries.extend(_targets_file_entries(targets_file, name, tag, number, hardware_ids))
    if len({t.path for t in entries}) != len(entries):
        raise InputError("two artifacts have the same name for the same hardware id")
    if plan is not None:
        policy = _planned_policy(repo, policy or Policy(), plan, name, tag, number, entries)
    if not rollout_keys:
        rollout_keys = [repo.online_key("rollout")]
        rollout_threshold = 1
    with repo.locked():
        state = repo.state()
        cid = wave_role(name)
        if name in _published_waves(repo, state) or cid in staging.pending_ids(repo):
            raise RefusedError(
                f"wave {name} already exists; wave names are never reused, choose another"
            )
        _refuse_if_targets_pending(repo)
        for what, used in _tag_versions(repo, state, tag):
            if number <= used:
                raise RefusedError(
                    f"version {number} is not greater than {what}'s version {used} "
                    f"for tag {tag}; choose a version above {used}"
                )
        wave_md = build_wave(
            WaveInfo(name, tag, number, policy or Policy()),
            entries,
            rollout_keys,
            rollout_threshold,
            expires,
        )
        new_targets, offline_keys, threshold = _next_targets(repo, state, expires)
        if new_targets.signed.delegations is None:
            new_targets.signed.delegations = Delegations(keys={}, roles={})
        delegations = new_targets.signed.delegations
        assert delegations.roles is not None  # noqa: S101 - built with roles above
        delegations.keys.update(offline_keys)
        delegations.roles[cid] = DelegatedRole(
            cid,
            sorted(offline_keys),
            threshold,
            True,
            paths=[f"waves/{name}/*", f"waves/{name}/*/*"],
        )
        names = dict(repo.config.get("key_names", {}))
        ceremony = Ceremony(
            cid,
            [
                PendingRole(
                    "targets",
                    new_targets,
                    offline_keys,
                    threshold,
                    published=repo.published("targets"),
                ),
                PendingRole(cid, wave_md, offline_keys, threshold),
            ],
            {
                k: v
                for k, v in names.items()
                if k in offline_keys or k in {r.keyid for r in rollout_keys}
            },
        )
        for ref in keys:
            if ref.signer is None:
                raise InputError(f"--key {ref.name} is a public key; it cannot sign")
            ceremony.sign(ref.key.keyid, ref.signer)
        if dry_run:
            return ceremony
        local = {"artifacts": {p: hashlib.sha256(d).hexdigest() for p, d in blobs.items()}}
        (repo.staging_dir / f"{cid}.artifacts").mkdir(exist_ok=True)
        for data in blobs.values():
            atomic_write(
                repo.staging_dir / f"{cid}.artifacts" / hashlib.sha256(data).hexdigest(),
                data,
                mode=PRIVATE_MODE,  # not released yet: published only with the wave
            )
        atomic_write(
            staging.local_path(repo, cid),
            json.dumps(local, indent=2).encode(),
            mode=PRIVATE_MODE,
        )
        atomic_write(staging.ceremony_path(repo, cid), ceremony.to_bytes())
        publish_if_complete(repo, ceremony)
    return ceremony


def _planned_policy(
    repo: Repository,
    policy: Policy,
    plan: Mapping[str, Any] | Plan,
    name: str,
    tag: str,
    version: int,
    entries: Sequence[TargetFile],
) -> Policy:
    """``policy`` with ``plan`` (checked against it) signed in."""
    if not isinstance(plan, Plan):
        eligible = None
        if "eligible" not in plan:
            eligible = _count_eligible(repo, name, tag, version, entries)
        plan = plan_from_input(plan, eligible)
    for number, stage in enumerate(plan.stages, 1):
        if stage.is_fraction and stage.amount > policy.fraction_cap:
            raise InputError(
                f"plan stage {number} ({stage.name}).size: a fraction of {stage.amount} ppm "
                f"is above the policy's max_fraction_ppm {policy.fraction_cap}"
            )
        if stage.is_fraction and stage.group is not None:
            raise InputError(
                f"plan stage {number} ({stage.name}).group: a fraction stage applies to "
                "every device of the wave's tag; it cannot have a group"
            )
    return dataclasses.replace(policy, plan=plan)


def _count_eligible(
    repo: Repository, name: str, tag: str, version: int, entries: Sequence[TargetFile]
) -> int | None:
    """Devices of ``tag`` and the artifacts' hardware ids below ``version``, or None."""
    if not repo.inventory_path.exists() and configured_dsn(repo.config) is None:
        return None
    hardware: set[str] = set()
    for t in entries:
        hardware.update(t.custom.get("hardwareIds", []))
    with open_configured(repo.inventory_path, repo.config, read_only=True) as inv:
        return inv.count_eligible(Eligibility(name, tag, frozenset(hardware), version, None))


def _next_targets(
    repo: Repository, state: PublishedState, expires: datetime
) -> tuple[Metadata[Targets], dict[str, Key], int]:
    """The published targets as the next version to sign: no signatures yet,
    expiring no earlier than ``expires``; with the offline keys and threshold
    that must sign it (the root's targets role)."""
    root = repo.root().signed
    role = root.roles["targets"]
    md = repo.load_targets("targets", state)
    md.signatures.clear()
    md.signed.version += 1
    md.signed.expires = max(md.signed.expires, expires)
    return md, {kid: root.keys[kid] for kid in role.keyids}, role.threshold


def _signed_by_repository(
    repo: Repository,
    wave_md: Metadata[Targets],
    status: str,
    ripples: int,
    version: int,
    accounting: Sequence[tuple[int, int]] | None = None,
) -> Metadata[Targets] | None:
    """A rollout role signed by the repository's online rollout key, or None
    when that key alone cannot sign for the wave (other keys, threshold > 1)."""
    drole, keys = rollout_delegation(wave_md)
    if drole.threshold != 1 or repo.online_key("rollout").keyid not in drole.keyids:
        return None
    md = build_rollout(
        wave_info(wave_md).name,
        status,
        ripples,
        drole.keyids,
        keys,
        1,
        version,
        wave_md.signed.expires,
        () if accounting is None and wave_info(wave_md).policy.plan is not None else accounting,
    )
    md.sign(repo.online_signer("rollout"))
    return md


def publish_if_complete(repo: Repository, ceremony: Ceremony) -> bool:
    """Publish a ceremony whose roles all meet their thresholds.

    Args:
        repo: The repository.
        ceremony: A ceremony of this repository.

    Returns:
        True if it was complete and is now published, False if not complete.

    Raises:
        RefusedError: A production ceremony of a wave that is no longer active.
    """
    if not ceremony.complete:
        return False
    with repo.locked():
        roles: dict[str, Metadata[Any]] = {}
        root = None
        artifacts: dict[str, bytes] = {}
        for pending in ceremony.roles:
            if pending.name == "root":
                root = pending.metadata
            else:
                roles[pending.name] = pending.metadata
        if ceremony.id.startswith("wave."):
            local = json.loads(staging.local_path(repo, ceremony.id).read_bytes())
            for path, digest in local["artifacts"].items():
                data = (repo.staging_dir / f"{ceremony.id}.artifacts" / digest).read_bytes()
                directory, _, base = path.rpartition("/")
                artifacts[f"{directory}/{hashlib.sha256(data).hexdigest()}.{base}"] = data
                artifacts[f"{directory}/{hashlib.sha512(data).hexdigest()}.{base}"] = data
            rollout = _signed_by_repository(repo, roles[ceremony.id], "active", 0, 1)
            if rollout is not None:
                roles[rollout_role(ceremony.id.removeprefix("wave."))] = rollout
        if ceremony.id.startswith("production."):
            name = ceremony.id.removeprefix("production.")
            status = rollout_state(repo, repo.state(), name)
            if status != "active":
                raise RefusedError(
                    f"wave {name} is {status}: its production ceremony cannot be published; "
                    f"discard it ('tufwaves waves ceremony discard {name}')"
                )
            rollout = _rollout_complete(repo, name)
            if rollout is not None:
                roles[rollout_role(name)] = rollout
        rotation = rotation_extras(repo, ceremony, roles)
        if rotation is None:
            repo.publish(roles, root=root, artifacts=artifacts)
        else:  # a key rotation: new online keys sign (rekey.py)
            repo.publish(
                {**roles, **rotation.roles},
                root=root,
                snapshot_signer=rotation.snapshot_signer,
                timestamp_signer=rotation.timestamp_signer,
            )
            finish_rotation(repo, rotation)
        staging.remove(repo, ceremony.id)
    return True


def _rollout_complete(repo: Repository, name: str) -> Metadata[Targets] | None:
    """The wave's rollout role marked complete, if the repository's key may sign it."""
    state = repo.state()
    current = state.version_of(rollout_role(name))
    info = rollout_info(repo.load_targets(rollout_role(name), state)) if current else None
    wave_md = repo.load_targets(wave_role(name), state)
    return _signed_by_repository(
        repo,
        wave_md,
        "complete",
        info.ripples if info else 0,
        (current or 0) + 1,
        info.accounting if info else None,
    )


def fold_into_production(repo: Repository, name: str, *, keys: Sequence[KeyRef] = ()) -> Ceremony:
    """Complete a wave offline: a ceremony adding its artifacts to production targets.

    When the new targets reaches its threshold it is published together with
    the wave's rollout role marked ``complete`` (signed by the repository's
    rollout key when it is the wave's rollout key).

    Args:
        repo: The repository.
        name: The wave's name.
        keys: Offline targets keys that sign now.

    Returns:
        The ceremony (id ``production.NAME``); ``complete`` when published.

    Raises:
        InputError: No such published wave, or a key that cannot sign.
        RefusedError: The wave is not active, or another targets ceremony is pending.
    """
    check_wave_name(name)
    cid = f"production.{name}"
    with repo.locked():
        state = repo.state()
        if state.version_of(wave_role(name)) is None:
            raise InputError(f"no published wave {name} in {repo.path}")
        _refuse_if_targets_pending(repo)
        status = rollout_state(repo, state, name)
        if status != "active":
            raise RefusedError(f"wave {name} is {status}; only an active wave can complete")
        wave_md = repo.load_targets(wave_role(name), state)
        new_targets, offline_keys, threshold = _next_targets(repo, state, wave_md.signed.expires)
        for path, target in wave_md.signed.targets.items():
            new_targets.signed.targets[path] = TargetFile.from_dict(
                json.loads(json.dumps(target.to_dict())), path
            )
        names = dict(repo.config.get("key_names", {}))
        ceremony = Ceremony(
            cid,
            [
                PendingRole(
                    "targets",
                    new_targets,
                    offline_keys,
                    threshold,
                    published=repo.published("targets"),
                )
            ],
            {k: v for k, v in names.items() if k in offline_keys},
        )
        for ref in keys:
            if ref.signer is None:
                raise InputError(f"--key {ref.name} is a public key; it cannot sign")
            ceremony.sign(ref.key.keyid, ref.signer)
        atomic_write(staging.ceremony_path(repo, cid), ceremony.to_bytes())
        publish_if_complete(repo, ceremony)
    return ceremony


def discard_ceremony(repo: Repository, cid: str) -> None:
    """Drop a pending ceremony and its staged files; nothing was published.

    Args:
        repo: The repository.
        cid: The ceremony id, e.g. ``wave.W`` (:func:`ceremony_for_wave`).

    Raises:
        InputError: No such ceremony is pending.
    """
    with repo.locked():
        if cid not in staging.pending_ids(repo):
            raise InputError(f"no pending ceremony {cid!r} in {repo.path}")
        staging.remove(repo, cid)


def _refuse_if_targets_pending(repo: Repository) -> None:
    """Only one ceremony may change ``targets`` at a time: the second would sign
    a targets version the first one publishes first, and could never publish."""
    for cid in staging.pending_ids(repo):
        if read_plan(repo, cid) is not None:  # a key rotation re-signs targets or waves
            raise RefusedError(
                f"key rotation {cid} is pending; finish it ('tufwaves repo sign') or "
                f"discard it ('tufwaves repo ceremony discard --repo {repo.path}') first"
            )
        if cid.startswith(("wave.", "production.")):
            wave = cid.split(".", 1)[1]
            raise RefusedError(
                f"ceremony {cid} is pending and also changes targets; finish it "
                f"('tufwaves waves sign {wave}') or discard it "
                f"('tufwaves waves ceremony discard {wave} --repo {repo.path}') first"
            )


def rollout_state(repo: Repository, state: PublishedState, name: str) -> str:
    """The rollout state of a published wave.

    Args:
        repo: The repository.
        state: The published state to read.
        name: The wave's name.

    Returns:
        ``active``, ``cancelled`` or ``complete`` (``active`` before the first
        rollout role).
    """
    if state.version_of(rollout_role(name)) is None:
        return "active"
    return rollout_info(repo.load_targets(rollout_role(name), state)).state


def sign_ceremony(repo: Repository, ceremony_id: str, ref: KeyRef) -> Ceremony:
    """Add one signature to a pending ceremony; publish it if now complete.

    Args:
        repo: The repository.
        ceremony_id: The ceremony (:func:`ceremony_for_wave`,
            :func:`~tufwaves.server.roots.repository_ceremony`).
        ref: A key that may sign it, with a signer.

    Returns:
        The ceremony; ``complete`` when it was published.

    Raises:
        InputError: ``ref`` cannot sign, or no such ceremony is pending.
        RefusedError: The key may not sign it or already did.
    """
    if ref.signer is None:
        raise InputError(f"--key {ref.name} is a public key; pass the .key file or a URI")
    with repo.locked():
        ceremony = staging.load_ceremony(repo, ceremony_id)
        ceremony.sign(ref.key.keyid, ref.signer)
        if not publish_if_complete(repo, ceremony):
            atomic_write(staging.ceremony_path(repo, ceremony_id), ceremony.to_bytes())
    return ceremony


def import_ceremony(repo: Repository, path: Path) -> tuple[Ceremony, list[tuple[str, str]]]:
    """Merge the signatures of a ceremony file signed elsewhere; publish if complete.

    Args:
        repo: The repository.
        path: The ceremony file (exported, then signed with :meth:`Ceremony.sign`).

    Returns:
        The ceremony (``complete`` when published) and the (role, key id)
        signatures the file added.

    Raises:
        InputError: The file is malformed or its ceremony is not pending.
        RefusedError: The file differs from the pending ceremony, carries a
            bad or foreign signature, or adds nothing.
    """
    incoming = Ceremony.read(path)
    with repo.locked():
        ceremony = staging.load_ceremony(repo, incoming.id)
        added = ceremony.merge(incoming)
        if not publish_if_complete(repo, ceremony):
            atomic_write(staging.ceremony_path(repo, ceremony.id), ceremony.to_bytes())
    return ceremony, added


def wave_salt(wave_md: Metadata[Targets], targets: Targets) -> bytes:
    """The salt of a wave's fraction ripples, as devices compute it.

    The salt carried in ``policy.fraction_salt`` when there is one, else the
    one derived from the wave role's signatures by the keys ``targets``
    delegates it to (``specs/membership.md`` section 6.1).

    Args:
        wave_md: The wave role, signatures included.
        targets: The targets role that delegates it.

    Returns:
        32 bytes.

    Raises:
        InputError: The wave role does not meet its threshold.
    """
    info = wave_info(wave_md)
    carried = info.policy.fraction_salt
    if carried is not None:
        return bytes.fromhex(carried)
    return signature_salt(targets, wave_role(info.name), wave_md)


def _summary_from(
    wave_md: Metadata[Targets],
    targets: Targets,
    status: str,
    ripples: int,
    signatures: Sequence[str],
) -> WaveSummary:
    info = wave_info(wave_md)
    drole, _ = rollout_delegation(wave_md)
    try:
        salt: str | None = wave_salt(wave_md, targets).hex()
    except InputError:  # pending below its threshold: not derived yet
        salt = None
    return WaveSummary(
        info.name,
        info.tag,
        info.version,
        status,
        wave_md.signed.expires,
        tuple(wave_md.signed.targets.values()),
        ripples,
        tuple(drole.keyids),
        drole.threshold,
        info.policy,
        tuple(signatures),
        salt,
    )


def wave_summary(repo: Repository, name: str, state: PublishedState | None = None) -> WaveSummary:
    """One wave, pending or published.

    Args:
        repo: The repository.
        name: The wave's name.
        state: The published state to read (default: the current one).

    Returns:
        Its summary.

    Raises:
        InputError: No such wave.
    """
    check_wave_name(name)
    cid = wave_role(name)
    if cid in staging.pending_ids(repo):
        ceremony = staging.load_ceremony(repo, cid)
        wave_md = next(r.metadata for r in ceremony.roles if r.name == cid)
        pending = next(r.metadata for r in ceremony.roles if r.name == "targets")
        return _summary_from(wave_md, pending.signed, "pending", 0, ceremony.status_lines())
    state = state or repo.state()
    if state.version_of(cid) is None:
        raise InputError(f"no wave {name} in {repo.path} ('tufwaves waves list' shows them)")
    wave_md = repo.load_targets(cid, state)
    top = repo.load_targets("targets", state).signed
    if state.version_of(rollout_role(name)) is None:
        return _summary_from(wave_md, top, "active", 0, [])
    info = rollout_info(repo.load_targets(rollout_role(name), state))
    return _summary_from(wave_md, top, info.state, info.ripples, [])


def list_waves(
    repo: Repository, *, tag: str | None = None, status: str | None = None
) -> list[WaveSummary]:
    """Every wave, pending or published, by name.

    Args:
        repo: The repository.
        tag: Only waves of this tag.
        status: Only waves in this status (``pending``, ``active``,
            ``cancelled``, ``complete``).

    Returns:
        Their summaries.
    """
    state = repo.state() if repo.is_published() else None
    names = set(_published_waves(repo, state)) if state else set()
    names |= {c.removeprefix("wave.") for c in staging.pending_ids(repo) if c.startswith("wave.")}
    out = []
    for name in sorted(names):
        summary = wave_summary(repo, name, state)
        if tag is not None and summary.tag != tag:
            continue
        if status is not None and summary.status != status:
            continue
        out.append(summary)
    return out
