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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.postgres import pg_dsn, pg_dsn2  # noqa: F401 - fixtures
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


def clustered_fleet(n: int, seed: int = 11) -> list[DeviceRow]:
    """``n`` devices (tag "crowd") whose eligible ones crowd an eighth of the
    ring, so that a position estimated from uniform spreading is far off."""
    rng = random.Random(seed)
    fleet = []
    for i in range(n):
        uuid = str(uuid_mod.UUID(int=rng.getrandbits(128)))
        ring = ring_position(uuid)
        crowded = 2**61 <= ring < 2**61 + 2**60
        fleet.append(
            DeviceRow(
                uuid,
                "rpi4" if crowded or i % 12 == 0 else "x86",
                "crowd",
                frozenset({"eu"} if i % 3 else {"us"}),
                12 if i % 5 == 0 else None,
            )
        )
    return fleet


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    tag=st.sampled_from(["main", "crowd"]),
    group=st.sampled_from([None, "eu"]),
    start=st.one_of(
        st.integers(-(2**63), 2**63 - 1), st.integers(2**61 + 2**60, 2**61 + 2**60 + 2**58)
    ),
    share=st.floats(0.0, 1.2),
    told=st.sampled_from(["exact", "none", "stale"]),
)
def test_large_selections_are_the_walk(
    inv: Inventory,
    monkeypatch: pytest.MonkeyPatch,
    tag: str,
    group: str | None,
    start: int,
    share: float,
    told: str,
) -> None:
    """A k near the fleet size takes the cut-at-a-device path on PostgreSQL
    (uniform and crowded ring stretches, so the estimated cut falls short or
    beyond): still exactly the first k of the walk, whatever count it is told."""
    from tufwaves.server.inventory import postgres_sql

    monkeypatch.setattr(postgres_sql, "CUT_WALK_SHARE", 10**9)  # every k > 0
    fleet = generated_fleet(400, seed=3) + clustered_fleet(1200)
    if inv.get(fleet[0].uuid) is None:  # the same inventory for every example
        inv.import_rows(fleet)
    e = Eligibility("w1", tag, frozenset({"rpi4"}), 10, group)
    eligible = len(reference_ring(fleet, e, 10**6, 0))
    k = int(eligible * share)
    count = {"exact": eligible, "none": None, "stale": eligible // 2 + 1}[told]
    assert inv.select_sorted(e, k, start, eligible=count) == sorted(
        reference_ring(fleet, e, k, start)
    )


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


# -- device keys and signed reports (schema 2) ---------------------------------

_SIGNER = None


def _signer() -> Any:
    global _SIGNER  # noqa: PLW0603 - one key for the whole module: keygen is not the point
    if _SIGNER is None:
        from securesystemslib.signer import CryptoSigner

        _SIGNER = CryptoSigner.generate_ed25519()
    return _SIGNER


def _public_hex() -> str:
    return str(_signer().public_key.to_dict()["keyval"]["public"])


def signed(n: int, counter: int, status: str = "installed", wave: str = "w1", **extra: Any) -> Any:
    from tufwaves.device.report import sign_report

    fields: dict[str, Any] = {"installed_version": 10} if status == "installed" else {}
    if status == "failed":
        fields["code"] = "hash-mismatch"
    fields.update(extra)
    return sign_report(
        _signer(), device=u(n), wave=wave, version=10, status=status, counter=counter, **fields
    )


def test_public_keys_set_rotate_remove(inv: Inventory) -> None:
    inv.import_rows([row(1)])
    assert inv.public_key(u(1)) is None
    inv.set_public_key(u(1).upper(), "ab" * 32)
    assert inv.public_key(u(1)) == "ab" * 32
    inv.set_public_key(u(1), "cd" * 32)
    assert inv.public_key(u(1)) == "cd" * 32
    inv.set_public_key(u(1), None)
    assert inv.public_key(u(1)) is None
    with pytest.raises(InputError, match="not in the inventory"):
        inv.set_public_key(u(2), "ab" * 32)
    with pytest.raises(InputError, match="64 lowercase hex"):
        inv.set_public_key(u(1), "AB" * 32)


def test_import_reads_public_keys_from_both_formats(inv: Inventory, tmp_path: Path) -> None:
    csv6 = tmp_path / "keys.csv"
    csv6.write_text(
        "uuid,hardware_id,tag,groups,installed_version,public_key\n"
        f"{u(1)},rpi4,main,lab,1,{'ab' * 32}\n"
        f'{u(2)},rpi4,main,"lab;x",,\n'
    )
    assert inv.import_file(csv6).rows == 2
    assert inv.public_key(u(1)) == "ab" * 32 and inv.public_key(u(2)) is None
    assert inv.get(u(2)).groups == frozenset({"lab", "x"})  # type: ignore[union-attr]
    jsonl = tmp_path / "keys.jsonl"
    jsonl.write_text(
        json.dumps({"uuid": u(2), "hardware_id": "rpi4", "tag": "main", "public_key": "cd" * 32})
        + "\n"
        + json.dumps({"uuid": u(1), "hardware_id": "rpi4", "tag": "main", "public_key": None})
        + "\n"
    )
    inv.import_file(jsonl)
    assert inv.public_key(u(2)) == "cd" * 32
    assert inv.public_key(u(1)) == "ab" * 32  # an empty key keeps the stored one
    old = tmp_path / "old.csv"
    old.write_text(HEADER + f"{u(3)},rpi4,main,,\n")
    assert inv.import_file(old).added == 1
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "uuid,hardware_id,tag,groups,installed_version,public_key\n"
        f"{u(4)},rpi4,main,,,{'zz' * 32}\n"
    )
    with pytest.raises(InputError, match="line 2"):
        inv.import_file(bad)
    assert inv.get(u(4)) is None


