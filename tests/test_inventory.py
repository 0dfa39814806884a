"""The fleet inventory through its public API (SqliteInventory)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import sqlite3
import uuid as uuid_mod
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tufwaves.errors import InputError, RefusedError, StorageError
from tufwaves.server.inventory import (
    DeviceRow,
    Eligibility,
    GroupStatus,
    Inventory,
    canonical_uuid,
    ring_position,
)
from tufwaves.server.inventory.sqlite import SCHEMA_VERSION, SqliteInventory

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
HEADER = "uuid,hardware_id,tag,groups,installed_version\n"
WAVE = Eligibility("w1", "main", frozenset({"rpi4", "imx8"}), 10)


def u(n: int) -> str:
    """A deterministic canonical UUID."""
    return str(uuid_mod.UUID(int=(n << 64) | 0x4000_8000_0000_0000 | n))


def row(n: int, **fields: Any) -> DeviceRow:
    base: dict[str, Any] = {
        "uuid": u(n),
        "hardware_id": "rpi4",
        "tag": "main",
        "groups": frozenset({"lab"}),
        "installed_version": 1,
    }
    base.update(fields)
    return DeviceRow(**base)


def write_csv(path: Path, *lines: str) -> Path:
    path.write_text(HEADER + "".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, to compare a database before and after."""
    with sqlite3.connect(path) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name"
            )
        ]
        return {
            table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall())  # noqa: S608
            for table in tables
        }


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "inventory.sqlite"


@pytest.fixture
def inv(db: Path) -> Iterator[SqliteInventory]:
    with SqliteInventory.open(db) as inventory:
        yield inventory


def record(inv: Inventory, index: int, uuids: list[str], wave: str = "w1") -> None:
    inv.record_ripple(
        wave,
        index,
        sorted(uuids),
        selector={"limit": len(uuids)},
        encoding="list",
        key_ids=["k1"],
        at=T0,
    )


# -- the file -----------------------------------------------------------------


def test_new_file_has_schema_version_wal_and_indexes(inv: SqliteInventory, db: Path) -> None:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        indexes = {
            name for (name,) in conn.execute("SELECT name FROM sqlite_schema WHERE type='index'")
        }
    assert {"devices_uuid", "devices_tag_ring", "selections_ripple"} <= indexes


def test_reopen_keeps_devices(db: Path) -> None:
    with SqliteInventory.open(db) as first:
        first.import_rows([row(1)])
    with SqliteInventory.open(db) as second:
        assert second.get(u(1)) is not None


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("CREATE TABLE other (x)", "not a tufwaves inventory"),
        ("PRAGMA user_version = 99", "upgrade tufwaves"),
    ],
    ids=["foreign-database", "newer-schema"],
)
def test_open_refuses_a_database_it_does_not_know(db: Path, setup: str, message: str) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(setup)
    with pytest.raises(StorageError, match=message):
        SqliteInventory.open(db)


def test_open_refuses_a_file_that_is_not_sqlite(db: Path) -> None:
    db.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StorageError, match="not an SQLite database"):
        SqliteInventory.open(db)


# -- import -------------------------------------------------------------------


def test_import_csv(inv: SqliteInventory, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "devices.csv",
        f"{u(1)},rpi4,main,lab;fleet-a,3",
        f"{u(2)},imx8,main,,",
        "",
        f"{u(3)},imx8,devel,fleet-a,0",
    )
    result = inv.import_file(path)
    assert (result.format, result.rows, result.added, result.updated) == ("csv", 3, 3, 0)
    one = inv.get(u(1))
    assert one is not None
    assert (one.hardware_id, one.tag, one.groups, one.installed_version, one.last_seen) == (
        "rpi4",
        "main",
        frozenset({"lab", "fleet-a"}),
        3,
        None,
    )
    two = inv.get(u(2))
    assert two is not None
    assert (two.groups, two.installed_version) == (frozenset(), None)


