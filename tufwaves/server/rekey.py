"""Publishing a key rotation: staged online keys, re-signed rollout and ripple roles.

A rotation ceremony (``tufwaves.server.rotation``) keeps what only this
repository needs to publish it in ``staging/ID.local.json``::

    {"rotation": {"online_keys": {"snapshot": "keys/snapshot-r3.pub", ...},
                  "rollout_waves": ["w1", ...]}}

When the ceremony is complete, :func:`rotation_extras` gives the online roles
to publish with it: for every wave in ``rollout_waves`` its rollout role and
every ripple role, re-signed with the new online rollout key (one version
more, same content), and the new snapshot and timestamp signers. After the
publish, :func:`finish_rotation` makes the new keys the repository's online
keys. This module imports nothing that publishes, so ``waves`` can use it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from securesystemslib.signer import Signer
from tuf.api.metadata import Metadata, Targets

from tufwaves._files import PRIVATE_MODE, atomic_write
from tufwaves.errors import StorageError
from tufwaves.server import staging
from tufwaves.server.ceremony import Ceremony
from tufwaves.server.keys import load_key_ref, load_public_key
from tufwaves.server.metadata import (
    build_rollout,
    ripple_role,
    rollout_delegation,
    rollout_info,
    rollout_role,
    wave_info,
    wave_role,
)
from tufwaves.server.repository import Repository

__all__ = ["RotationExtras", "finish_rotation", "read_plan", "rotation_extras", "write_plan"]


@dataclass
class RotationExtras:
    """What a complete rotation ceremony publishes besides its own roles.

    Attributes:
        roles: Rollout and ripple roles re-signed with the new rollout key.
        snapshot_signer: The new snapshot key's signer, if it changes.
        timestamp_signer: The new timestamp key's signer, if it changes.
        online_keys: Role to the new ``.pub`` path (relative to the repository).
    """

    roles: dict[str, Metadata[Any]] = field(default_factory=dict)
    snapshot_signer: Signer | None = None
    timestamp_signer: Signer | None = None
    online_keys: dict[str, str] = field(default_factory=dict)


def write_plan(
    repo: Repository, cid: str, online_keys: dict[str, str], rollout_waves: list[str]
) -> None:
    """Record a rotation's new online keys and re-signed waves in ``ID.local.json``.

    Args:
        repo: The repository.
        cid: The ceremony id.
        online_keys: Role to the new key's ``.pub`` path, relative to the repository.
        rollout_waves: Waves whose rollout and ripples move to the new rollout key.
    """
    plan = {"rotation": {"online_keys": online_keys, "rollout_waves": rollout_waves}}
    atomic_write(
        staging.local_path(repo, cid),
        json.dumps(plan, indent=2, sort_keys=True).encode(),
        mode=PRIVATE_MODE,
    )


def read_plan(repo: Repository, cid: str) -> tuple[dict[str, str], list[str]] | None:
    """The rotation plan of ceremony ``cid``, or None if it is not a rotation.

    Args:
        repo: The repository.
        cid: The ceremony id.

    Returns:
        (online keys, rollout waves) as :func:`write_plan` recorded them.

    Raises:
        StorageError: The plan is unreadable.
    """
    path = staging.local_path(repo, cid)
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise StorageError(f"cannot read {path}: {e}") from None
    plan = doc.get("rotation") if isinstance(doc, dict) else None
    if not isinstance(plan, dict):
        return None
    keys = plan.get("online_keys", {})
    waves = plan.get("rollout_waves", [])
    if not isinstance(keys, dict) or not isinstance(waves, list):
        raise StorageError(f"{path} is malformed; discard the ceremony and start again")
    return {str(k): str(v) for k, v in keys.items()}, [str(w) for w in waves]


def _signer(repo: Repository, rel: str) -> Signer:
    pub = repo.path / rel
    uri = load_public_key(pub)[2]
    spec = str(pub) if uri else str(pub).removesuffix(".pub") + ".key"
    ref = load_key_ref(spec, passphrase=repo.passphrase, online=True)
    if ref.signer is None:  # pragma: no cover - a .key always yields a signer
        raise StorageError(f"no private key for {pub}")
    return ref.signer


def rotation_extras(
    repo: Repository, ceremony: Ceremony, roles: dict[str, Metadata[Any]]
) -> RotationExtras | None:
    """The online side of a complete rotation ceremony, built from the published state.

    Built at publish time (not when the ceremony started), so ripples signed
    or a cancel published while the ceremony was pending are carried over.

    Args:
        repo: The repository (lock held).
        ceremony: The complete ceremony.
        roles: Its roles about to be published (the new ``wave.W`` versions).

    Returns:
        The extras, or None when the ceremony is no key rotation.

    Raises:
        KeyUseError: A new online key cannot be unlocked.
        StorageError: A staged key or plan is missing.
    """
    plan = read_plan(repo, ceremony.id)
    if plan is None:
        return None
    online, waves = plan
    extras = RotationExtras(online_keys=online)
    if "snapshot" in online:
        extras.snapshot_signer = _signer(repo, online["snapshot"])
    if "timestamp" in online:
        extras.timestamp_signer = _signer(repo, online["timestamp"])
    if not waves:
        return extras
    rollout_signer = _signer(repo, online["rollout"]) if "rollout" in online else None
    state = repo.state()
    for name in waves:
        wave_md = roles.get(wave_role(name))
        if wave_md is None or rollout_signer is None:
            raise StorageError(f"the rotation plan names wave {name} but re-signs no wave.{name}")
        drole, keys = rollout_delegation(wave_md)
        current = state.version_of(rollout_role(name))
        status, count = "active", 0
        accounting: tuple[tuple[int, int], ...] | None = (
            () if wave_info(wave_md).policy.plan is not None else None
        )
        if current is not None:
            info = rollout_info(repo.load_targets(rollout_role(name), state))
            status, count, accounting = info.state, info.ripples, info.accounting
        roll = build_rollout(
            name,
            status,
            count,
            drole.keyids,
            keys,
            drole.threshold,
            (current or 0) + 1,
            wave_md.signed.expires,
            accounting,
        )
        roll.sign(rollout_signer)
        extras.roles[rollout_role(name)] = roll
        for index in range(1, count + 1):
            role = ripple_role(name, index)
            if state.version_of(role) is None:
                continue
            ripple: Metadata[Targets] = repo.load_targets(role, state)
            ripple.signatures.clear()
            ripple.signed.version += 1
            ripple.sign(rollout_signer)
            extras.roles[role] = ripple
    return extras


def finish_rotation(repo: Repository, extras: RotationExtras) -> None:
    """After the publish: the new keys become the repository's online keys.

    Args:
        repo: The repository.
        extras: What :func:`rotation_extras` returned.
    """
    if not extras.online_keys:
        return
    config = dict(repo.config)
    config["online_keys"] = {**config.get("online_keys", {}), **extras.online_keys}
    repo.write_config(config)
