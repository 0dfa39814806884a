"""Create a repository: root, targets, online keys, first publish or ceremony."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from securesystemslib.signer import Key
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Role, Root, Targets

from tufwaves._files import PRIVATE_MODE, atomic_write
from tufwaves.errors import InputError, RefusedError, StorageError
from tufwaves.server.ceremony import Ceremony, PendingRole
from tufwaves.server.keys import (
    KeyRef,
    Passphrase,
    generate_key,
    load_public_key,
    resolve_passphrase,
    write_key_pair,
)
from tufwaves.server.metadata import Clock, expiry
from tufwaves.server.repository import CONFIG_NAME, Repository
from tufwaves.server.signers import signing_failed
from tufwaves.server.staging import ceremony_path, pending_ids
from tufwaves.server.waves import publish_if_complete

__all__ = ["ONLINE_ROLES", "create_repository", "repository_ceremony", "rotate_root"]

ONLINE_ROLES = ("snapshot", "timestamp", "rollout")
CEREMONY_ID = "repository"


def _distinct(refs: Sequence[KeyRef], what: str) -> dict[str, Key]:
    keys = {r.key.keyid: r.key for r in refs}
    if len(keys) != len(refs):
        raise InputError(f"the same {what} key was given twice")
    return keys


def create_repository(
    path: Path,
    *,
    root_keys: Sequence[KeyRef],
    root_threshold: int,
    targets_keys: Sequence[KeyRef],
    targets_threshold: int,
    online_keys: dict[str, Path] | None = None,
    expires: datetime | None = None,
    passphrase: Passphrase = None,
    clock: Clock | None = None,
) -> tuple[Repository, Ceremony]:
    """Create ``path`` as a tufwaves repository.

    Online snapshot, timestamp and rollout keys are generated into
    ``REPO/keys`` (encrypted with ``passphrase``) unless ``online_keys``
    names existing ``.pub`` files (their ``.key`` beside them). The first root
    and targets are signed with every key that can sign now and published if
    both reach their thresholds; otherwise they wait in a ceremony
    (:func:`repository_ceremony`; sign it with
    :func:`~tufwaves.server.waves.sign_ceremony`).

    Args:
        path: A new or empty directory.
        root_keys: The root keys (those with a signer sign now).
        root_threshold: How many root keys must sign, 1..len(root_keys).
        targets_keys: The offline targets keys, which sign every wave.
        targets_threshold: How many targets keys must sign.
        online_keys: Role (``snapshot``, ``timestamp``, ``rollout``) to an
            existing ``.pub`` file, instead of generating that key.
        expires: Expiry of root and targets (default: 365 days after the
            clock's now, as on the command line).
        passphrase: Encrypts the generated online keys and later decrypts
            them (bytes, or a callable asked with what it is for); ``None``
            reads ``TUFWAVES_KEY_PASSPHRASE`` or prompts at a terminal.
        clock: The returned repository's clock (default: the real UTC time).

    Returns:
        The repository (with ``clock`` and ``passphrase`` set) and its first
        ceremony, ``complete`` if it was published.

    Raises:
        InputError: No keys, a key given twice, or a threshold out of range.
        StorageError: ``path`` is not empty or cannot be written.
        KeyUseError: No passphrase can be had.
    """
    if not root_keys or not targets_keys:
        raise InputError("a repository needs at least one --root-key and one --targets-key")
    rk, tk = _distinct(root_keys, "root"), _distinct(targets_keys, "targets")
    for what, n, keys in (
        ("root", root_threshold, rk),
        ("targets", targets_threshold, tk),
    ):
        if not 1 <= n <= len(keys):
            raise InputError(
                f"--{what}-threshold {n} must be between 1 and the number of "
                f"{what} keys ({len(keys)})"
            )
    if path.exists() and any(path.iterdir()):
        raise StorageError(f"{path} exists and is not empty; choose a new directory")
    repo = Repository(path, clock=clock, passphrase=passphrase)
    expires = expires or expiry(start=repo.now())
    # Check the passphrase before creating anything.
    need_secret = any(role not in (online_keys or {}) for role in ONLINE_ROLES)
    secret = (
        resolve_passphrase(passphrase, "the online keys", confirm=True, online=True)
        if need_secret
        else b""
    )
    path.mkdir(parents=True, exist_ok=True)
    for directory in (repo.metadata_dir, repo.targets_dir, repo.staging_dir, repo.ripples_dir):
        directory.mkdir(exist_ok=True)
    online: dict[str, Key] = {}
    online_paths: dict[str, str] = {}
    for role in ONLINE_ROLES:
        if online_keys and role in online_keys:
            pub = online_keys[role]
            _, key, _ = load_public_key(pub)
            target = repo.keys_dir / pub.name
            if pub.resolve() != target.resolve():
                repo.keys_dir.mkdir(parents=True, exist_ok=True)
                atomic_write(target, pub.read_bytes())
                priv = pub.with_suffix(".key")
                if priv.exists():
                    atomic_write(target.with_suffix(".key"), priv.read_bytes(), mode=PRIVATE_MODE)
            online[role] = key
            online_paths[role] = f"keys/{pub.name}"
        else:
            signer = generate_key("ed25519")
            write_key_pair(role, repo.keys_dir, signer, secret)
            online[role] = signer.public_key
            online_paths[role] = f"keys/{role}.pub"
    root = Root(
        version=1,
        expires=expires,
        consistent_snapshot=True,
        keys={
            **rk,
            **tk,
            online["snapshot"].keyid: online["snapshot"],
            online["timestamp"].keyid: online["timestamp"],
        },
        roles={
            "root": Role(sorted(rk), root_threshold),
            "targets": Role(sorted(tk), targets_threshold),
            "snapshot": Role([online["snapshot"].keyid], 1),
            "timestamp": Role([online["timestamp"].keyid], 1),
        },
    )
    targets = Targets(version=1, expires=expires)
    names = {r.key.keyid: r.name for r in (*root_keys, *targets_keys)}
    names.update({online[r].keyid: f"online-{r}" for r in ONLINE_ROLES})
    repo.write_config(
        {
            "format": "tufwaves-repository",
            "version": 1,
            "online_keys": online_paths,
            "key_names": names,
        }
    )
    ceremony = Ceremony(
        CEREMONY_ID,
        [
            PendingRole("root", Metadata(root), rk, root_threshold),
            PendingRole("targets", Metadata(targets), tk, targets_threshold),
        ],
        names,
    )
    for ref in (*root_keys, *targets_keys):
        if ref.signer is not None:
            for pending in ceremony.roles:
                if ref.key.keyid in pending.keys:
                    try:
                        pending.metadata.sign(ref.signer, append=True)
                    except UnsignedMetadataError as e:
                        raise signing_failed(ref.name, pending.name, e.__cause__ or e) from None
    with repo.locked():
        if not publish_if_complete(repo, ceremony):
            atomic_write(ceremony_path(repo, CEREMONY_ID), ceremony.to_bytes())
    assert (path / CONFIG_NAME).exists()  # noqa: S101
    return repo, ceremony


def repository_ceremony(repo: Repository) -> str:
    """The pending ceremony of the repository itself: its creation or a root rotation.

    Args:
        repo: The repository.

    Returns:
        The ceremony id (``"repository"``, ``"root.N"``, or ``"rollout-keys.N"``
        for a rotation of the online rollout key alone).

    Raises:
        InputError: None is pending.
    """
    for cid in pending_ids(repo):
        if cid == CEREMONY_ID or cid.startswith(("root.", "rollout-keys.")):
            return cid
    raise InputError(f"{repo.path} has no pending repository ceremony (creation or root rotation)")


def rotate_root(
    repo: Repository,
    *,
    root_keys: Sequence[KeyRef] = (),
    root_threshold: int | None = None,
    expires: datetime | None = None,
    keys: Sequence[KeyRef] = (),
) -> Ceremony:
    """Start root version N+1: new root keys and/or threshold, a fresh expiry.

    It is published when a threshold of the new root's keys AND a threshold of
    the current root's keys have signed it (TUF clients check both), together
    with a new snapshot and timestamp. Other roles' keys stay as they are.

    Args:
        repo: The repository.
        root_keys: The new root keys (default: keep the current ones).
        root_threshold: The new threshold (default: the current one, at most
            the number of keys).
        expires: Expiry of the new root (default: 365 days after
            ``repo.now()``, as on the command line).
        keys: Old or new root keys that sign now.

    Returns:
        The ceremony (id ``root.N``), ``complete`` if it was published.

    Raises:
        RefusedError: A repository ceremony is already pending, or a key may
            not sign it.
        InputError: A threshold out of range, a key given twice, or a ``keys``
            entry that cannot sign.
    """
    if expires is None:
        expires = expiry(start=repo.now())
    with repo.locked():
        if any(c == CEREMONY_ID or c.startswith("root.") for c in pending_ids(repo)):
            raise RefusedError(
                f"a repository ceremony ({repository_ceremony(repo)}) is already pending; "
                "finish it ('tufwaves repo sign') or discard it ('tufwaves repo ceremony discard')"
            )
        current = repo.root()
        old_role = current.signed.roles["root"]
        md = Metadata[Root].from_bytes(repo.role_bytes("root"))
        md.signatures.clear()
        md.signed.version += 1
        md.signed.expires = expires
        if root_keys:
            new_keys = _distinct(root_keys, "root")
            for keyid in list(old_role.keyids):
                md.signed.revoke_key(keyid, "root")
            for key in new_keys.values():
                md.signed.add_key(key, "root")
            repo.remember_key_names({r.key.keyid: r.name for r in root_keys})
        role = md.signed.roles["root"]
        role.threshold = root_threshold or min(old_role.threshold, len(role.keyids))
        if not 1 <= role.threshold <= len(role.keyids):
            raise InputError(
                f"--root-threshold {role.threshold} must be between 1 and the number of "
                f"root keys ({len(role.keyids)})"
            )
        allowed = {kid: current.signed.keys[kid] for kid in old_role.keyids}
        allowed.update({kid: md.signed.keys[kid] for kid in role.keyids})
        ceremony = Ceremony(
            f"root.{md.signed.version}",
            [
                PendingRole(
                    "root",
                    md,
                    allowed,
                    role.threshold,
                    previous=(frozenset(old_role.keyids), old_role.threshold),
                    published=current,
                )
            ],
            dict(repo.config.get("key_names", {})),
        )
        for ref in keys:
            if ref.signer is None:
                raise InputError(f"--key {ref.name} is a public key; it cannot sign")
            ceremony.sign(ref.key.keyid, ref.signer)
        if not publish_if_complete(repo, ceremony):
            atomic_write(ceremony_path(repo, ceremony.id), ceremony.to_bytes())
    return ceremony