@pytest.mark.parametrize("name", ["devices.jsonl", "devices.ndjson", "devices.txt"])
def test_import_json_lines(inv: SqliteInventory, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    lines = [
        {"uuid": u(1), "hardware_id": "rpi4", "tag": "main", "groups": ["a", "b"]},
        {"uuid": u(2), "hardware_id": "imx8", "tag": "main", "installed_version": 7},
        {
            "uuid": u(3),
            "hardware_id": "imx8",
            "tag": "main",
            "groups": [],
            "installed_version": None,
        },
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    result = inv.import_file(path)
    assert (result.format, result.rows, result.added) == ("jsonl", 3, 3)
    first, second = inv.get(u(1)), inv.get(u(2))
    assert first is not None and first.groups == frozenset({"a", "b"})
    assert second is not None and second.installed_version == 7


def test_csv_detected_by_content(inv: SqliteInventory, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "devices.txt", f"{u(1)},rpi4,main,,")
    assert inv.import_file(path).format == "csv"


def test_quoted_csv_fields_are_accepted(inv: SqliteInventory, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "devices.csv", f'"{u(1)}","rpi4","main","a;b","4"')
    inv.import_file(path)
    device = inv.get(u(1))
    assert device is not None and device.groups == frozenset({"a", "b"})


def test_reimport_is_idempotent(inv: SqliteInventory, db: Path, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", f"{u(1)},rpi4,main,lab,3", f"{u(2)},imx8,main,,")
    inv.import_file(path)
    before = dump(db)
    again = inv.import_file(path)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 2)
    assert dump(db) == before


def test_reimport_replaces_groups_and_keeps_a_known_version(
    inv: SqliteInventory, tmp_path: Path
) -> None:
    inv.import_rows([row(1, groups=frozenset({"a", "b"}), installed_version=5)])
    inv.import_file(write_csv(tmp_path / "d.csv", f"{u(1)},imx8,devel,c,"))
    device = inv.get(u(1))
    assert device is not None
    assert (device.hardware_id, device.tag, device.groups, device.installed_version) == (
        "imx8",
        "devel",
        frozenset({"c"}),
        5,
    )


GOOD = f"{u(9)},rpi4,main,lab,1"

BAD_CSV = [
    ("header", "uuid,hardware_id,tag,groups\n" + GOOD, 1, "header must be exactly"),
    ("uuid-braces", HEADER + "{" + u(1) + "},rpi4,main,,", 2, "not an 8-4-4-4-12 UUID"),
    ("uuid-no-dashes", HEADER + u(1).replace("-", "") + ",rpi4,main,,", 2, "UUID"),
    ("too-few-fields", HEADER + GOOD + "\n" + u(1) + ",rpi4,main", 3, "expected 5 fields"),
    ("too-many-fields", HEADER + u(1) + ",rpi4,main,,1,x", 2, "expected 5 fields"),
    ("hardware-id", HEADER + u(1) + ",rpi 4,main,,", 2, "hardware_id 'rpi 4'"),
    ("empty-tag", HEADER + u(1) + ",rpi4,,,", 2, "tag ''"),
    ("group", HEADER + u(1) + ",rpi4,main,lab;;x,", 2, "group ''"),
    ("version-negative", HEADER + u(1) + ",rpi4,main,,-1", 2, "installed_version '-1'"),
    ("version-leading-zero", HEADER + u(1) + ",rpi4,main,,01", 2, "installed_version '01'"),
    ("version-too-big", HEADER + u(1) + ",rpi4,main,,9223372036854775808", 2, "from 0 to"),
    ("unclosed-quote", HEADER + GOOD + '\n"' + u(1) + ",rpi4,main,,", 3, "bad CSV"),
    ("duplicate-uuid", HEADER + GOOD + "\n" + u(1) + ",a,b,,\n" + GOOD, 4, "already given on"),
]

BAD_JSONL = [
    ("not-json", "{nope", 1, "not JSON"),
    ("not-object", "[1, 2]", 1, "expected a JSON object"),
    ("missing-tag", json.dumps({"uuid": u(1), "hardware_id": "rpi4"}), 1, "missing field 'tag'"),
    (
        "unknown-field",
        json.dumps({"uuid": u(1), "hardware_id": "h", "tag": "t", "color": 1}),
        1,
        "unknown field 'color'",
    ),
    (
        "groups-string",
        json.dumps({"uuid": u(1), "hardware_id": "h", "tag": "t", "groups": "lab"}),
        1,
        "groups must be a list",
    ),
    (
        "version-string",
        json.dumps({"uuid": u(1), "hardware_id": "h", "tag": "t", "installed_version": "3"}),
        1,
        "must be an integer or null",
    ),
    (
        "version-bool",
        json.dumps({"uuid": u(1), "hardware_id": "h", "tag": "t", "installed_version": True}),
        1,
        "must be an integer or null",
    ),
    (
        "uuid-number",
        "\n" + json.dumps({"uuid": 5, "hardware_id": "h", "tag": "t"}),
        2,
        "is not a device UUID",
    ),
]


@pytest.mark.parametrize(
    ("suffix", "content", "line", "message"),
    [(".csv", c, n, m) for _, c, n, m in BAD_CSV]
    + [(".jsonl", c, n, m) for _, c, n, m in BAD_JSONL],
    ids=[f"csv-{name}" for name, *_ in BAD_CSV] + [f"jsonl-{name}" for name, *_ in BAD_JSONL],
)
def test_bad_row_names_the_line_and_imports_nothing(
    inv: SqliteInventory,
    db: Path,
    tmp_path: Path,
    suffix: str,
    content: str,
    line: int,
    message: str,
) -> None:
    inv.import_rows([row(1), row(2, groups=frozenset({"other"}))])
    before = dump(db)
    path = tmp_path / f"bad{suffix}"
    path.write_text(content + "\n", encoding="utf-8")
    with pytest.raises(InputError) as raised:
        inv.import_file(path)
    text = str(raised.value)
    assert f"{path} line {line}:" in text
    assert message in text
    assert "nothing from this file was imported" in text or "nothing was imported" in text
    assert dump(db) == before


def test_bad_row_late_in_a_big_file_imports_nothing(
    inv: SqliteInventory, db: Path, tmp_path: Path
) -> None:
    before = dump(db)
    lines = [f"{u(n)},rpi4,main,lab,1" for n in range(1, 120_001)]
    lines.append("garbage")
    path = write_csv(tmp_path / "big.csv", *lines)
    with pytest.raises(InputError, match=r"line 120002: expected 5 fields"):
        inv.import_file(path)
    assert dump(db) == before


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (row(1, uuid="not-a-uuid"), "is not a device UUID"),
        (row(1, hardware_id="-rpi"), "hardware_id '-rpi'"),
        (row(1, tag="x" * 65), "tag 'xxx"),
        (row(1, groups=frozenset({"a b"})), "group 'a b'"),
        (row(1, installed_version=-1), "installed_version -1"),
        (row(1, installed_version=True), "installed_version True"),
    ],
    ids=["uuid", "hardware-id", "tag-too-long", "group", "negative-version", "bool-version"],
)
def test_import_rows_rejects_bad_rows(
    inv: SqliteInventory, db: Path, bad: DeviceRow, message: str
) -> None:
    before = dump(db)
    with pytest.raises(InputError, match="row 2: ") as raised:
        inv.import_rows([row(5), bad])
    assert message in str(raised.value)
    assert dump(db) == before


