"""The first import into an empty inventory (indexes and keys built after the load)
leaves the same schema and the same devices as the row-by-row path."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.postgres import pg_dsn, pg_dsn2  # noqa: F401 - fixtures
from tufwaves.errors import InputError
from tufwaves.server.inventory import DeviceRow, postgres_sql, sqlite_sql
from tufwaves.server.inventory.sqlite import SqliteInventory

HEADER = "uuid,hardware_id,tag,groups,installed_version\n"


def _fleet(path: Path, n: int, extra: str = "") -> Path:
    lines = [HEADER]
    for i in range(n):
        groups = ("eu" if i % 2 else "us") + (";lab" if i % 7 == 1 else "")
        version = "" if i % 5 == 0 else str(40 + i % 3)
        lines.append(
            f"{i:08x}-0000-4000-8000-{i * 7919:012x},imx8mm,production,{groups},{version}\n"
        )
    path.write_text("".join(lines) + extra)
    return path


def test_bulk_statements_are_the_schema() -> None:
    for statement in (
        *sqlite_sql.BULK_DEVICE_INDEXES,
        *sqlite_sql.BULK_GROUP_INDEXES,
    ):
        assert statement in sqlite_sql.SCHEMA
    for statement in (postgres_sql.BULK_DEVICE_UNIQUE, *postgres_sql.BULK_INDEXES):
        assert statement in postgres_sql.SCHEMA
    pg_dropped = {s.split()[-1] for s in postgres_sql.BULK_DROP}
    pg_created = {s.split()[5] for s in postgres_sql.BULK_KEYS}
    pg_created |= {s.split()[2] for s in postgres_sql.BULK_INDEXES}
    assert pg_dropped == pg_created | {postgres_sql.BULK_DEVICE_UNIQUE.split()[3]}
    dropped = {s.split()[-1] for s in sqlite_sql.BULK_DROP}
    created = {s.split()[3 if "UNIQUE" in s else 2] for s in sqlite_sql.BULK_DEVICE_INDEXES}
    created |= {s.split()[2] for s in sqlite_sql.BULK_GROUP_INDEXES}
    assert dropped == created


def _sqlite_state(path: Path) -> tuple[Any, ...]:
    conn = sqlite3.connect(path)
    try:
        schema = sorted(conn.execute("SELECT type, name, sql FROM sqlite_schema").fetchall())
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        devices = conn.execute(
            "SELECT d.uuid, d.ring, d.hardware_id, d.tag, d.installed_version, "
            "(SELECT group_concat(g.name, ';') FROM (SELECT g.name FROM device_groups AS dg "
            "JOIN groups AS g ON g.id = dg.group_id WHERE dg.device_id = d.id ORDER BY g.name) "
            "AS g) FROM devices AS d ORDER BY d.uuid"
        ).fetchall()
        ordered = [
            row[0] for row in conn.execute("SELECT uuid FROM devices ORDER BY id").fetchall()
        ]
    finally:
        conn.close()
    return schema, devices, ordered


def test_sqlite_first_import_matches_the_upsert_path(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path / "fleet.csv", 3000)
    with SqliteInventory.open(tmp_path / "bulk.sqlite") as inv:
        first = inv.import_file(fleet)
    with SqliteInventory.open(tmp_path / "rows.sqlite") as inv:
        # one device already there: the import takes the row-by-row path
        _fleet(tmp_path / "one.csv", 1)
        inv.import_file(tmp_path / "one.csv")
        second = inv.import_file(fleet)
    assert (first.rows, first.added, first.updated, first.unchanged) == (3000, 3000, 0, 0)
    assert (second.rows, second.added) == (3000, 2999)
    bulk = _sqlite_state(tmp_path / "bulk.sqlite")
    rows = _sqlite_state(tmp_path / "rows.sqlite")
    assert bulk[0] == rows[0]  # same tables, indexes and their SQL
    assert bulk[1] == rows[1]  # same devices and groups
    assert bulk[2] == sorted(bulk[2])  # devices stored in UUID order
    with SqliteInventory.open(tmp_path / "bulk.sqlite") as inv:
        again = inv.import_file(fleet)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 3000)


def test_sqlite_bad_first_import_leaves_the_schema(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path / "fleet.csv", 50, extra="00000001-0000-4000-8000-000000001eef,x,y,,\n")
    with SqliteInventory.open(tmp_path / "inv.sqlite") as inv:
        with pytest.raises(InputError, match="already given"):
            inv.import_file(fleet)
        assert list(inv.list_devices()) == []
    with SqliteInventory.open(tmp_path / "fresh.sqlite"):
        pass
    assert _sqlite_state(tmp_path / "inv.sqlite")[0] == _sqlite_state(tmp_path / "fresh.sqlite")[0]


def _pg_definitions(dsn: str) -> tuple[list[Any], list[Any]]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        indexes = conn.execute(
            "SELECT indexname, regexp_replace(indexdef, ' ON [a-z0-9_]+\\.', ' ON ') "
            "FROM pg_indexes WHERE schemaname = current_schema() ORDER BY indexname"
        ).fetchall()
        constraints = conn.execute(
            "SELECT c.conname, c.conrelid::regclass::text, pg_get_constraintdef(c.oid) "
            "FROM pg_constraint AS c JOIN pg_namespace AS n ON n.oid = c.connamespace "
            "WHERE n.nspname = current_schema() ORDER BY c.conname"
        ).fetchall()
    return indexes, constraints


def test_postgres_first_import_keeps_indexes_and_keys(
    tmp_path: Path,
    pg_dsn: str,  # noqa: F811 - the fixture
    pg_dsn2: str,  # noqa: F811 - the fixture
) -> None:
    from tufwaves.server.inventory.backend import open_postgres

    fleet = _fleet(tmp_path / "fleet.csv", 2000)
    with open_postgres(pg_dsn) as bulk:
        result = bulk.import_file(fleet)
        devices = [d.to_dict() for d in bulk.list_devices()]
    with open_postgres(pg_dsn2) as rows:
        _fleet(tmp_path / "one.csv", 1)
        rows.import_file(tmp_path / "one.csv")
        rows.import_file(fleet)
        assert [d.to_dict() for d in rows.list_devices()] == devices
    assert (result.rows, result.added) == (2000, 2000)
    assert _pg_definitions(pg_dsn) == _pg_definitions(pg_dsn2)


@pytest.mark.parametrize("group", [None, "eu"])
def test_sqlite_sorted_scan_selects_what_the_walk_selects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, group: str | None
) -> None:
    from tufwaves.server.inventory import Eligibility

    fleet = _fleet(tmp_path / "fleet.csv", 3000)
    e = Eligibility("w", "production", frozenset({"imx8mm"}), 42, group)
    with SqliteInventory.open(tmp_path / "inv.sqlite") as inv:
        inv.import_file(fleet)
        monkeypatch.setattr(sqlite_sql, "SMALL_GROUP", 1)  # the group walk is not taken
        cases = [(k, start) for k in (1, 10, 700, 1400) for start in (-(2**63), -5, 0, 2**62)]
        monkeypatch.setattr(sqlite_sql, "SORTED_SCAN_MIN", 10**9)
        walked = [inv.select_sorted(e, k, start) for k, start in cases]
        monkeypatch.setattr(sqlite_sql, "SORTED_SCAN_MIN", 1)
        scanned = [inv.select_sorted(e, k, start) for k, start in cases]
        assert scanned == walked
        assert scanned == [sorted(inv.select_ring(e, k, start)) for k, start in cases]


def test_postgres_large_ripple_keeps_its_keys(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pg_dsn: str,  # noqa: F811 - the fixture
    pg_dsn2: str,  # noqa: F811 - the fixture
) -> None:
    """A ripple recorded with its foreign keys checked in one pass (dropped and
    added back around the insert) leaves the schema as it was, and so does one
    whose transaction rolls back."""
    from datetime import UTC, datetime

    from tufwaves.server.inventory import Eligibility
    from tufwaves.server.inventory.backend import open_postgres

    monkeypatch.setattr(postgres_sql, "SET_BASED_KEYS_MIN", 1)
    at = datetime(2030, 1, 2, tzinfo=UTC)
    fleet = _fleet(tmp_path / "fleet.csv", 2000)
    e = Eligibility("w", "production", frozenset({"imx8mm"}), 42)
    with open_postgres(pg_dsn2) as fresh:
        fresh.import_file(fleet)
    with open_postgres(pg_dsn) as inv:
        inv.import_file(fleet)
        with pytest.raises(RuntimeError), inv.transaction():
            inv.record_ripple("w", 1, inv.select_sorted(e, 900, 0), {}, "list", ["k"], at)
            raise RuntimeError("the publish failed")
        assert inv.ripples("w") == []
        assert _pg_definitions(pg_dsn) == _pg_definitions(pg_dsn2)
        with inv.transaction():
            chosen = inv.select_sorted(e, 1400, 0)
            inv.record_ripple("w", 1, chosen, {}, "list", ["k"], at)
        assert list(inv.ripple_members("w", 1)) == chosen
        assert len(chosen) == 1400
        with inv.transaction():  # the rest: fewer than a quarter of the table
            rest = inv.select_sorted(e, None, 0)
            inv.record_ripple("w", 2, rest, {}, "list", ["k"], at)
        assert list(inv.ripple_members("w", 2)) == rest
        assert 0 < len(rest) * 4 < len(chosen)
    assert _pg_definitions(pg_dsn) == _pg_definitions(pg_dsn2)


def test_postgres_bad_first_import_names_both_lines_and_leaves_the_schema(
    tmp_path: Path,
    pg_dsn: str,  # noqa: F811 - the fixture
    pg_dsn2: str,  # noqa: F811 - the fixture
) -> None:
    from tufwaves.server.inventory.backend import open_postgres

    # line 3 holds device 1; the extra line (52) gives its UUID again
    fleet = _fleet(tmp_path / "fleet.csv", 50, extra="00000001-0000-4000-8000-000000001eef,x,y,,\n")
    with open_postgres(pg_dsn) as inv:
        with pytest.raises(InputError, match=r"line 52: uuid 00000001-.* on line 3 "):
            inv.import_file(fleet)
        assert list(inv.list_devices()) == []
        assert inv.import_file(_fleet(tmp_path / "good.csv", 50)).added == 50
    with open_postgres(pg_dsn2) as fresh:
        fresh.import_file(_fleet(tmp_path / "good.csv", 50))
    assert _pg_definitions(pg_dsn) == _pg_definitions(pg_dsn2)


def test_postgres_imports_after_a_first_one_take_new_ids(
    tmp_path: Path,
    pg_dsn: str,  # noqa: F811 - the fixture
    pg_dsn2: str,  # noqa: F811 - the fixture
) -> None:
    """The first import sets device and group ids itself; later imports (and a
    new group) draw from the sequences it moved past them."""
    from tufwaves.server.inventory.backend import open_postgres

    more = tmp_path / "more.csv"
    more.write_text(
        HEADER
        + "".join(
            f"{i:08x}-1111-4000-8000-000000000000,imx8mm,production,{g},7\n"
            for i, g in enumerate(["new", "eu;new", "", "us"])
        )
    )
    rows = [
        DeviceRow(
            f"{i:08x}-0000-4000-8000-{i * 7919:012x}",
            "imx8mm",
            "production",
            frozenset({"eu" if i % 2 else "us"}),
        )
        for i in range(30)
    ]
    with open_postgres(pg_dsn) as bulk, open_postgres(pg_dsn2) as one_by_one:
        assert bulk.import_rows(rows) == 30
        one_by_one.import_rows(rows[:1])
        one_by_one.import_rows(rows)
        for inv in (bulk, one_by_one):
            result = inv.import_file(more)
            assert (result.rows, result.added) == (4, 4)
        assert [d.to_dict() for d in bulk.list_devices()] == [
            d.to_dict() for d in one_by_one.list_devices()
        ]
        assert len(list(bulk.list_devices(group="new"))) == 2
