"""The Inventory protocol, held by both implementations: SQLite and PostgreSQL.

Every test here runs once per backend through the ``inv`` fixture; a few
compare both backends directly (the same seed over the same fleet selects the
same devices). The PostgreSQL runs use a schema of their own (tests/postgres.py)
and skip, saying why, when no server is reachable -- fail with
TUFWAVES_REQUIRE_POSTGRES=1.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import uuid as uuid_mod
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.postgres import pg_dsn  # noqa: F401 - a fixture
from tufwaves.errors import InputError, RefusedError
from tufwaves.server.inventory import (
    DeviceRow,
    Eligibility,
    GroupStatus,
    Inventory,
    ring_position,
)
from tufwaves.server.inventory.backend import open_postgres
from tufwaves.server.inventory.dsn import is_postgres
from tufwaves.server.inventory.sqlite import SqliteInventory
from tufwaves.server.rollout import Selector, _select, seed_start

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
WAVE = Eligibility("w1", "main", frozenset({"rpi4", "imx8"}), 10)
HEADER = "uuid,hardware_id,tag,groups,installed_version\n"


def u(n: int) -> str:
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


def open_location(location: str) -> Inventory:
    """An SQLite file path or a PostgreSQL DSN, opened (also in child processes)."""
    if is_postgres(location):
        return open_postgres(location)
    return SqliteInventory.open(location)


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "inventory.sqlite")
    dsn: str = request.getfixturevalue("pg_dsn")
    return dsn


@pytest.fixture
def inv(location: str) -> Iterator[Inventory]:
    with open_location(location) as inventory:
        yield inventory


def generated_fleet(n: int, seed: int = 7) -> list[DeviceRow]:
    """``n`` random devices over two tags, three hardware ids and four groups."""
    rng = random.Random(seed)
    return [
        DeviceRow(
            str(uuid_mod.UUID(int=rng.getrandbits(128))),
            rng.choice(["rpi4", "rpi4", "imx8", "x86"]),
            rng.choice(["main", "main", "main", "beta"]),
            frozenset(rng.sample(["eu", "us", "lab", "NULL"], rng.choice([0, 1, 1, 2]))),
            rng.choice([None, 1, 5, 9, 10, 12]),
        )
        for _ in range(n)
    ]


def reference_ring(
    fleet: list[DeviceRow],
    e: Eligibility,
    k: int,
    start: int,
    taken: frozenset[str] | set[str] = frozenset(),
) -> list[str]:
    """The specified walk, in plain Python: eligible devices by (ring, uuid)
    from ``start``, wrapping around, first ``k``."""
    eligible = [
        d.uuid
        for d in fleet
        if d.tag == e.tag
        and d.hardware_id in e.hardware_ids
        and (d.installed_version is None or d.installed_version < e.version)
        and (e.group is None or e.group in d.groups)
        and d.uuid not in taken
    ]
    keyed = sorted(eligible, key=lambda x: (ring_position(x), x))
    after = [x for x in keyed if ring_position(x) >= start]
    before = [x for x in keyed if ring_position(x) < start]
    return (after + before)[:k]


def record(inv: Inventory, index: int, uuids: list[str], wave: str = "w1") -> None:
    inv.record_ripple(wave, index, uuids, {"limit": len(uuids)}, "list", ["k1"], T0)


# -- devices -------------------------------------------------------------------


def test_import_get_and_list(inv: Inventory) -> None:
    assert inv.import_rows([row(2, groups=frozenset({"b", "a"})), row(1, tag="beta")]) == 2
    device = inv.get(u(2).upper())
    assert device is not None
    assert device.uuid == u(2)
    assert device.groups == frozenset({"a", "b"})
    assert device.installed_version == 1
    assert device.last_seen is None
    assert inv.get(u(3)) is None
    assert [d.uuid for d in inv.list_devices()] == [u(1), u(2)]
    assert [d.uuid for d in inv.list_devices(tag="beta")] == [u(1)]
    assert [d.uuid for d in inv.list_devices(group="a")] == [u(2)]
    assert [d.uuid for d in inv.list_devices(limit=1)] == [u(1)]
    assert list(inv.list_devices(group="nobody")) == []


def test_reimport_upserts(inv: Inventory) -> None:
    inv.import_rows([row(1, installed_version=7, groups=frozenset({"a", "b"}))])
    inv.import_rows([row(1, hardware_id="imx8", installed_version=None, groups=frozenset())])
    device = inv.get(u(1))
    assert device is not None
    assert (device.hardware_id, device.installed_version, device.groups) == ("imx8", 7, frozenset())


def test_import_file_csv_and_jsonl(inv: Inventory, tmp_path: Path) -> None:
    csv = tmp_path / "fleet.csv"
    csv.write_text(HEADER + f"{u(1)},rpi4,main,lab;eu,3\n{u(2)},imx8,main,,\n")
    result = inv.import_file(csv)
    assert (result.format, result.rows, result.added, result.updated) == ("csv", 2, 2, 0)
    jsonl = tmp_path / "fleet.jsonl"
    jsonl.write_text(
        json.dumps({"uuid": u(2), "hardware_id": "imx8", "tag": "main", "installed_version": 4})
        + "\n"
        + json.dumps({"uuid": u(3), "hardware_id": "x86", "tag": "beta"})
        + "\n"
    )
    result = inv.import_file(jsonl)
    assert (result.format, result.rows, result.added, result.updated) == ("jsonl", 2, 1, 1)
    d1, d2 = inv.get(u(1)), inv.get(u(2))
    assert d1 is not None and d1.groups == frozenset({"lab", "eu"})
    assert d2 is not None and d2.installed_version == 4


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([f"{u(1)},rpi4,main,,1", "not-a-uuid,rpi4,main,,1"], "line 4"),
        ([f"{u(1)},rpi4,main,,1", f"{u(1)},rpi4,main,,2"], r"line 4: uuid .* line 3"),
        ([f"{u(1)},rpi4,main,bad group,1"], "line 3"),
    ],
    ids=["bad-uuid", "duplicate", "bad-group"],
)
def test_a_bad_line_imports_nothing(
    inv: Inventory, tmp_path: Path, lines: list[str], message: str
) -> None:
    inv.import_rows([row(9)])
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + f"{u(5)},rpi4,main,lab,1\n" + "".join(x + "\n" for x in lines))
    with pytest.raises(InputError, match=message):
        inv.import_file(path)
    assert [d.uuid for d in inv.list_devices()] == [u(9)]


def test_report(inv: Inventory) -> None:
    inv.import_rows([row(1)])
    device = inv.report(u(1), 12, at=T0)
    assert (device.installed_version, device.last_seen) == (12, T0)
    stored = inv.get(u(1))
    assert stored is not None and (stored.installed_version, stored.last_seen) == (12, T0)
    with pytest.raises(InputError, match="not in the inventory"):
        inv.report(u(2), 1)


# -- selection -----------------------------------------------------------------


@pytest.mark.parametrize("start", [-(2**63), -5, 0, 2**40, 2**63 - 1])
@pytest.mark.parametrize("group", [None, "eu", "NULL"])
def test_select_ring_is_the_specified_walk(inv: Inventory, start: int, group: str | None) -> None:
    fleet = generated_fleet(300)
    inv.import_rows(fleet)
    e = Eligibility("w1", "main", frozenset({"rpi4", "imx8"}), 10, group)
    for k in (0, 1, 7, 50, 1000):
        assert inv.select_ring(e, k, start) == reference_ring(fleet, e, k, start)
        assert inv.select_sorted(e, k, start) == sorted(reference_ring(fleet, e, k, start))
    everything = sorted(reference_ring(fleet, e, 10**6, 0))
    assert inv.select_all(e) == everything
    assert inv.select_sorted(e, None, start) == everything
    assert inv.count_eligible(e) == len(everything)
    within = [d.uuid for d in fleet[:60]]
    walk = reference_ring([d for d in fleet if d.uuid in within], e, 10, start)
    assert inv.select_ring(e, 10, start, within=within) == walk


def test_selection_skips_devices_the_wave_took(inv: Inventory) -> None:
    fleet = generated_fleet(200)
    inv.import_rows(fleet)
    with inv.transaction():
        first = inv.select_sorted(WAVE, 20, 0)
        record(inv, 1, first)
    assert inv.select_ring(WAVE, 20, 0) == reference_ring(fleet, WAVE, 20, 0, set(first))
    assert inv.count_eligible(WAVE) == len(reference_ring(fleet, WAVE, 10**6, 0)) - 20
    other = Eligibility("w2", WAVE.tag, WAVE.hardware_ids, WAVE.version)
    assert inv.select_ring(other, 20, 0) == reference_ring(fleet, other, 20, 0)


def test_explain_ineligible(inv: Inventory) -> None:
    inv.import_rows(
        [
            row(1, tag="beta"),
            row(2, hardware_id="x86"),
            row(3, installed_version=10),
            row(4),
            row(5, groups=frozenset()),
            row(6),
        ]
    )
    record(inv, 1, [u(4)])
    e = Eligibility("w1", "main", frozenset({"rpi4"}), 10, "lab")
    assert inv.explain_ineligible(e, [u(n) for n in range(1, 8)]) == {
        u(1): "tag is beta, wave is for main",
        u(2): "hardware id x86 not in the wave",
        u(3): "already runs version 10",
        u(4): "selected by ripple 1",
        u(5): "not in group lab",
        u(7): "not in the inventory",
    }


# -- rollout history -----------------------------------------------------------


def test_record_ripple_and_history(inv: Inventory) -> None:
    inv.import_rows([row(n) for n in range(1, 6)])
    record(inv, 1, [u(1), u(3)])
    record(inv, 2, [u(2)])
    record(inv, 1, [u(1)], wave="w2")
    ripples = inv.ripples("w1")
    assert [(r.index, r.devices, r.encoding, r.created) for r in ripples] == [
        (1, 2, "list", T0),
        (2, 1, "list", T0),
    ]
    assert ripples[0].selector_data == {"limit": 2}
    assert list(inv.ripple_members("w1", 1)) == [u(1), u(3)]
    assert inv.selected_ripple("w1", u(3)) == 1
    assert inv.selected_ripple("w1", u(5)) is None
    assert inv.device_selections(u(1)) == [("w1", 1), ("w2", 1)]
    assert inv.ripples("nope") == []


@pytest.mark.parametrize(
    ("uuids", "index", "error", "message"),
    [
        ([3, 2], 2, InputError, "sorted"),
        ([2, 4], 2, RefusedError, "already selected by ripple"),
        ([2, 99], 2, InputError, "not in the inventory"),
        ([2], 1, RefusedError, "already recorded"),
        ([2], 0, InputError, "ripple index"),
    ],
    ids=["unsorted", "twice", "unknown-device", "same-index", "index-zero"],
)
def test_record_ripple_refuses_and_records_nothing(
    inv: Inventory, uuids: list[int], index: int, error: type[Exception], message: str
) -> None:
    inv.import_rows([row(n) for n in range(1, 6)])
    record(inv, 1, [u(4)])
    audit_before = inv.audit_log()
    with pytest.raises(error, match=message):
        record(inv, index, [u(n) for n in uuids])
    assert [r.index for r in inv.ripples("w1")] == [1]
    assert inv.selected_ripple("w1", u(2)) is None
    assert inv.audit_log() == audit_before


def test_status(inv: Inventory) -> None:
    inv.import_rows(
        [
            row(1, groups=frozenset({"eu"})),
            row(2, groups=frozenset({"eu", "us"}), installed_version=10),
            row(3, groups=frozenset()),
            row(4, groups=frozenset({"us"}), tag="beta"),
        ]
    )
    record(inv, 1, [u(3)])
    assert inv.status(WAVE) == [
        GroupStatus("group", "eu", 2, 1, 0, 1),
        GroupStatus("group", "us", 2, 0, 0, 1),
        GroupStatus("ungrouped", None, 1, 0, 1, 0),
        GroupStatus("total", None, 4, 1, 1, 1),
    ]


def test_audit_log(inv: Inventory) -> None:
    first = inv.audit("fleet import", [], {"rows": 3, "path": "x"}, at=T0)
    second = inv.audit("cancel", ["k1", "k2"], {"wave": "w1"})
    assert second.id > first.id
    assert first.arguments == '{"path":"x","rows":3}'
    assert inv.audit_log() == [first, second]
    assert inv.audit_log(limit=1) == [second]
    with pytest.raises(InputError):
        inv.audit("", [], {})


def test_nested_transaction_rolls_back_only_its_part(inv: Inventory) -> None:
    with inv.transaction():
        inv.import_rows([row(1)])
        with pytest.raises(InputError):
            inv.import_rows([row(2), row(3, tag="")])
    assert inv.get(u(1)) is not None
    assert inv.get(u(2)) is None
    with pytest.raises(RuntimeError), inv.transaction():
        inv.import_rows([row(4)])
        raise RuntimeError
    assert inv.get(u(4)) is None


# -- concurrency ---------------------------------------------------------------


def _rollout_worker(location: str, barrier: Any, results: Any, size: int) -> None:
    recorded: list[tuple[int, list[str]]] = []
    errors: list[str] = []
    with open_location(location) as inventory:
        barrier.wait()
        while True:
            try:
                with inventory.transaction():
                    index = len(inventory.ripples("w1")) + 1
                    uuids = inventory.select_sorted(WAVE, size, 0)
                    if not uuids:
                        break
                    record(inventory, index, uuids)
                recorded.append((index, uuids))
            except Exception as e:
                errors.append(repr(e))
                break
    results.put((recorded, errors))


def test_two_processes_never_pick_twice_nor_lose_a_ripple(location: str) -> None:
    fleet = generated_fleet(400)
    with open_location(location) as inv:
        inv.import_rows(fleet)
        eligible = inv.count_eligible(WAVE)
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=_rollout_worker, args=(location, barrier, results, 7)) for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert [errors for _, errors in outcomes] == [[], []]
    recorded = dict(outcomes[0][0] + outcomes[1][0])
    assert len(recorded) == len(outcomes[0][0]) + len(outcomes[1][0])  # no index twice
    picked = [uuid for uuids in recorded.values() for uuid in uuids]
    assert len(picked) == len(set(picked)) == eligible
    with open_location(location) as inv:
        assert [r.index for r in inv.ripples("w1")] == sorted(recorded)
        for index, uuids in recorded.items():
            assert list(inv.ripple_members("w1", index)) == uuids
        assert inv.count_eligible(WAVE) == 0
        assert len(inv.audit_log()) == len(recorded)


# -- both backends agree -------------------------------------------------------


class _Wave:
    """What rollout's selection reads of a wave."""

    name = "w1"

    def eligibility(self, group: str | None = None) -> Eligibility:
        return Eligibility("w1", "main", frozenset({"rpi4", "imx8"}), 10, group)