def test_import_missing_file(inv: SqliteInventory, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is not a file"):
        inv.import_file(tmp_path / "missing.csv")


def test_import_reports_progress(inv: SqliteInventory) -> None:
    seen: list[int] = []
    inv.import_rows((row(n) for n in range(1, 120_001)), progress=seen.append)
    assert seen[-1] == 120_000
    assert seen == sorted(seen) and len(seen) >= 3


def test_import_200k_devices(inv: SqliteInventory, tmp_path: Path) -> None:
    # Throughput is measured by bench/ (inventory import), not asserted here.
    n = 200_000
    lines = [
        f"{u(i)},{('rpi4', 'imx8')[i % 2]},main,{('lab', 'a;b', '')[i % 3]},{i % 7}"
        for i in range(1, n + 1)
    ]
    path = write_csv(tmp_path / "fleet.csv", *lines)
    result = inv.import_file(path)
    assert result.added == n
    assert inv.count_eligible(WAVE) == n


# -- UUIDs --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "123E4567-E89B-12D3-A456-426614174000",
        "123e4567-E89B-12d3-a456-426614174000",
        "123e4567-e89b-12d3-a456-426614174000",
    ],
    ids=["upper", "mixed", "lower"],
)
def test_uuid_is_normalised_to_lowercase(inv: SqliteInventory, text: str) -> None:
    assert canonical_uuid(text) == "123e4567-e89b-12d3-a456-426614174000"
    inv.import_rows([row(0, uuid=text)])
    device = inv.get(text.upper())
    assert device is not None and device.uuid == "123e4567-e89b-12d3-a456-426614174000"


