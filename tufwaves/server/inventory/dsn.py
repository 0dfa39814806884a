"""Inventory locations: PostgreSQL DSNs, the rule that keeps passwords out, lock keys.

A repository stores where its inventory lives in ``tufwaves.json`` (key
``inventory``): absent for the SQLite file ``REPO/inventory.sqlite``, or a
``postgresql://`` URI. That URI MUST NOT carry a password: the config file is
copied, backed up and shown; libpq takes the password from ``PGPASSWORD``,
``~/.pgpass`` (or ``PGPASSFILE``) or a client certificate instead. Every
display of a DSN goes through :func:`redact` all the same.

No database driver is imported here.
"""

from __future__ import annotations

import hashlib
import os
import re
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from tufwaves.errors import InputError

__all__ = [
    "CONFIG_KEY",
    "INVENTORY_ENV",
    "REPOSITORY_ID_KEY",
    "check_dsn",
    "is_postgres",
    "lock_key",
    "redact",
    "scrub",
]

INVENTORY_ENV = "TUFWAVES_INVENTORY"
"""The inventory ``tufwaves repo init`` uses when ``--inventory`` is not given."""

CONFIG_KEY = "inventory"
"""Where the repository configuration names a PostgreSQL inventory."""

REPOSITORY_ID_KEY = "repository_id"
"""A random id the repository gets with a PostgreSQL inventory; its lock key derives from it."""

_SCHEMES = ("postgresql://", "postgres://")
_NETLOC_PASSWORD = re.compile(r"^([^:@/]*):[^@]*@")


def is_postgres(location: object) -> bool:
    """Is ``location`` a PostgreSQL URI (as opposed to the SQLite default)?"""
    return isinstance(location, str) and location.startswith(_SCHEMES)


def redact(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***`` (for every display)."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "(an unparsable DSN)"
    netloc = _NETLOC_PASSWORD.sub(r"\1:***@", parts.netloc)
    query = "&".join(
        f"{key}=***" if key == "password" else part
        for part in parts.query.split("&")
        if part
        for key in [part.partition("=")[0]]
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def check_dsn(dsn: str) -> str:
    """A PostgreSQL URI fit to store in a repository configuration, or InputError.

    It must be ``postgresql://`` (or ``postgres://``) and carry no password.
    """
    if not is_postgres(dsn):
        raise InputError(
            f"inventory {redact(dsn)!r} is not a PostgreSQL URI; give "
            "postgresql://USER@HOST:PORT/DATABASE (or nothing for the SQLite file)"
        )
    try:
        parts = urlsplit(dsn)
        has_password = parts.password is not None or any(
            key == "password" for key, _ in parse_qsl(parts.query)
        )
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as e:
        raise InputError(f"inventory DSN {redact(dsn)} is malformed: {e}") from None
    if has_password:
        raise InputError(
            f"inventory DSN {redact(dsn)} contains a password; the repository "
            "configuration never stores one. Give the DSN without it and the "
            "password in PGPASSWORD or ~/.pgpass (PGPASSFILE)"
        )
    return dsn


def scrub(text: str, dsn: str | None = None) -> str:
    """``text`` (a driver's error message) with any known password taken out."""
    secrets = [os.environ.get("PGPASSWORD", "")]
    if dsn is not None:
        try:
            parts = urlsplit(dsn)
            secrets.append(parts.password or "")
            secrets += [value for key, value in parse_qsl(parts.query) if key == "password"]
            text = text.replace(dsn, redact(dsn))
        except ValueError:
            pass
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def lock_key(purpose: str, identity: str) -> int:
    """A PostgreSQL advisory lock key (signed 64-bit) for ``purpose`` and ``identity``."""
    digest = hashlib.sha256(f"tufwaves-{purpose}\x00{identity}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
