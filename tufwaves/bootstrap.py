"""Create a repository: root, targets, online keys, first publish or ceremony."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from securesystemslib.signer import Key
from tuf.api.metadata import Metadata, Role, Root, Targets

from tufwaves.ceremony import Ceremony, PendingRole
from tufwaves.errors import InputError, StorageError
from tufwaves.keys import (
    KeyRef,
    generate_key,
    load_public_key,
    passphrase,
    write_key_pair,
)
from tufwaves.metadata import expiry
from tufwaves.repository import CONFIG_NAME, Repository, atomic_write
from tufwaves.waves import publish_if_complete

__all__ = ["ONLINE_ROLES", "create_repository"]

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
                    atomic_write(target.with_suffix(".key"), priv.read_bytes())
                    target.with_suffix(".key").chmod(0o600)
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
                    pending.metadata.sign(ref.signer, append=True)
    with repo.locked():
        if not publish_if_complete(repo, ceremony):
            atomic_write(repo.staging_dir / f"{CEREMONY_ID}.json", ceremony.to_bytes())
    assert (path / CONFIG_NAME).exists()  # noqa: S101
    return repo, ceremony