@pytest.mark.parametrize(
    "text",
    [
        "{123e4567-e89b-12d3-a456-426614174000}",
        "urn:uuid:123e4567-e89b-12d3-a456-426614174000",
        "123e4567e89b12d3a456426614174000",
        " 123e4567-e89b-12d3-a456-426614174000",
        "123e4567-e89b-12d3-a456-42661417400g",
        "123e4567-e89b-12d3-a456-4266141740000",
        "",
    ],
    ids=["braces", "urn", "no-dashes", "space", "non-hex", "too-long", "empty"],
)
def test_non_canonical_uuid_forms_are_refused(text: str) -> None:
    with pytest.raises(InputError, match="is not a device UUID"):
        canonical_uuid(text)


@given(st.uuids())
def test_ring_position_is_the_sha256_prefix(value: uuid_mod.UUID) -> None:
    expected = int.from_bytes(hashlib.sha256(value.bytes).digest()[:8], "big", signed=True)
    assert ring_position(str(value).upper()) == expected


NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}", fullmatch=True)
ROWS = st.builds(
    DeviceRow,
    uuid=st.uuids().map(str),
    hardware_id=NAMES,
    tag=NAMES,
    groups=st.frozensets(NAMES, max_size=4),
    installed_version=st.none() | st.integers(min_value=0, max_value=2**63 - 1),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(ROWS, min_size=1, max_size=8, unique_by=lambda r: r.uuid))
def test_rows_round_trip_through_import_and_get(tmp_path: Path, rows: list[DeviceRow]) -> None:
    path = tmp_path / f"{uuid_mod.uuid4()}.sqlite"
    with SqliteInventory.open(path) as inventory:
        assert inventory.import_rows(rows) == len(rows)
        for given_row in rows:
            device = inventory.get(given_row.uuid)
            assert device is not None
            assert (
                device.uuid,
                device.hardware_id,
                device.tag,
                device.groups,
                device.installed_version,
            ) == (
                given_row.uuid.lower(),
                given_row.hardware_id,
                given_row.tag,
                given_row.groups,
                given_row.installed_version,
            )


# -- report, get, list --------------------------------------------------------


def test_report_records_version_and_whole_second_time(inv: SqliteInventory) -> None:
    inv.import_rows([row(1, installed_version=None)])
    at = T0.replace(microsecond=987_654)
    device = inv.report(u(1).upper(), 12, at=at)
    assert device.installed_version == 12
    assert device.last_seen == T0
    assert inv.get(u(1)) == device


