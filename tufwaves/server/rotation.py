"""Key rotation beyond root: the online keys and the offline targets keys.

Both are ceremonies (``specs/rotation.md``) published all or nothing:

* :func:`rotate_online_keys` generates new snapshot, timestamp and/or rollout
  keys into ``REPO/keys``. New snapshot or timestamp keys need root version
  N+1 (ceremony ``root.N``, both root thresholds); a new rollout key needs a
  new version of every wave that delegates its rollout role to the current
  online rollout key, signed by the targets keys. On publish, the rollout
  and ripple roles of those waves are re-signed with the new rollout key and
  the snapshot and timestamp with the new keys (``rekey.py``).
* :func:`rotate_targets_keys` makes root version N+1 with new targets keys
  and threshold, the next ``targets`` delegating every wave to them, and the
  next version of every wave role, signed by the new targets keys.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from securesystemslib.signer import Key
from tuf.api.metadata import Metadata, Root, Targets

from tufwaves._files import atomic_write
from tufwaves.device.profile import WAVE_FIELD
from tufwaves.errors import InputError, RefusedError
from tufwaves.server import staging
from tufwaves.server.ceremony import Ceremony, PendingRole
from tufwaves.server.keys import KeyRef, generate_key, resolve_passphrase, write_key_pair
from tufwaves.server.metadata import expiry, rollout_delegation, wave_role
from tufwaves.server.rekey import write_plan
from tufwaves.server.repository import PublishedState, Repository
from tufwaves.server.waves import publish_if_complete, wave_salt

__all__ = ["ROTATABLE_ONLINE_ROLES", "rotate_online_keys", "rotate_targets_keys"]

ROTATABLE_ONLINE_ROLES = ("snapshot", "timestamp", "rollout")


def _refuse_if_pending(repo: Repository) -> None:
    pending = staging.pending_ids(repo)
    if pending:
        raise RefusedError(
            f"ceremonies are pending ({', '.join(pending)}); a key rotation re-signs "
            "roles they would change: finish or discard them first "
            "('tufwaves repo show' lists them)"
        )


def _wave_names(state: PublishedState) -> list[str]:
    return sorted(r.removeprefix("wave.") for r in state.roles() if r.startswith("wave."))


def _next_root(repo: Repository, expires: datetime) -> tuple[Metadata[Root], Metadata[Root]]:
    current = repo.root()
    md = Metadata[Root].from_bytes(repo.role_bytes("root"))
    md.signatures.clear()
    md.signed.version += 1
    md.signed.expires = expires
    return current, md


def _root_role(current: Metadata[Root], md: Metadata[Root]) -> PendingRole:
    old = current.signed.roles["root"]
    new = md.signed.roles["root"]
    allowed = {kid: current.signed.keys[kid] for kid in old.keyids}
    allowed.update({kid: md.signed.keys[kid] for kid in new.keyids})
    return PendingRole(
        "root",
        md,
        allowed,
        new.threshold,
        previous=(frozenset(old.keyids), old.threshold),
        published=current,
    )


def _replace_role_keys(root: Root, role: str, keys: Sequence[Key]) -> None:
    for keyid in list(root.roles[role].keyids):
        root.revoke_key(keyid, role)
    for key in keys:
        root.add_key(key, role)


def _next_version(repo: Repository, role: str, state: PublishedState) -> Metadata[Targets]:
    """The published ``role`` as its next version, unsigned.

    A wave role keeps its fraction salt: version 1's salt is derived from its
    signatures, which the new version does not have, so the new version
    carries it in ``policy.fraction_salt`` (``specs/membership.md`` 6.1) and
    fraction ripples keep their members.
    """
    md = repo.load_targets(role, state)
    if role.startswith("wave."):
        salt = wave_salt(md, repo.load_targets("targets", state).signed)
        md.signed.unrecognized_fields[WAVE_FIELD]["policy"]["fraction_salt"] = salt.hex()
    md.signatures.clear()
    md.signed.version += 1
    return md


def _sign_and_publish(repo: Repository, ceremony: Ceremony, keys: Sequence[KeyRef]) -> None:
    """Sign with every key that may sign some role; publish or stage (lock held)."""
    for ref in keys:
        if ref.signer is None:
            raise InputError(f"--key {ref.name} is a public key; it cannot sign")
        ceremony.sign(ref.key.keyid, ref.signer)
    atomic_write(staging.ceremony_path(repo, ceremony.id), ceremony.to_bytes())
    publish_if_complete(repo, ceremony)


def rotate_online_keys(
    repo: Repository,
    *,
    roles: Collection[str] = ROTATABLE_ONLINE_ROLES,
    keys: Sequence[KeyRef] = (),
    expires: datetime | None = None,
) -> Ceremony:
    """Replace online keys after a leak (or routinely): start the ceremony that revokes them.

    New keys are generated into ``REPO/keys`` (encrypted with the online
    keys' passphrase, ``repo.passphrase``). The ceremony holds root version
    N+1 with the new snapshot and timestamp keys (when they rotate), signed
    by a threshold of the current AND the new root keys, and, when the
    rollout key rotates, the next version of every wave whose rollout role
    is delegated to the current online rollout key alone, delegating it to
    the new key (signed by the targets keys). When complete it is published
    in one step: the rollout role and every ripple of those waves re-signed
    by the new rollout key (one version more; same ripples, same state, so a
    cancelled wave stays cancelled), and snapshot and timestamp signed by the
    new keys, continuing the repository's own version numbers. Devices drop
    their trusted timestamp and snapshot when root changes those keys (TUF
    5.3.11), so versions an attacker signed with the old keys stop counting.

    Args:
        repo: The repository.
        roles: Which online keys to replace (default all three:
            ``snapshot``, ``timestamp``, ``rollout``).
        keys: Root and targets keys that sign now.
        expires: Expiry of the new root (default: 365 days after
            ``repo.now()``).

    Returns:
        The ceremony (``root.N``; ``complete`` when published). Finish it with
        :func:`~tufwaves.server.waves.sign_ceremony` or an exported file.

    Raises:
        InputError: An unknown role, no role, or a ``keys`` entry that cannot sign.
        RefusedError: Another ceremony is pending, or a key may not sign.
        KeyUseError: No passphrase for the new keys.
    """
    wanted = sorted(set(roles))
    unknown = [r for r in wanted if r not in ROTATABLE_ONLINE_ROLES]
    if unknown or not wanted:
        raise InputError(
            f"online roles to rotate must be among {', '.join(ROTATABLE_ONLINE_ROLES)}"
            + (f"; got {', '.join(unknown)}" if unknown else "")
        )
    if expires is None:
        expires = expiry(start=repo.now())
    with repo.locked():
        _refuse_if_pending(repo)
        state = repo.state()
        old_rollout = repo.online_key("rollout").keyid
        secret = resolve_passphrase(
            repo.passphrase, "the new online keys", confirm=True, online=True
        )
        suffix = f"{repo.now():%Y%m%d}-{secrets.token_hex(3)}"
        new_keys: dict[str, Key] = {}
        paths: dict[str, str] = {}
        for role in wanted:
            signer = generate_key("ed25519")
            name = f"{role}-{suffix}"
            write_key_pair(name, repo.keys_dir, signer, secret)
            new_keys[role] = signer.public_key
            paths[role] = f"keys/{name}.pub"
        repo.remember_key_names({k.keyid: f"online-{r}-{suffix}" for r, k in new_keys.items()})
        current, root_md = _next_root(repo, expires)
        for role in ("snapshot", "timestamp"):
            if role in new_keys:
                _replace_role_keys(root_md.signed, role, [new_keys[role]])
        targets_role = current.signed.roles["targets"]
        offline = {kid: current.signed.keys[kid] for kid in targets_role.keyids}
        pending: list[PendingRole] = []
        if "snapshot" in new_keys or "timestamp" in new_keys:
            pending.append(_root_role(current, root_md))
        waves: list[str] = []
        if "rollout" in new_keys:
            new = new_keys["rollout"]
            for name in _wave_names(state):
                md = _next_version(repo, wave_role(name), state)
                drole, _ = rollout_delegation(md)
                if set(drole.keyids) != {old_rollout}:
                    continue  # the wave has rollout keys of its own
                delegations = md.signed.delegations
                assert delegations is not None  # noqa: S101 - rollout_delegation checked
                delegations.keys.pop(old_rollout, None)
                delegations.keys[new.keyid] = new
                drole.keyids = [new.keyid]
                drole.threshold = 1
                waves.append(name)
                pending.append(
                    PendingRole(
                        wave_role(name),
                        md,
                        offline,
                        targets_role.threshold,
                        published=repo.published(wave_role(name)),
                    )
                )
        cid = (
            f"root.{root_md.signed.version}"
            if pending and pending[0].name == "root"
            else f"rollout-keys.{current.signed.version}"
        )
        if not pending:  # only the rollout key, and no wave uses it: nothing to sign
            pending.append(_root_role(current, root_md))
            cid = f"root.{root_md.signed.version}"
        names = dict(repo.config.get("key_names", {}))
        ceremony = Ceremony(cid, pending, names)
        write_plan(repo, cid, paths, waves)
        _sign_and_publish(repo, ceremony, keys)
    return ceremony


def rotate_targets_keys(
    repo: Repository,
    *,
    targets_keys: Sequence[KeyRef],
    targets_threshold: int | None = None,
    keys: Sequence[KeyRef] = (),
    expires: datetime | None = None,
) -> Ceremony:
    """Replace the offline targets keys and/or threshold: root N+1, targets and every wave.

    The ceremony (``root.N``) holds root version N+1 naming the new targets
    keys (signed by a threshold of the current and of the new root keys), the
    next ``targets`` version delegating every wave to the new keys, and the
    next version of every wave role (same content), each signed by a
    threshold of the new targets keys. Published together, so a device never
    sees a root whose targets keys did not sign the targets and waves.

    Args:
        repo: The repository.
        targets_keys: The new targets key set (old keys left out are revoked).
        targets_threshold: How many must sign (default: the current
            threshold, at most the number of keys).
        keys: Root keys and new targets keys that sign now.
        expires: Expiry of the new root and at least of the new targets
            (default: 365 days after ``repo.now()``).

    Returns:
        The ceremony (``complete`` when published).

    Raises:
        InputError: No keys, a key given twice, a threshold out of range or a
            ``keys`` entry that cannot sign.
        RefusedError: Another ceremony is pending, or a key may not sign.
    """
    if not targets_keys:
        raise InputError("give the new targets keys (--targets-key)")
    new_tk = {r.key.keyid: r.key for r in targets_keys}
    if len(new_tk) != len(targets_keys):
        raise InputError("the same targets key was given twice")
    if expires is None:
        expires = expiry(start=repo.now())
    with repo.locked():
        _refuse_if_pending(repo)
        state = repo.state()
        current, root_md = _next_root(repo, expires)
        old_role = current.signed.roles["targets"]
        threshold = targets_threshold or min(old_role.threshold, len(new_tk))
        if not 1 <= threshold <= len(new_tk):
            raise InputError(
                f"--targets-threshold {threshold} must be between 1 and the number of "
                f"targets keys ({len(new_tk)})"
            )
        _replace_role_keys(root_md.signed, "targets", list(new_tk.values()))
        root_md.signed.roles["targets"].threshold = threshold
        repo.remember_key_names({r.key.keyid: r.name for r in targets_keys})
        targets = _next_version(repo, "targets", state)
        targets.signed.expires = max(targets.signed.expires, expires)
        pending = [
            _root_role(current, root_md),
            PendingRole(
                "targets", targets, dict(new_tk), threshold, published=repo.published("targets")
            ),
        ]
        delegations = targets.signed.delegations
        if delegations is not None and delegations.roles:
            for drole in delegations.roles.values():
                drole.keyids = sorted(new_tk)
                drole.threshold = threshold
            used = set(new_tk)
            for kid in list(delegations.keys):
                if kid not in used:
                    del delegations.keys[kid]
            delegations.keys.update(new_tk)
        for name in _wave_names(state):
            md = _next_version(repo, wave_role(name), state)
            pending.append(
                PendingRole(
                    wave_role(name),
                    md,
                    dict(new_tk),
                    threshold,
                    published=repo.published(wave_role(name)),
                )
            )
        names: dict[str, Any] = dict(repo.config.get("key_names", {}))
        ceremony = Ceremony(f"root.{root_md.signed.version}", pending, names)
        write_plan(repo, ceremony.id, {}, [])  # marks a rotation: no targets ceremony meanwhile
        _sign_and_publish(repo, ceremony, keys)
    return ceremony