def test_store_report_dedupes_refuses_replays_and_sets_versions(inv: Inventory) -> None:
    inv.import_rows([row(1), row(2)])
    first = signed(1, 5, "downloading")
    assert inv.store_report(first, 1, first.to_bytes()) is True
    assert inv.store_report(first, 1, first.to_bytes()) is False  # the same report, resent
    other = signed(1, 5, "installing")
    with pytest.raises(RefusedError, match="replayed"):
        inv.store_report(other, 1, other.to_bytes())
    older = signed(1, 4, "installing")
    with pytest.raises(RefusedError, match="replayed"):
        inv.store_report(older, 1, older.to_bytes())
    assert inv.get(u(1)).installed_version == 1  # type: ignore[union-attr]
    done = signed(1, 9)
    assert inv.store_report(done, 1, done.to_bytes())
    device = inv.get(u(1))
    assert device is not None and device.installed_version == 10 and device.last_seen
    failed = signed(2, 1, "failed", installed_version=1)
    assert inv.store_report(failed, 2, failed.to_bytes())
    assert inv.get(u(2)).installed_version == 1  # type: ignore[union-attr]
    assert [r.counter for r in inv.device_reports(u(1))] == [9, 5]
    counts = {c.ripple: c for c in inv.report_counts("w1")}
    assert (counts[1].reported, counts[1].installed, counts[1].failed) == (1, 1, 0)
    assert (counts[2].reported, counts[2].installed, counts[2].failed) == (1, 0, 1)
    (failure,) = inv.recent_failures("w1")
    assert (failure.device, failure.code, failure.ripple) == (u(2), "hash-mismatch", 2)
    assert inv.report_counts("w2") == [] and inv.recent_failures("w2") == []
    gone = signed(3, 1)
    with pytest.raises(InputError, match="not in the inventory"):
        inv.store_report(gone, 1, gone.to_bytes())


def test_latest_reports_and_wave_selections(inv: Inventory) -> None:
    inv.import_rows([row(n) for n in range(1, 6)])
    record(inv, 1, [u(1), u(2)])
    record(inv, 2, [u(3), u(4)])
    record(inv, 1, [u(5)], wave="w2")
    assert list(inv.wave_selections("w1")) == [(u(1), 1), (u(2), 1), (u(3), 2), (u(4), 2)]
    assert list(inv.wave_selections("w2")) == [(u(5), 1)]
    assert list(inv.wave_selections("w3")) == []
    assert inv.latest_reports("w1") == []
    stored = [
        (signed(1, 1, "downloading"), 1),
        (signed(1, 2, "failed"), 1),
        (signed(1, 3), 1),  # installed after a failure: the latest counts
        (signed(2, 7, "installing"), 1),
        (signed(3, 4, "failed"), 2),
        (signed(4, 8, "installing"), 2),  # the latest for w1, not the device's latest
        (signed(4, 9, "downloading", wave="w2"), 1),
    ]
    for report, ripple in stored:
        assert inv.store_report(report, ripple, report.to_bytes())
    latest = inv.latest_reports("w1")
    assert [(r.device, r.counter, r.status, r.ripple) for r in latest] == [
        (u(1), 3, "installed", 1),
        (u(2), 7, "installing", 1),
        (u(3), 4, "failed", 2),
        (u(4), 8, "installing", 2),
    ]
    assert latest[2].code == "hash-mismatch" and latest[2].wave == "w1"
    assert [(r.device, r.counter) for r in inv.latest_reports("w2")] == [(u(4), 9)]
    with pytest.raises(InputError):
        inv.latest_reports("bad wave")


def _store_concurrently(location: str, reports: list[Any], threads: int = 16) -> list[bool]:
    """Store every report from ``threads`` threads, each with its own connection."""
    import threading

    results: list[bool | None] = [None] * len(reports)
    next_index = iter(range(len(reports)))
    lock = threading.Lock()
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work() -> None:
        try:
            with open_location(location) as inv:
                start.wait()
                while True:
                    with lock:
                        i = next(next_index, None)
                    if i is None:
                        return
                    results[i] = inv.store_report(reports[i], 1, reports[i].to_bytes())
        except BaseException as e:
            errors.append(e)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=300)
    assert not errors, errors
    assert all(r is not None for r in results)
    return [bool(r) for r in results]