def test_report_unknown_device(inv: SqliteInventory) -> None:
    with pytest.raises(InputError, match="not in the inventory; import it first"):
        inv.report(u(1), 3)


@pytest.mark.parametrize(
    ("version", "at"),
    [(-1, T0), (2**63, T0), (True, T0), (1, datetime(2030, 1, 1))],
    ids=["negative", "too-big", "bool", "naive-time"],
)
def test_report_rejects_bad_input(inv: SqliteInventory, version: Any, at: datetime) -> None:
    inv.import_rows([row(1)])
    with pytest.raises(InputError):
        inv.report(u(1), version, at=at)


def test_get_unknown_is_none(inv: SqliteInventory) -> None:
    assert inv.get(u(404)) is None


def test_list_devices_filters_and_orders(inv: SqliteInventory) -> None:
    inv.import_rows(
        [
            row(3, groups=frozenset({"lab"})),
            row(1, groups=frozenset({"lab", "x"}), tag="devel"),
            row(2, groups=frozenset()),
        ]
    )
    assert [d.uuid for d in inv.list_devices()] == [u(1), u(2), u(3)]
    assert [d.uuid for d in inv.list_devices(group="lab")] == [u(1), u(3)]
    assert [d.uuid for d in inv.list_devices(group="lab", tag="main")] == [u(3)]
    assert [d.uuid for d in inv.list_devices(limit=2)] == [u(1), u(2)]
    assert list(inv.list_devices(group="nobody")) == []


# -- eligibility --------------------------------------------------------------

# Each case: the device (n=1) as imported, whether ripple 1 of w1 took it, the
# wave's group, and the reason it is not eligible (None = eligible).
ELIGIBILITY = [
    ("eligible", {}, False, None, None),
    ("unknown-version-eligible", {"installed_version": None}, False, None, None),
    ("older-version-eligible", {"installed_version": 9}, False, None, None),
    ("other-tag", {"tag": "devel"}, False, None, "tag is devel, wave is for main"),
    ("other-hardware", {"hardware_id": "x86"}, False, None, "hardware id x86 not in the wave"),
    ("same-version", {"installed_version": 10}, False, None, "already runs version 10"),
    ("newer-version", {"installed_version": 11}, False, None, "already runs version 11"),
    ("selected", {}, True, None, "selected by ripple 1"),
    ("in-group", {"groups": frozenset({"lab"})}, False, "lab", None),
    ("not-in-group", {"groups": frozenset({"other"})}, False, "lab", "not in group lab"),
    ("no-groups", {"groups": frozenset()}, False, "lab", "not in group lab"),
]


@pytest.mark.parametrize(
    ("fields", "selected", "group", "reason"),
    [case[1:] for case in ELIGIBILITY],
    ids=[case[0] for case in ELIGIBILITY],
)
def test_eligibility_rules(
    inv: SqliteInventory,
    fields: dict[str, Any],
    selected: bool,
    group: str | None,
    reason: str | None,
) -> None:
    inv.import_rows([row(1, **fields), row(2)])
    if selected:
        record(inv, 1, [u(1)])
    wave = Eligibility("w1", "main", frozenset({"rpi4", "imx8"}), 10, group=group)
    eligible = reason is None
    assert (u(1) in inv.select_all(wave)) is eligible
    assert (u(1) in inv.select_ring(wave, 10, 0)) is eligible
    assert (u(1) in inv.select_ring(wave, 10, 0, within=[u(1)])) is eligible
    assert inv.count_eligible(wave) == (1 if eligible else 0) + 1  # row 2 is in "lab"
    explained = inv.explain_ineligible(wave, [u(1).upper()])
    assert explained == ({} if eligible else {u(1): reason})


def test_explain_not_in_inventory(inv: SqliteInventory) -> None:
    assert inv.explain_ineligible(WAVE, [u(7)]) == {u(7): "not in the inventory"}


