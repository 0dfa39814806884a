"""Choosing a PostgreSQL inventory for a repository, and moving SQLite's there.

``migrate_inventory`` copies every table of ``REPO/inventory.sqlite`` into an
empty PostgreSQL inventory in one PostgreSQL transaction, compares row counts
and a digest of every row on both sides before that transaction commits, and
only then switches the repository configuration (an atomic rename). A process
killed at any point before the switch leaves the repository on SQLite; the
SQLite file is left in place, untouched. See ``specs/inventory.md`` section 10.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid as uuid_mod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tufwaves.errors import RefusedError, StorageError
from tufwaves.server.inventory import postgres_sql
from tufwaves.server.inventory.backend import configured_dsn, open_postgres
from tufwaves.server.inventory.dsn import CONFIG_KEY, REPOSITORY_ID_KEY, check_dsn, redact
from tufwaves.server.inventory.sqlite import SqliteInventory
from tufwaves.server.repository import Repository

if TYPE_CHECKING:
    from tufwaves.server.inventory.postgres import PostgresInventory

__all__ = ["MigrationResult", "check_new_inventory", "migrate_inventory", "use_inventory"]

TABLES = tuple(postgres_sql.EXPORT_COLUMNS)
"""Every inventory table, in an order that foreign keys allow loading in."""

Rows = Callable[[str], Iterable[Sequence[Any]]]


@dataclass(frozen=True)
class MigrationResult:
    """What a migration copied: rows per table and the digest both sides agree on."""

    to: str  # redacted DSN
    counts: dict[str, int]
    digest: str
    resumed: bool  # the copy had been made by an earlier, interrupted run

    def to_dict(self) -> dict[str, Any]:
        return {
            "to": self.to,
            "counts": self.counts,
            "digest": self.digest,
            "resumed": self.resumed,
        }


def table_digest(rows: Rows) -> tuple[dict[str, int], str]:
    """Row counts per table and one SHA-256 over every row of every table, in
    the fixed column and row order of ``postgres_sql.EXPORT``."""
    digest = hashlib.sha256()
    counts: dict[str, int] = {}
    for table in TABLES:
        digest.update(f"table {table}\n".encode())
        count = 0
        for row in rows(table):
            digest.update(json.dumps(list(row), separators=(",", ":")).encode() + b"\n")
            count += 1
        counts[table] = count
    return counts, digest.hexdigest()


def _sqlite_rows(conn: sqlite3.Connection) -> Rows:
    def rows(table: str) -> Iterator[Sequence[Any]]:
        cursor = conn.execute(postgres_sql.EXPORT[table])
        while chunk := cursor.fetchmany(10_000):
            yield from chunk

    return rows


def check_new_inventory(dsn: str) -> str:
    """Connect to ``dsn``, create the schema if needed, and require it empty
    (a PostgreSQL inventory belongs to one repository). The checked DSN."""
    check_dsn(dsn)
    with open_postgres(dsn) as target:
        if not target.is_empty():
            raise RefusedError(
                f"the PostgreSQL inventory {target.location} is not empty; another "
                "repository may use it. Give each repository its own database or "
                "schema (options=-csearch_path=NAME)"
            )
    return dsn


def use_inventory(repo: Repository, dsn: str) -> None:
    """Switch the repository configuration to the PostgreSQL inventory ``dsn``
    (one atomic rename of tufwaves.json); gives the repository an id for its
    lock key if it has none."""
    config = dict(repo.config)
    config[CONFIG_KEY] = check_dsn(dsn)
    config.setdefault(REPOSITORY_ID_KEY, str(uuid_mod.uuid4()))
    repo.write_config(config)


def migrate_inventory(
    repo: Repository, dsn: str, progress: Callable[[str], None] | None = None
) -> MigrationResult:
    """Copy the SQLite inventory to PostgreSQL, verify it, then switch to it."""
    say = progress or (lambda _: None)
    check_dsn(dsn)
    with repo.locked():
        current = configured_dsn(repo.config)
        if current is not None:
            raise RefusedError(
                f"{repo.path} already uses the PostgreSQL inventory {redact(current)}"
            )
        SqliteInventory.open(repo.inventory_path).close()  # creates an empty one if none
        source = sqlite3.connect(repo.inventory_path, timeout=30.0, isolation_level=None)
        try:
            # Hold SQLite's write lock until the switch: no import or rollout
            # can add a row that the copy would miss.
            source.execute("BEGIN IMMEDIATE")
            say(f"reading {repo.inventory_path}")
            counts, digest = table_digest(_sqlite_rows(source))
            with open_postgres(dsn) as target:
                resumed = _copy(target, _sqlite_rows(source), counts, digest, say)
            _switch(repo, dsn)
            source.execute("ROLLBACK")
        except sqlite3.Error as e:
            raise StorageError(f"cannot read {repo.inventory_path}: {e}") from e
        finally:
            source.close()
    return MigrationResult(redact(dsn), counts, digest, resumed)


def _copy(
    target: PostgresInventory,
    rows: Rows,
    counts: dict[str, int],
    digest: str,
    say: Callable[[str], None],
) -> bool:
    """Load every table into ``target`` in one transaction and verify it before
    it commits; True when an earlier run had already copied exactly this."""
    with target.transaction():
        if not target.is_empty():
            if table_digest(target.export_rows) == (counts, digest):
                say("the PostgreSQL inventory already holds this copy")
                return True
            raise RefusedError(
                f"the PostgreSQL inventory {target.location} is not empty and does "
                "not hold a copy of this repository's inventory; nothing was copied"
            )
        for table in TABLES:
            say(f"copying {counts[table]:,} rows of {table}")
            target.load_rows(table, rows(table))
        target.reset_sequences()
        say("verifying the copy")
        copied = table_digest(target.export_rows)
        if copied != (counts, digest):
            raise StorageError(
                f"the copy in {target.location} does not match the SQLite inventory "
                f"(rows {copied[0]} vs {counts}); nothing was copied, the repository "
                "stays on SQLite"
            )
    return False


def _switch(repo: Repository, dsn: str) -> None:
    """The last step: from here on the repository uses PostgreSQL."""
    use_inventory(repo, dsn)