def test_a_thousand_concurrent_reports_are_all_stored_once(inv: Inventory, location: str) -> None:
    inv.import_rows(row(n) for n in range(1000))
    reports = [signed(n, 1, "installing") for n in range(1000)]
    resent = reports[::7]  # some devices resend at once: stored once all the same
    results = _store_concurrently(location, [*reports, *resent])
    assert results.count(True) == 1000
    assert results.count(False) == len(resent)
    (counts,) = inv.report_counts("w1")
    assert (counts.ripple, counts.reported) == (1, 1000)
    stored = [r for n in range(1000) for r in inv.device_reports(u(n))]
    assert len(stored) == 1000
    assert len({(r.device, r.counter) for r in stored}) == 1000


def _old_schema(sql: Any, version: int) -> list[str]:
    """The statements that created a schema ``version`` (1 or 2) inventory:
    today's, with the old ``selections`` and without what came later."""
    later = {*sql.UPGRADE_3, sql.SELECTIONS_RIPPLE} | ({*sql.UPGRADE_2} if version == 1 else set())
    statements: list[str] = []
    for statement in sql.SCHEMA:
        if statement == sql.SELECTIONS:
            statements.extend(sql.SELECTIONS_2)
        elif statement == getattr(sql, "TAG_RING_INDEX", None):  # PostgreSQL's
            statements.append(sql.TAG_RING_INDEX_2)
        elif statement not in later and "user_version" not in statement:
            statements.append(statement)
    return statements


def _schema_of(location: str) -> list[Any]:
    """Tables, columns, keys and indexes as the database describes them."""
    if is_postgres(location):
        import psycopg

        with psycopg.connect(location) as conn:
            return conn.execute(
                "SELECT 'index', indexname, replace(indexdef, current_schema() || '.', '') "
                "FROM pg_indexes WHERE schemaname = current_schema() UNION ALL "
                "SELECT 'constraint', conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE connamespace = current_schema()::regnamespace UNION ALL "
                "SELECT 'column', table_name || '.' || column_name, data_type "
                "FROM information_schema.columns WHERE table_schema = current_schema() "
                "ORDER BY 1, 2"
            ).fetchall()
    import sqlite3

    with sqlite3.connect(location) as conn:
        return sorted(conn.execute("SELECT type, name, sql FROM sqlite_schema").fetchall())


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_schema_is_upgraded_in_place(
    location: str, tmp_path: Path, version: int, request: pytest.FixtureRequest
) -> None:
    from tufwaves.server.inventory import postgres_sql, sqlite_sql

    device = (u(1), ring_position(u(1)), "rpi4", "main", 3)
    selection = (
        "INSERT INTO waves (name) VALUES ('w1')",
        "INSERT INTO ripples (wave_id, idx, created, selector, devices, encoding) "
        "VALUES (1, 1, 0, '{}', 1, 'list')",
        "INSERT INTO selections (wave_id, ripple, device_id) VALUES (1, 1, 1)",
    )
    if is_postgres(location):
        import psycopg

        with psycopg.connect(location, autocommit=True) as conn:
            for statement in _old_schema(postgres_sql, version):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO devices (uuid, ring, hardware_id, tag, installed_version) "
                "VALUES (%s, %s, %s, %s, %s)",
                device,
            )
            for statement in selection:
                conn.execute(statement)
    else:
        import sqlite3

        with sqlite3.connect(location) as conn:
            for statement in _old_schema(sqlite_sql, version):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute(
                "INSERT INTO devices (uuid, ring, hardware_id, tag, installed_version) "
                "VALUES (?, ?, ?, ?, ?)",
                device,
            )
            for statement in selection:
                conn.execute(statement)
        with SqliteInventory.open(location, read_only=True) as old:  # readable as it is
            assert old.get(u(1)) is not None and old.selected_ripple("w1", u(1)) == 1
            if version == 1:
                assert old.public_key(u(1)) is None and old.report_counts("w1") == []
    with open_location(location) as inv:
        got = inv.get(u(1))
        assert got is not None and got.installed_version == 3
        assert inv.selected_ripple("w1", u(1)) == 1
        inv.set_public_key(u(1), "ab" * 32)
        report = signed(1, 1, "downloading")
        assert inv.store_report(report, 1, report.to_bytes())
    with open_location(location) as inv:  # the upgrade was committed, once
        assert inv.public_key(u(1)) == "ab" * 32
        assert len(inv.device_reports(u(1))) == 1
        assert inv.device_selections(u(1)) == [("w1", 1)]
    fresh = request.getfixturevalue("pg_dsn2") if is_postgres(location) else str(tmp_path / "new")
    open_location(fresh).close()
    assert _schema_of(location) == _schema_of(fresh)  # the schema a new inventory gets