def test_explain_rejects_a_bad_uuid(inv: SqliteInventory) -> None:
    with pytest.raises(InputError, match="not a device UUID"):
        inv.explain_ineligible(WAVE, ["nope"])


def test_selection_by_another_wave_does_not_count(inv: SqliteInventory) -> None:
    inv.import_rows([row(1)])
    record(inv, 1, [u(1)], wave="w0")
    assert inv.select_all(WAVE) == [u(1)]


@pytest.mark.parametrize(
    ("wave", "tag", "hardware_ids", "version", "group"),
    [
        ("w.1", "main", frozenset({"h"}), 1, None),
        ("w1", "", frozenset({"h"}), 1, None),
        ("w1", "main", frozenset(), 1, None),
        ("w1", "main", frozenset({"h h"}), 1, None),
        ("w1", "main", frozenset({"h"}), -1, None),
        ("w1", "main", frozenset({"h"}), 1, "a/b"),
    ],
    ids=["wave-name", "tag", "no-hardware", "hardware-id", "version", "group"],
)
def test_eligibility_validates(
    wave: str, tag: str, hardware_ids: frozenset[str], version: int, group: str | None
) -> None:
    with pytest.raises(InputError):
        Eligibility(wave, tag, hardware_ids, version, group)


# -- ring selection -----------------------------------------------------------


@pytest.fixture
def fleet(inv: SqliteInventory) -> SqliteInventory:
    inv.import_rows(
        row(n, groups=frozenset({"small"} if n % 50 == 0 else {"big"})) for n in range(1, 2001)
    )
    return inv


def test_ring_selection_follows_the_ring(fleet: SqliteInventory) -> None:
    start = ring_position(u(77))
    picked = fleet.select_ring(WAVE, 10, start)
    positions = [ring_position(p) for p in picked]
    assert picked[0] == u(77)
    assert positions == sorted(positions) and all(p >= start for p in positions)
    everyone = sorted(
        (ring_position(d.uuid), d.uuid)
        for d in fleet.list_devices()
        if ring_position(d.uuid) >= start
    )
    assert picked == [uuid for _, uuid in everyone[:10]]


def test_ring_selection_is_reproducible_and_depends_on_start(fleet: SqliteInventory) -> None:
    first = fleet.select_ring(WAVE, 25, 12345)
    assert fleet.select_ring(WAVE, 25, 12345) == first
    assert len(set(first)) == 25
    assert set(fleet.select_ring(WAVE, 25, -(2**62))) != set(first)


def test_ring_selection_wraps_around(fleet: SqliteInventory) -> None:
    top = max(ring_position(d.uuid) for d in fleet.list_devices())
    picked = fleet.select_ring(WAVE, 3, top)
    assert ring_position(picked[0]) == top
    assert ring_position(picked[1]) == min(ring_position(d.uuid) for d in fleet.list_devices())
    assert len(fleet.select_ring(WAVE, 5000, 0)) == 2000


def test_ring_selection_skips_selected_devices(fleet: SqliteInventory) -> None:
    first = fleet.select_ring(WAVE, 10, 0)
    record(fleet, 1, first)
    second = fleet.select_ring(WAVE, 10, 0)
    assert not set(first) & set(second)
    assert fleet.count_eligible(WAVE) == 1990


@pytest.mark.parametrize("group", ["small", "big"], ids=["small-group", "big-group"])
def test_ring_selection_in_a_group(fleet: SqliteInventory, group: str) -> None:
    wave = Eligibility("w1", "main", frozenset({"rpi4"}), 10, group=group)
    picked = fleet.select_ring(wave, 15, 99)
    members = {d.uuid for d in fleet.list_devices(group=group)}
    assert len(picked) == 15 and set(picked) <= members
    positions = [ring_position(p) for p in picked]
    wrap = next((i for i, p in enumerate(positions) if p < 99), len(positions))
    assert positions[:wrap] == sorted(positions[:wrap])
    assert fleet.select_all(wave) == sorted(members)
    assert fleet.count_eligible(wave) == len(members)


