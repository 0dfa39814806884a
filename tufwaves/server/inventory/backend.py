"""Which inventory a repository uses: the SQLite file or a PostgreSQL database.

The repository configuration decides (``specs/inventory.md`` section 10): no
``inventory`` key means ``REPO/inventory.sqlite``; a ``postgresql://`` URI
means :class:`~tufwaves.server.inventory.postgres.PostgresInventory`. The
PostgreSQL module (and with it the driver) is imported here, by name, only
when a configuration names a PostgreSQL inventory, so SQLite users need no
driver installed.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from tufwaves.errors import StorageError
from tufwaves.server.inventory import Inventory
from tufwaves.server.inventory.dsn import (
    CONFIG_KEY,
    REPOSITORY_ID_KEY,
    is_postgres,
    lock_key,
    redact,
)
from tufwaves.server.inventory.sqlite import SqliteInventory

if TYPE_CHECKING:
    from tufwaves.server.inventory.postgres import PostgresInventory

__all__ = [
    "configured_dsn",
    "describe",
    "open_configured",
    "open_postgres",
    "postgres_module",
    "shared_lock",
]

POSTGRES_MODULE = "tufwaves.server.inventory.postgres"


def postgres_module() -> ModuleType:
    """:mod:`tufwaves.server.inventory.postgres`, or StorageError without psycopg."""
    try:
        return importlib.import_module(POSTGRES_MODULE)
    except ImportError as e:
        raise StorageError(
            f"this repository's inventory is in PostgreSQL and the driver is missing "
            f"({e}); install it with: pip install 'tufwaves[postgres]'"
        ) from None


def open_postgres(dsn: str) -> PostgresInventory:
    inventory: PostgresInventory = postgres_module().PostgresInventory.open(dsn)
    return inventory


def configured_dsn(config: Mapping[str, Any]) -> str | None:
    """The PostgreSQL DSN a repository configuration names, or None (SQLite)."""
    location = config.get(CONFIG_KEY)
    if location is None:
        return None
    if not is_postgres(location):
        raise StorageError(
            f"the repository configuration names inventory {location!r}; "
            "expected a postgresql:// URI or no 'inventory' key (SQLite)"
        )
    return str(location)


def open_configured(
    sqlite_path: Path, config: Mapping[str, Any], *, read_only: bool = False
) -> Inventory:
    """The inventory a repository configuration names (SQLite at ``sqlite_path``
    when it names none; ``read_only`` opens a read-only SQLite copy)."""
    dsn = configured_dsn(config)
    if dsn is None:
        return SqliteInventory.open(sqlite_path, read_only=read_only)
    return open_postgres(dsn)


def describe(sqlite_path: Path, config: Mapping[str, Any]) -> str:
    """Where the inventory is, for people (passwords never shown)."""
    dsn = configured_dsn(config)
    if dsn is None:
        return f"SQLite {sqlite_path}"
    return f"PostgreSQL {redact(dsn)}"


@contextlib.contextmanager
def shared_lock(config: Mapping[str, Any], timeout: float) -> Iterator[None]:
    """The repository lock across machines: with a PostgreSQL inventory, a
    session advisory lock whose key derives from the repository's id; nothing
    for SQLite (the file lock is all there is)."""
    dsn = configured_dsn(config)
    if dsn is None:
        yield
        return
    identity = config.get(REPOSITORY_ID_KEY)
    if not isinstance(identity, str) or not identity:
        raise StorageError(
            f"the repository configuration names a PostgreSQL inventory but no "
            f"{REPOSITORY_ID_KEY}; the repository lock cannot be taken"
        )
    with postgres_module().repository_lock(dsn, lock_key("repository", identity), timeout):
        yield
