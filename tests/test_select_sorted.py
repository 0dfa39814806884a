"""SqliteInventory's rollout path: select_sorted / record_ripple give exactly
what select_ring / select_all / record_ripple give."""

from __future__ import annotations

import sqlite3
import uuid as uuid_mod
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tufwaves.errors import InputError, RefusedError
from tufwaves.server.inventory import DeviceRow, Eligibility
from tufwaves.server.inventory.sqlite import SqliteInventory
from tufwaves.server.rollout import _uuid_bytes

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
N = 2000


def u(n: int) -> str:
    return str(uuid_mod.UUID(int=(n << 64) | 0x4000_8000_0000_0000 | n))


def wave(group: str | None = None) -> Eligibility:
    return Eligibility("w1", "main", frozenset({"rpi4"}), 10, group)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "inventory.sqlite"


@pytest.fixture
def fleet(db: Path) -> Iterator[SqliteInventory]:
    """2,000 devices; every 7th on other hardware, every 11th already updated,
    "small" (40 devices) and "big" groups, 30 already selected by ripple 1."""

    def device(n: int) -> DeviceRow:
        return DeviceRow(
            u(n),
            "imx8" if n % 7 == 0 else "rpi4",
            "main",
            frozenset({"small"} if n % 50 == 0 else {"big"}),
            11 if n % 11 == 0 else 3,
        )

    with SqliteInventory.open(db) as inventory:
        # Imported in two files: row ids are then not in UUID order.
        inventory.import_rows(device(n) for n in range(1, N + 1, 2))
        inventory.import_rows(device(n) for n in range(2, N + 1, 2))
        first = sorted(inventory.select_ring(wave(), 30, 0))
        inventory.record_ripple("w1", 1, first, {}, "list", [], T0)
        yield inventory


