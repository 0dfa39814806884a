"""Large CSV device files are parsed by worker processes, a block of lines each:
the rows, their line numbers and the first error are those of reading the file
in this process, whatever the line endings and wherever the blocks split."""

from __future__ import annotations

import csv
import io
import itertools
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.postgres import pg_dsn, pg_dsn2  # noqa: F401 - fixtures
from tufwaves.errors import InputError
from tufwaves.server.inventory import DeviceRow, normalise_row, readers
from tufwaves.server.inventory.sqlite import SqliteInventory

HEADER = "uuid,hardware_id,tag,groups,installed_version"


def _uuid(i: int) -> str:
    return f"{i:08x}-0000-4000-8000-{i * 7919:012x}"


def _read(path: Path, parallel: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, ...]:
    """('rows', chunk count, [(line, row)]) or ('error', message); in parallel,
    two workers read blocks of about 150 bytes."""
    with monkeypatch.context() as m:
        m.setattr(readers, "PARALLEL_WORKERS", 2)
        m.setattr(readers, "BLOCK_BYTES", 150)
        m.setattr(readers, "PARALLEL_MIN_BYTES", 0 if parallel else 1 << 62)
        try:
            chunks = list(readers.device_file_chunks(path, "csv", None)(list))
        except InputError as e:
            return ("error", str(e))
    rows = [(line, tuple(row)) for _, chunk in chunks for line, row in chunk]
    assert [done for done, _ in chunks] == list(itertools.accumulate(len(c) for _, c in chunks))
    return ("rows", len(chunks), rows)


def _oracle(text: str) -> list[tuple[int, tuple[Any, ...]]]:
    """The rows of a good file, read with the csv module and normalise_row."""
    rows = []
    lines = io.StringIO(text.removeprefix("\ufeff"), newline="")
    for line, fields in enumerate(csv.reader(lines), start=1):
        if line == 1 or not fields:
            continue
        uuid, hardware_id, tag, groups, version = fields
        row = DeviceRow(
            uuid,
            hardware_id,
            tag,
            frozenset(groups.split(";")) if groups else frozenset(),
            int(version) if version else None,
        )
        rows.append((line, tuple(normalise_row(row))))
    return rows


def test_a_good_file_reads_the_same_in_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [HEADER]
    for i in range(300):
        groups = ["", "eu", "lab;eu;eu", "us"][i % 4]
        version = "" if i % 3 == 0 else str(i)
        uuid = _uuid(i).upper() if i % 5 == 0 else _uuid(i)
        lines.append(f"{uuid},imx8mm,production,{groups},{version}")
    path = tmp_path / "fleet.csv"
    path.write_text("\r\n".join(lines) + "\r\n")
    serial = _read(path, False, monkeypatch)
    blocks = _read(path, True, monkeypatch)
    assert serial[0] == blocks[0] == "rows"
    assert serial[1] == 1 < blocks[1]  # one chunk here, one per block there
    assert serial[2] == blocks[2] == _oracle(path.read_text())


GOOD = st.integers(0, 2**20).map(lambda i: f"{_uuid(i)},rpi4,production,eu,{i % 7}")
LINE = st.one_of(
    GOOD,
    GOOD.map(str.upper),
    st.integers(0, 99).map(lambda i: f'"{_uuid(i)}","rpi4",production,"eu;us",'),
    st.just(""),
    st.just("not-a-uuid,rpi4,production,,"),
    st.just(f"{_uuid(1)},rpi4,production,,99999999999999999999"),
    st.just(f"{_uuid(2)},rpi4,production"),
    st.just(f"{_uuid(3)},rpi 4,production,,"),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(st.tuples(LINE, st.sampled_from(["\n", "\r\n", "\r"])), max_size=40),
    bom=st.booleans(),
    last_end=st.booleans(),
)
def test_blocks_read_what_the_file_reads(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    lines: list[tuple[str, str]],
    bom: bool,
    last_end: bool,
) -> None:
    text = ("\ufeff" if bom else "") + HEADER + "\n" + "".join(t + end for t, end in lines)
    if lines and not last_end:
        text = text.removesuffix(lines[-1][1])
    path = tmp_path / "fleet.csv"
    path.write_bytes(text.encode())
    serial = _read(path, False, monkeypatch)
    blocks = _read(path, True, monkeypatch)
    assert serial[0] == blocks[0]
    if serial[0] == "error":
        assert serial[1] == blocks[1]
    else:
        assert serial[2] == blocks[2] == _oracle(text)


