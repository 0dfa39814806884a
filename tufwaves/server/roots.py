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
    generate_key,
    load_public_key,
    passphrase,
    write_key_pair,
)
from tufwaves.server.metadata import expiry
from tufwaves.server.repository import CONFIG_NAME, Repository
from tufwaves.server.signers import signing_failed
from tufwaves.server.staging import pending_ids
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
) -> tuple[Repository, Ceremony]:
    """Create ``path`` as a tufwaves repository.

    Online snapshot, timestamp and rollout keys are generated into
    ``REPO/keys`` (encrypted with the key passphrase) unless ``online_keys``
    names existing ``.pub`` files (their ``.key`` beside them). The first root
    and targets are signed with every key that can sign now and published if
    both reach their thresholds; otherwise they wait in a ceremony.
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
    expires = expires or expiry()
    repo = Repository(path)
    # Check the passphrase before creating anything.
    need_secret = any(role not in (online_keys or {}) for role in ONLINE_ROLES)
    secret = passphrase("the online keys", confirm=True) if need_secret else b""
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
            atomic_write(repo.staging_dir / f"{CEREMONY_ID}.json", ceremony.to_bytes())
    assert (path / CONFIG_NAME).exists()  # noqa: S101
    return repo, ceremony


def repository_ceremony(repo: Repository) -> str:
    """The pending ceremony of the repository itself: its creation or a root rotation."""
    for cid in pending_ids(repo):
        if cid == CEREMONY_ID or cid.startswith("root."):
            return cid
    raise InputError(f"{repo.path} has no pending repository ceremony (creation or root rotation)")


def rotate_root(
    repo: Repository,
    *,
    root_keys: Sequence[KeyRef] = (),
    root_threshold: int | None = None,
    expires: datetime,
    keys: Sequence[KeyRef] = (),
) -> Ceremony:
    """Start root version N+1: new root keys and/or threshold, a fresh expiry.

    It is published when a threshold of the new root's keys AND a threshold of
    the current root's keys have signed it (TUF clients check both), together
    with a new snapshot and timestamp. Other roles' keys stay as they are.
    """
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
                )
            ],
            dict(repo.config.get("key_names", {})),
        )
        for ref in keys:
            if ref.signer is None:
                raise InputError(f"--key {ref.name} is a public key; it cannot sign")
            ceremony.sign(ref.key.keyid, ref.signer)
        if not publish_if_complete(repo, ceremony):
            atomic_write(repo.staging_dir / f"{ceremony.id}.json", ceremony.to_bytes())
    return ceremony