def test_within_restricts_the_choice(fleet: SqliteInventory) -> None:
    listed = [u(n) for n in (3, 5, 8, 13, 21)] + [u(99_999)]
    picked = fleet.select_ring(WAVE, 3, 0, within=[x.upper() for x in listed])
    assert len(picked) == 3 and set(picked) <= set(listed[:5])
    assert fleet.select_ring(WAVE, 3, 0, within=listed) == picked
    assert fleet.select_ring(WAVE, 10, 0, within=[]) == []
    # The restriction is gone for the next call.
    assert len(fleet.select_ring(WAVE, 10, 0)) == 10


@pytest.mark.parametrize(
    ("k", "start"),
    [(-1, 0), (True, 0), (1, 2**63), (1, -(2**63) - 1)],
    ids=["negative-k", "bool-k", "start-too-big", "start-too-small"],
)
def test_select_ring_validates(fleet: SqliteInventory, k: Any, start: int) -> None:
    with pytest.raises(InputError):
        fleet.select_ring(WAVE, k, start)


# -- ripples ------------------------------------------------------------------


def test_record_ripple_and_read_it_back(fleet: SqliteInventory) -> None:
    members = sorted(fleet.select_ring(WAVE, 4, 0))
    fleet.record_ripple(
        "w1",
        1,
        members,
        selector={"limit": 4, "seed": "abc"},
        encoding="list",
        key_ids=["k1", "k2"],
        at=T0,
    )
    (ripple,) = fleet.ripples("w1")
    assert (ripple.wave, ripple.index, ripple.created, ripple.devices, ripple.encoding) == (
        "w1",
        1,
        T0,
        4,
        "list",
    )
    assert ripple.selector_data == {"limit": 4, "seed": "abc"}
    assert list(fleet.ripple_members("w1", 1)) == members
    assert fleet.selected_ripple("w1", members[0].upper()) == 1
    assert fleet.selected_ripple("w1", u(1999)) in (None, 1)
    assert fleet.device_selections(members[0]) == [("w1", 1)]
    entry = fleet.audit_log()[-1]
    assert (entry.action, entry.key_ids) == ("ripple", ("k1", "k2"))
    assert entry.arguments_data["ripple"] == 1


def test_double_selection_aborts_the_whole_ripple(fleet: SqliteInventory, db: Path) -> None:
    record(fleet, 1, [u(1), u(2)])
    before = dump(db)
    with pytest.raises(RefusedError, match=f"device {u(2)} was already selected by ripple 1"):
        record(fleet, 2, [u(2), u(3)])
    assert dump(db) == before
    assert fleet.selected_ripple("w1", u(3)) is None
    assert [r.index for r in fleet.ripples("w1")] == [1]


@pytest.mark.parametrize(
    ("uuids", "index", "error", "message"),
    [
        ([u(2), u(1)], 2, InputError, "sorted and unique"),
        ([u(1), u(1)], 2, InputError, "sorted and unique"),
        ([u(1), u(99_999)], 2, InputError, "not in the inventory"),
        ([u(5)], 1, RefusedError, "already recorded"),
        ([u(5)], 0, InputError, "ripple index"),
    ],
    ids=["unsorted", "duplicate", "unknown-device", "same-index", "index-zero"],
)
def test_record_ripple_refuses(
    fleet: SqliteInventory,
    db: Path,
    uuids: list[str],
    index: int,
    error: type[Exception],
    message: str,
) -> None:
    record(fleet, 1, [u(10)])
    before = dump(db)
    with pytest.raises(error, match=message):
        fleet.record_ripple("w1", index, uuids, selector={}, encoding="list", key_ids=[], at=T0)
    assert dump(db) == before


