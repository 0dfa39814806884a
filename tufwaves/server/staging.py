"""The on-disk store of pending ceremonies: ``REPO/staging/``.

A ceremony waiting for signatures lives in ``staging/ID.json`` (the
:class:`~tufwaves.server.ceremony.Ceremony` file that is exported, signed and
imported), with ``ID.local.json`` and ``ID.artifacts/`` for what only this
repository needs to publish it (the artifacts of a new wave). Root, wave and
production ceremonies all use it.
"""

from __future__ import annotations

from pathlib import Path

from tufwaves.errors import InputError
from tufwaves.server.ceremony import Ceremony, check_ceremony_id
from tufwaves.server.repository import Repository

__all__ = ["ceremony_path", "load_ceremony", "local_path", "pending_ids", "remove"]


def _inside(repo: Repository, ceremony_id: str, suffix: str) -> Path:
    check_ceremony_id(ceremony_id)
    path = repo.staging_dir / f"{ceremony_id}{suffix}"
    if path.resolve().parent != repo.staging_dir.resolve():
        raise InputError(f"ceremony {ceremony_id!r} would be stored outside {repo.staging_dir}")
    return path


def ceremony_path(repo: Repository, ceremony_id: str) -> Path:
    """Where the pending ceremony ``ceremony_id`` is stored.

    Args:
        repo: The repository.
        ceremony_id: The ceremony id.

    Returns:
        The path of its ceremony file.

    Raises:
        InputError: ``ceremony_id`` is not a ceremony id, or names a file
            outside the staging folder.
    """
    return _inside(repo, ceremony_id, ".json")


def local_path(repo: Repository, ceremony_id: str) -> Path:
    """Where this repository keeps what only it needs to publish ``ceremony_id``.

    Raises:
        InputError: as :func:`ceremony_path`.
    """
    return _inside(repo, ceremony_id, ".local.json")


def load_ceremony(repo: Repository, ceremony_id: str) -> Ceremony:
    """The pending ceremony ``ceremony_id``, e.g. to export its file.

    Args:
        repo: The repository.
        ceremony_id: The ceremony id (``wave.W``, ``production.W``,
            ``repository``, ``root.N``).

    Returns:
        The ceremony; ``to_bytes()`` is the file signers sign.

    Raises:
        InputError: no such ceremony is pending.
    """
    path = ceremony_path(repo, ceremony_id)
    if not path.is_file():
        raise InputError(
            f"no pending ceremony {ceremony_id!r} in {repo.path} "
            "('tufwaves waves list --status pending' shows them)"
        )
    return Ceremony.read(path)


def pending_ids(repo: Repository) -> list[str]:
    """The ids of every pending ceremony, sorted.

    Args:
        repo: The repository.

    Returns:
        Ceremony ids.
    """
    if not repo.staging_dir.is_dir():
        return []
    return sorted(
        p.name.removesuffix(".json")
        for p in repo.staging_dir.glob("*.json")
        if not p.name.endswith(".local.json")
    )


def remove(repo: Repository, cid: str) -> None:
    """Delete a pending ceremony and its staged files (the caller holds the lock)."""
    for path in (ceremony_path(repo, cid), local_path(repo, cid)):
        path.unlink(missing_ok=True)
    blobs = _inside(repo, cid, ".artifacts")
    if blobs.is_dir():
        for f in blobs.iterdir():
            f.unlink()
        blobs.rmdir()