SELECTORS = [
    Selector(limit=1, seed="a"),
    Selector(limit=25, seed="a"),
    Selector(limit=25, seed="b"),
    Selector(limit=10_000, seed="c"),
    Selector(percent=10, seed="d"),
    Selector(percent=100, seed="d"),
    Selector(group="eu", seed="e"),
    Selector(group="NULL", limit=5, seed="f"),
    Selector(group="us", percent=30, seed="g"),
    Selector(uuids=tuple(d.uuid for d in generated_fleet(2000)[::7]), limit=15, seed="h"),
    Selector(uuids=tuple(d.uuid for d in generated_fleet(2000)[::9]), percent=50, seed="i"),
]


def test_same_seed_same_devices_on_both_backends(
    tmp_path: Path,
    pg_dsn: str,  # noqa: F811 - the fixture
) -> None:
    fleet = generated_fleet(2000)
    with SqliteInventory.open(tmp_path / "inventory.sqlite") as lite, open_postgres(pg_dsn) as pg:
        lite.import_rows(fleet)
        pg.import_rows(fleet)
        picks: dict[str, list[list[str]]] = {"sqlite": [], "postgres": []}
        for name, inventory in (("sqlite", lite), ("postgres", pg)):
            for index, selector in enumerate(SELECTORS, start=1):
                with inventory.transaction():
                    chosen = _select(inventory, _Wave(), selector)  # type: ignore[arg-type]
                    if chosen:
                        record(inventory, index, chosen)
                picks[name].append(chosen)
        assert picks["sqlite"] == picks["postgres"]
        assert any(len(p) > 100 for p in picks["sqlite"])
        assert lite.status(_Wave().eligibility()) == pg.status(_Wave().eligibility())
        first = picks["sqlite"][0]
        assert first == reference_ring(fleet, _Wave().eligibility(), 1, seed_start("a"))