def _rollout_worker(path: str, barrier: Any, results: Any, rounds: int) -> None:
    picked: list[str] = []
    with SqliteInventory.open(path) as inventory:
        barrier.wait()
        for _ in range(rounds):
            with inventory.transaction():
                index = len(inventory.ripples("w1")) + 1
                uuids = sorted(inventory.select_ring(WAVE, 5, 0))
                inventory.record_ripple(
                    "w1", index, uuids, selector={}, encoding="list", key_ids=[], at=T0
                )
            picked.extend(uuids)
    results.put(picked)


def test_two_processes_never_pick_the_same_device(fleet: SqliteInventory, db: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    rounds = 8
    workers = [
        ctx.Process(target=_rollout_worker, args=(str(db), barrier, results, rounds))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    picks = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    everything = picks[0] + picks[1]
    assert len(everything) == 2 * rounds * 5
    assert len(set(everything)) == len(everything)
    assert [r.index for r in fleet.ripples("w1")] == list(range(1, 2 * rounds + 1))


def test_nested_transaction_rolls_back_only_its_part(inv: SqliteInventory) -> None:
    with inv.transaction():
        inv.import_rows([row(1)])
        with pytest.raises(InputError):
            inv.import_rows([row(2), row(3, tag="")])
    assert inv.get(u(1)) is not None
    assert inv.get(u(2)) is None


def test_transaction_rolls_back_on_error(inv: SqliteInventory) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), inv.transaction():
        inv.import_rows([row(1)])
        raise Boom
    assert inv.get(u(1)) is None


def test_a_busy_inventory_is_a_storage_error(inv: SqliteInventory, db: Path) -> None:
    with (
        SqliteInventory.open(db, timeout=0.1) as other,
        inv.transaction(),
        pytest.raises(StorageError, match="busy"),
    ):
        other.import_rows([row(1)])


# -- status -------------------------------------------------------------------


def test_status_counts(inv: SqliteInventory) -> None:
    inv.import_rows(
        [
            row(1, groups=frozenset({"a"})),  # eligible, then selected
            row(2, groups=frozenset({"a", "b"})),  # eligible
            row(3, groups=frozenset({"b"}), installed_version=10),  # updated
            row(4, groups=frozenset({"b"}), tag="devel"),  # other tag
            row(5, groups=frozenset()),  # eligible, ungrouped
            row(6, groups=frozenset(), hardware_id="x86", installed_version=12),  # other hw
        ]
    )
    record(inv, 1, [u(1)])
    assert inv.status(WAVE) == [
        GroupStatus("group", "a", total=2, eligible=1, selected=1, updated=0),
        GroupStatus("group", "b", total=3, eligible=1, selected=0, updated=1),
        GroupStatus("ungrouped", None, total=2, eligible=1, selected=0, updated=0),
        GroupStatus("total", None, total=6, eligible=2, selected=1, updated=1),
    ]


# -- audit --------------------------------------------------------------------


def test_audit_log_appends_and_reads_back(inv: SqliteInventory) -> None:
    first = inv.audit("cancel", ["k1"], {"wave": "w1"}, at=T0)
    second = inv.audit("complete", [], {"wave": "w2"})
    log = inv.audit_log()
    assert [e.id for e in log] == [first.id, second.id]
    assert log[0] == first
    assert log[0].arguments_data == {"wave": "w1"}
    assert inv.audit_log(limit=1) == [second]


@pytest.mark.parametrize(
    "statement",
    ["UPDATE audit SET action = 'x'", "DELETE FROM audit"],
    ids=["update", "delete"],
)
def test_audit_log_refuses_update_and_delete(
    inv: SqliteInventory, db: Path, statement: str
) -> None:
    inv.audit("cancel", ["k1"], {"wave": "w1"}, at=T0)
    with sqlite3.connect(db) as conn, pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute(statement)
    assert len(inv.audit_log()) == 1


def test_audit_rejects_what_is_not_json(inv: SqliteInventory) -> None:
    with pytest.raises(InputError, match="as JSON"):
        inv.audit("x", [], {"when": object()})