def test_an_error_in_a_late_block_names_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [HEADER] + [f"{_uuid(i)},rpi4,production,eu," for i in range(200)]
    lines[150] = f"{_uuid(150)},rpi4,production,eu,01"
    lines[170] = "garbage"
    path = tmp_path / "fleet.csv"
    path.write_text("\n".join(lines) + "\n")
    for parallel in (False, True):
        kind, message = _read(path, parallel, monkeypatch)
        assert kind == "error"
        assert f"{path} line 151: installed_version '01'" in message
    path.write_bytes(path.read_bytes().replace(b"garbage", b"\xff\xfe"))
    lines[150] = f"{_uuid(150)},rpi4,production,eu,1"
    path.write_bytes(("\n".join(lines[:170]) + "\n").encode() + b"\xff\n")
    for parallel in (False, True):
        kind, message = _read(path, parallel, monkeypatch)
        assert (kind, message.split(" (")[0]) == ("error", f"{path}: not UTF-8 text")


def _fleet(path: Path, n: int) -> Path:
    lines = [HEADER]
    for i in range(n):
        groups = ("eu" if i % 2 else "us") + (";lab" if i % 7 == 1 else "")
        lines.append(f"{_uuid(i)},imx8mm,production,{groups},{'' if i % 5 == 0 else i % 3}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _sqlite_devices(path: Path) -> list[Any]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT d.id, d.uuid, d.ring, d.hardware_id, d.tag, d.installed_version, "
            "(SELECT group_concat(g.name) FROM device_groups AS dg JOIN groups AS g "
            "ON g.id = dg.group_id WHERE dg.device_id = d.id) FROM devices AS d ORDER BY d.id"
        ).fetchall()
    finally:
        conn.close()


def test_sqlite_imports_a_file_read_in_blocks_as_one_read_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = _fleet(tmp_path / "fleet.csv", 500)
    with SqliteInventory.open(tmp_path / "serial.sqlite") as inv:
        inv.import_file(fleet)
    monkeypatch.setattr(readers, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(readers, "PARALLEL_WORKERS", 2)
    monkeypatch.setattr(readers, "BLOCK_BYTES", 1000)
    done: list[int] = []
    with SqliteInventory.open(tmp_path / "blocks.sqlite") as inv:
        result = inv.import_file(fleet, progress=done.append)
        assert (result.rows, result.added) == (500, 500)
        assert inv.import_file(fleet).unchanged == 500  # the staging path, in blocks too
    assert len(done) > 1 and done[-1] == 500
    assert _sqlite_devices(tmp_path / "blocks.sqlite") == _sqlite_devices(
        tmp_path / "serial.sqlite"
    )


def test_postgres_imports_a_file_read_in_blocks_as_one_read_here(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pg_dsn: str,  # noqa: F811 - the fixture
    pg_dsn2: str,  # noqa: F811 - the fixture
) -> None:
    from tufwaves.server.inventory.backend import open_postgres

    fleet = _fleet(tmp_path / "fleet.csv", 500)
    with open_postgres(pg_dsn) as inv:
        inv.import_file(fleet)
        serial = [d.to_dict() for d in inv.list_devices()]
    monkeypatch.setattr(readers, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(readers, "PARALLEL_WORKERS", 2)
    monkeypatch.setattr(readers, "BLOCK_BYTES", 1000)
    with open_postgres(pg_dsn2) as inv:
        assert inv.import_file(fleet).added == 500
        assert [d.to_dict() for d in inv.list_devices()] == serial
        assert inv.import_file(fleet).rows == 500  # the staging path, in blocks too
        assert [d.to_dict() for d in inv.list_devices()] == serial