def selections(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return sorted(conn.execute("SELECT wave_id, ripple, device_id FROM selections"))


@pytest.mark.parametrize("group", [None, "small", "big"])
@pytest.mark.parametrize("start", [0, -(2**63), 2**63 - 1, 123456789 * 10**9])
def test_select_sorted_is_the_sorted_ring_walk(
    fleet: SqliteInventory, group: str | None, start: int
) -> None:
    e = wave(group)
    with fleet.transaction():
        count = fleet.count_eligible(e)
        assert count > 0
        for k in sorted({0, 1, 7, count // 3, count // 2, count - 5, count - 1, count, count + 9}):
            expected = sorted(fleet.select_ring(e, k, start))
            assert fleet.select_sorted(e, k, start) == expected, k
            assert fleet.select_sorted(e, k, start, eligible=count) == expected, k
        assert fleet.select_sorted(e, None, start) == fleet.select_all(e)


@pytest.mark.parametrize("stale", [-3, -1, 1, 4])
def test_a_stale_count_changes_nothing(fleet: SqliteInventory, stale: int) -> None:
    e = wave()
    count = fleet.count_eligible(e)
    for k in (count - 3, count - 1, count):
        expected = sorted(fleet.select_ring(e, k, 42))
        assert fleet.select_sorted(e, k, 42, eligible=count + stale) == expected


@pytest.mark.parametrize(("k", "start"), [(0.5, 0), (-1, 0), (True, 0), (3, 2**63), (3, None)])
def test_select_sorted_validates(fleet: SqliteInventory, k: Any, start: Any) -> None:
    with pytest.raises(InputError):
        fleet.select_sorted(wave(), k, start)


def test_record_ripple_records_like_record_ripple(fleet: SqliteInventory, db: Path) -> None:
    e = wave()
    with fleet.transaction():
        chosen = fleet.select_sorted(e, fleet.count_eligible(e) - 2, 99)
        fleet.record_ripple("w1", 2, chosen, {"limit": 1}, "merkle-sha256", ["k"], T0)
    fast = selections(db)
    (_, ripple) = fleet.ripples("w1")
    assert (ripple.index, ripple.devices, ripple.encoding) == (2, len(chosen), "merkle-sha256")
    assert list(fleet.ripple_members("w1", 2)) == chosen
    assert fleet.audit_log()[-1].arguments_data["devices"] == len(chosen)
    assert fleet.count_eligible(e) == 2
    assert not set(fleet.select_ring(e, 10, 99)) & set(chosen)
    # Nothing stays behind for the next ripple.
    with fleet.transaction():
        rest = fleet.select_sorted(e, 10, 99)
        fleet.record_ripple("w1", 3, rest, {}, "list", [], T0)
    assert len(rest) == 2 and fleet.count_eligible(e) == 0
    assert len(selections(db)) == len(fast) + 2


def test_record_ripple_falls_back_to_record_ripple(fleet: SqliteInventory, db: Path) -> None:
    e = wave()
    chosen = fleet.select_sorted(e, 5, 0)  # outside a transaction: not remembered
    fleet.record_ripple("w1", 2, chosen, {}, "list", [], T0)
    assert list(fleet.ripple_members("w1", 2)) == chosen
    with fleet.transaction():
        picked = fleet.select_sorted(e, 5, 0)
        other = list(picked[:3])  # another list: recorded as given
        fleet.record_ripple("w1", 3, other, {}, "list", [], T0)
    assert list(fleet.ripple_members("w1", 3)) == other
    with pytest.raises(InputError, match="sorted and unique"):
        fleet.record_ripple("w1", 4, [u(3), u(1)], {}, "list", [], T0)


def test_record_ripple_refuses_a_double_selection(fleet: SqliteInventory, db: Path) -> None:
    e = wave()
    with fleet.transaction():
        chosen = fleet.select_sorted(e, 20, 0)
        fleet.record_ripple("w1", 2, chosen[:1], {}, "list", [], T0)
        before = selections(db)
        with pytest.raises(
            RefusedError, match=f"device {chosen[0]} was already selected by ripple 2"
        ):
            fleet.record_ripple("w1", 3, chosen, {}, "list", [], T0)
        with pytest.raises(RefusedError, match="already recorded"):
            fleet.record_ripple("w1", 1, chosen, {}, "list", [], T0)
        assert selections(db) == before
    assert [r.index for r in fleet.ripples("w1")] == [1, 2]


def test_uuid_bytes() -> None:
    uuids = [u(n) for n in (1, 2, 3)]
    assert _uuid_bytes(uuids) == b"".join(uuid_mod.UUID(x).bytes for x in uuids)
    assert _uuid_bytes([]) == b""
    for bad in (u(1)[:-1] + " ", u(1)[:-1] + "g", u(1).replace("-", "")):
        with pytest.raises(InputError):
            _uuid_bytes([bad])


def odd_fleet(db: Path, eligible: Callable[[int], bool], n: int = N) -> SqliteInventory:
    """``n`` devices imported at once (row id i is device u(i)), eligible
    (right hardware) where ``eligible(i)``; half of them in group "half"."""
    inventory = SqliteInventory.open(db)
    inventory.import_rows(
        DeviceRow(
            u(i), "rpi4" if eligible(i) else "imx8", "main", frozenset({"half"} if i % 2 else ()), 3
        )
        for i in range(1, n + 1)
    )
    return inventory


CUT_STARTS = [0, -(2**63), 2**63 - 1, 2**63 - 2**61, -(2**62), 987654321 * 10**9]


@pytest.mark.parametrize(
    ("sample_rows", "eligible"),
    [
        (10 * N, lambda i: i % 3 != 0),  # the whole fleet sampled: a close estimate
        (100, lambda i: i % 3 != 0),  # every 20th row: a rough estimate, then trimmed
        (100, lambda i: i % 20 == 1 or i % 4 == 3),  # the sample sees too many: walk on
        (100, lambda i: i % 20 != 1),  # the sample sees none: the whole ring, then trimmed
    ],
)
@pytest.mark.parametrize("group", [None, "half"])
@pytest.mark.parametrize("taken", [25, 250])  # ripple 1 takes fewer or more than a tenth
def test_the_cut_walk_is_the_sorted_ring_walk(
    db: Path,
    monkeypatch: pytest.MonkeyPatch,
    sample_rows: int,
    eligible: Callable[[int], bool],
    group: str | None,
    taken: int,
) -> None:
    """Large k take the cut walk (a sample, one unordered pass, then the exact
    end); however good or bad the sample, the devices are the walk's first k,
    whether the wave's selections are taken away afterwards or looked up."""
    from tufwaves.server.inventory import sqlite_sql

    monkeypatch.setattr(sqlite_sql, "SORTED_SCAN_MIN", 1)
    monkeypatch.setattr(sqlite_sql, "SMALL_GROUP", 1)  # the group is read through the ring
    monkeypatch.setattr(sqlite_sql, "CUT_SAMPLE_ROWS", sample_rows)
    e = wave(group)
    with odd_fleet(db, eligible) as fleet, fleet.transaction():
        first = sorted(fleet.select_ring(e, taken, 5))
        fleet.record_ripple("w1", 1, first, {}, "list", [], T0)
        count = fleet.count_eligible(e)
        assert count == len(fleet.select_all(e)) > 50
        for start in CUT_STARTS:
            for k in (1, 40, count // 4, count // 2, count * 3 // 4, count - 60, count):
                expected = sorted(fleet.select_ring(e, k, start))
                assert len(expected) == k
                assert fleet.select_sorted(e, k, start) == expected, (start, k)
