"""The inventory in PostgreSQL, for fleets whose rollouts run on several machines.

A second implementation of :class:`~tufwaves.server.inventory.Inventory` with
psycopg 3, selecting exactly the devices the SQLite inventory selects (the
ring positions and every rule come from :mod:`tufwaves.server.inventory`).
Only this module imports the driver, and only
:mod:`tufwaves.server.inventory.backend` imports this module, when a
repository names a PostgreSQL inventory. See ``specs/inventory.md``.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, ParamSpec, Self, TypeVar
from uuid import UUID

import psycopg
from psycopg import errors as pg_errors

from tufwaves.device.report import DeviceReport, check_public_key
from tufwaves.errors import InputError, RefusedError, StorageError
from tufwaves.server.inventory import (
    AuditEntry,
    Device,
    DeviceRow,
    Eligibility,
    GroupStatus,
    ImportResult,
    NormalRow,
    ProgressCallback,
    ReportCounts,
    RippleRecord,
    StoredReport,
    canonical_json,
    canonical_uuid,
    check_time,
    check_version,
    check_wave,
    from_epoch,
    ineligible_reason,
    list_filters,
    normalise_row,
    rings_of_canonical,
    stored_report,
)
from tufwaves.server.inventory import postgres_sql as _sql
from tufwaves.server.inventory.dsn import lock_key, redact, scrub
from tufwaves.server.inventory.readers import (
    Chunks,
    Match,
    NumberedRows,
    detect_format,
    device_file_chunks,
    group_names,
    row_chunks,
)

__all__ = ["SCHEMA_VERSION", "PostgresInventory", "repository_lock"]

SCHEMA_VERSION = _sql.SCHEMA_VERSION

LOCK_TIMEOUT = "30s"
"""How long a write waits for another process's transaction (``lock_timeout``)."""

_COPY_CHUNK = 5_000
_NULL = "\\N"
"""NULL in COPY text."""
_SCHEMA_LOCK = lock_key("inventory-schema", "create")

_INSTALL_STATES = ("installed", "rolled_back")
"""Reports whose installed_version becomes the device's."""

_Position = tuple[int, int, str]
"""A place in the ring walk: (part, ring, uuid); part 0 is ring >= start,
part 1 the wrapped-around rest; ordered as the walk is."""
_MAX_UUID = "ffffffff-ffff-ffff-ffff-ffffffffffff"

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _storage_error(e: psycopg.Error, dsn: str | None = None) -> StorageError:
    text = scrub(str(e).strip(), dsn)
    if isinstance(e, pg_errors.LockNotAvailable):
        return StorageError(
            f"the inventory is busy ({text}): another tufwaves process is "
            "writing it; try again when it has finished"
        )
    if isinstance(e, psycopg.OperationalError):
        return StorageError(f"the PostgreSQL inventory is unavailable: {text}")
    return StorageError(f"the PostgreSQL inventory failed: {text}")


def _translated(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn driver failures into StorageError."""

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return func(*args, **kwargs)
        except psycopg.Error as e:
            raise _storage_error(e) from e

    return wrapper


def _connect(dsn: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(dsn, autocommit=True, application_name="tufwaves")
    except psycopg.Error as e:
        reason = scrub(str(e).strip(), dsn)
        raise StorageError(
            f"cannot connect to the PostgreSQL inventory {redact(dsn)}: {reason}"
        ) from None


def _now() -> datetime:
    return datetime.now(UTC)


def _device(row: Sequence[Any]) -> Device:
    uuid, hardware_id, tag, version, last_seen, groups = row
    return Device(
        uuid=uuid,
        hardware_id=hardware_id,
        tag=tag,
        groups=frozenset(groups.split(";")) if groups else frozenset(),
        installed_version=version,
        last_seen=None if last_seen is None else from_epoch(last_seen),
    )


def _stage_text(rows: NumberedRows) -> str:
    """Numbered rows as COPY text of the staging table.

    UUIDs, integers and names (``[A-Za-z0-9][A-Za-z0-9_.+-]*``) need no COPY
    escaping; group names are quoted in the array literal so that a group
    called ``NULL`` stays a name.
    """
    lines: list[str] = []
    for line, (uuid, ring, hardware_id, tag, groups, version) in rows:
        group_text = '{"' + '","'.join(groups) + '"}' if groups else _NULL
        version_text = _NULL if version is None else str(version)
        lines.append(
            f"{line}\t{uuid}\t{ring}\t{hardware_id}\t{tag}\t{version_text}\t{group_text}\n"
        )
    return "".join(lines)


def _bulk_text(rows: NumberedRows) -> tuple[str, dict[str, list[int]]]:
    """Numbered rows as COPY text of ``devices`` (id = line number), and the
    line numbers of each group's members."""
    lines: list[str] = []
    members: dict[str, list[int]] = {}
    for line, (uuid, ring, hardware_id, tag, groups, version) in rows:
        for group in groups:
            ids = members.get(group)
            if ids is None:
                ids = members[group] = []
            ids.append(line)
        version_text = _NULL if version is None else str(version)
        lines.append(f"{line}\t{uuid}\t{ring}\t{hardware_id}\t{tag}\t{version_text}\n")
    return "".join(lines), members


def _bulk_matches(first: int, found: Sequence[Match]) -> tuple[str, dict[str, list[int]]]:
    """:func:`_bulk_text` of a block of good CSV lines, without a row per line
    (PostgreSQL reads a UUID in either case)."""
    lines: list[str] = []
    append = lines.append
    members: dict[str, list[int]] = {}
    rings = rings_of_canonical([fields[0] for fields in found])
    for line, (uuid, hardware_id, tag, groups, version), ring in zip(
        itertools.count(first), found, rings, strict=False
    ):
        if groups:
            for group in group_names(groups):
                ids = members.get(group)
                if ids is None:
                    ids = members[group] = []
                ids.append(line)
        append(f"{line}\t{uuid}\t{ring}\t{hardware_id}\t{tag}\t{version or _NULL}\n")
    return "".join(lines), members


def _duplicate(row: Sequence[Any], source: str, unit: str) -> InputError:
    """The error for a UUID given twice: ``row`` is (first line, line, uuid)."""
    first, second, uuid = row
    return InputError(
        f"{source}{unit} {second}: uuid {uuid} was already given "
        f"on {unit} {first} (a device may appear once); nothing "
        "was imported (fix it and import again)"
    )


def _check_k(k: object) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise InputError(f"k {k!r} must be a non-negative integer")


def _check_start(start: object) -> None:
    if isinstance(start, bool) or not isinstance(start, int) or not -(2**63) <= start < 2**63:
        raise InputError(f"ring start {start!r} must be a signed 64-bit integer")


def _eligibility_params(e: Eligibility) -> dict[str, Any]:
    return {
        "tag": e.tag,
        "hw": sorted(e.hardware_ids),
        "version": e.version,
        "wave": e.wave,
        "group": e.group,
    }


def _limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InputError(f"limit {limit!r} must be a non-negative integer")
    return limit


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, UUID) else value


class PostgresInventory:
    """The :class:`~tufwaves.server.inventory.Inventory` in a PostgreSQL schema.

    The schema is the connection's ``current_schema()`` (the first existing
    schema of its ``search_path``; choose one with ``options=-csearch_path=NAME``
    in the DSN).
    """

    def __init__(self, conn: psycopg.Connection[Any], dsn: str) -> None:
        """Use :meth:`open`; this wraps an already configured connection."""
        self._conn = conn
        self.dsn = dsn
        self._depth = 0
        self._write_key = 0
        self.location = redact(dsn)
        self._txn = 0  # counts outermost transactions
        # What select_sorted chose last: (its list, its length, transaction).
        self._selected: tuple[list[str], int, int] | None = None

    # -- lifecycle -------------------------------------------------------

    @classmethod
    def open(cls, dsn: str) -> PostgresInventory:
        """Connect to ``dsn`` and (on first use) create the inventory schema."""
        conn = _connect(dsn)
        inventory = cls(conn, dsn)
        try:
            inventory._configure()
        except psycopg.Error as e:
            conn.close()
            raise _storage_error(e, dsn) from e
        except BaseException:
            conn.close()
            raise
        return inventory

    def _configure(self) -> None:
        conn = self._conn
        conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
        database, schema = conn.execute(_sql.CURRENT_PLACE).fetchone() or (None, None)
        if schema is None:
            raise StorageError(
                f"{self.location} has no schema to hold the inventory: no schema of "
                "its search_path exists; create it or fix options=-csearch_path=..."
            )
        self.location = f"{redact(self.dsn)} (schema {schema})"
        self._write_key = lock_key("inventory", f"{database}.{schema}")
        with conn.transaction():
            conn.execute(_sql.ADVISORY_XACT_LOCK, (_SCHEMA_LOCK,))
            tables = {name for (name,) in conn.execute(_sql.EXISTING_TABLES)}
            if "tufwaves_meta" in tables:
                row = conn.execute(_sql.STORED_VERSION).fetchone()
                version = row[0] if row else None
                if version in ("1", "2"):  # in place, in this transaction
                    upgrade = _sql.UPGRADE_3 if version == "2" else _sql.UPGRADE_2 + _sql.UPGRADE_3
                    for statement in upgrade:
                        conn.execute(statement)
                    version = str(_sql.SCHEMA_VERSION)
                if version != str(_sql.SCHEMA_VERSION):
                    raise StorageError(
                        f"{self.location} has inventory schema {version}; this "
                        f"tufwaves knows schema {_sql.SCHEMA_VERSION}: upgrade tufwaves"
                    )
                return
            clash = sorted(tables & set(_sql.TABLES))
            if clash:
                raise StorageError(
                    f"{self.location} has tables named {', '.join(clash)} but no "
                    "tufwaves inventory; use another schema or database"
                )
            for statement in _sql.SCHEMA:
                conn.execute(statement)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- transactions ----------------------------------------------------

    @contextmanager
    def _atomic(self) -> Iterator[None]:
        """A transaction holding the inventory's write lock (an advisory lock
        of this database and schema); nested: a savepoint."""
        conn = self._conn
        if self._depth == 0:
            self._txn += 1
            try:
                with conn.transaction():
                    conn.execute(_sql.ADVISORY_XACT_LOCK, (self._write_key,))
                    self._depth = 1
                    try:
                        yield
                    finally:
                        self._depth = 0
            finally:
                self._selected = None
        else:
            self._depth += 1
            try:
                with conn.transaction():
                    yield
            finally:
                self._depth -= 1

    @contextmanager
    def transaction(self) -> Iterator[None]:
        try:
            with self._atomic():
                yield
        except psycopg.Error as e:
            raise _storage_error(e) from e

    # -- devices ---------------------------------------------------------

    def import_rows(
        self, rows: Iterable[DeviceRow], progress: ProgressCallback | None = None
    ) -> int:
        def validated() -> Iterator[tuple[int, NormalRow]]:
            for number, row in enumerate(rows, start=1):
                try:
                    yield number, normalise_row(row)
                except InputError as e:
                    raise InputError(f"row {number}: {e}; nothing was imported") from e

        return self._store(row_chunks(validated()), progress, "", "row")

    def import_file(self, path: Path, progress: ProgressCallback | None = None) -> ImportResult:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path} is not a file; give a .csv or .jsonl file")
        fmt: Literal["csv", "jsonl"] = detect_format(path)
        keys: list[tuple[str, str]] = []
        with self.transaction():
            before = self._count_devices()
            chunks = device_file_chunks(path, fmt, keys)
            rows = self._store(chunks, progress, f"{path} ", "line")
            added = self._count_devices() - before
            self._store_keys(keys)
        return ImportResult(str(path), fmt, rows, added, rows - added)

    def _count_devices(self) -> int:
        row = self._conn.execute(_sql.COUNT_DEVICES).fetchone()
        return int(row[0]) if row else 0

    @_translated
    def _store(
        self, chunks: Chunks, progress: ProgressCallback | None, source: str, unit: str
    ) -> int:
        """COPY, check and apply numbered rows (``unit`` n of ``source``)."""
        conn = self._conn
        with self._atomic():
            if self._is_empty_inventory():
                done = self._bulk_load(chunks, progress, source, unit)
            else:
                done = self._stage_and_apply(chunks, progress, source, unit)
            conn.execute(_sql.ANALYZE_DEVICES)
        return done

    def _stage_and_apply(
        self, chunks: Chunks, progress: ProgressCallback | None, source: str, unit: str
    ) -> int:
        conn = self._conn
        done = 0
        conn.execute(_sql.STAGE_DROP)
        conn.execute(_sql.STAGE_CREATE)
        with conn.cursor().copy(_sql.STAGE_COPY) as copy:
            for done, text in chunks(_stage_text):
                copy.write(text)
                if progress is not None:
                    progress(done)
        conn.execute(_sql.STAGE_ANALYZE)
        duplicate = conn.execute(_sql.STAGE_DUPLICATE).fetchone()
        if duplicate is not None:
            raise _duplicate(duplicate, source, unit)
        conn.execute(_sql.STAGE_CLEAR_GROUPS)
        conn.execute(_sql.STAGE_UPSERT)
        conn.execute(_sql.STAGE_GROUPS)
        conn.execute(_sql.STAGE_MEMBERSHIPS)
        conn.execute(_sql.STAGE_DROP)
        return done

    def _is_empty_inventory(self) -> bool:
        row = self._conn.execute(_sql.EMPTY_INVENTORY).fetchone()
        return bool(row and row[0])

    def _bulk_load(
        self, chunks: Chunks, progress: ProgressCallback | None, source: str, unit: str
    ) -> int:
        """Load the rows into an empty inventory: COPY devices (id = line
        number), groups and memberships into the bare tables, then build the
        indexes and keys again (same definitions, same transaction)."""
        conn = self._conn
        for statement in (_sql.BULK_SETTINGS, _sql.BULK_TRUNCATE, *_sql.BULK_DROP):
            conn.execute(statement)
        members: dict[str, array[int]] = {}
        done = 0
        with conn.cursor().copy(_sql.BULK_DEVICES_COPY) as copy:
            for done, (text, groups) in chunks(_bulk_text, _bulk_matches):
                copy.write(text)
                for group, ids in groups.items():
                    into = members.get(group)
                    if into is None:
                        into = members[group] = array("q")
                    into.extend(ids)
                if progress is not None:
                    progress(done)
        names = sorted(members)
        with conn.cursor().copy(_sql.BULK_GROUPS_COPY) as copy:
            copy.write("".join(f"{n}\t{name}\n" for n, name in enumerate(names, start=1)))
        with conn.cursor().copy(_sql.BULK_MEMBERSHIPS_COPY) as copy:
            for group_id, name in enumerate(names, start=1):
                member_ids, first = members[name], f"{group_id}\t"
                between = "\n" + first
                for at in range(0, len(member_ids), _COPY_CHUNK * 10):
                    part = member_ids[at : at + _COPY_CHUNK * 10]
                    copy.write(first + between.join(map(str, part)))
                    copy.write("\n")
        try:
            with conn.transaction():  # a savepoint: the duplicate query runs after it
                conn.execute(_sql.BULK_DEVICE_UNIQUE)
        except pg_errors.UniqueViolation:
            row = conn.execute(_sql.BULK_DUPLICATE).fetchone()
            if row is None:  # pragma: no cover - the index build saw one
                raise
            raise _duplicate(row, source, unit) from None
        for statement in _sql.BULK_INDEXES:
            conn.execute(statement)
        with self._settings(_sql.BULK_KEYS_SETTINGS):
            for statement in _sql.BULK_KEYS:
                conn.execute(statement)
        for statement in _sql.BULK_SEQUENCES:
            conn.execute(statement)
        return done

    @_translated
    def report(self, uuid: str, installed_version: int, at: datetime | None = None) -> Device:
        uuid = canonical_uuid(uuid)
        check_version("installed version", installed_version)
        seen = check_time(at if at is not None else _now())
        with self._atomic():
            device = self.get(uuid)
            if device is None:
                raise InputError(
                    f"device {uuid} is not in the inventory; import it first "
                    "(tufwaves fleet import FILE --repo REPO)"
                )
            self._conn.execute(
                _sql.REPORT, {"version": installed_version, "seen": seen, "uuid": uuid}
            )
        return replace(device, installed_version=installed_version, last_seen=from_epoch(seen))

    @_translated
    def get(self, uuid: str) -> Device | None:
        row = self._conn.execute(_sql.GET, {"uuid": canonical_uuid(uuid)}).fetchone()
        return None if row is None else _device(row)

    def list_devices(
        self,
        group: str | None = None,
        tag: str | None = None,
        limit: int | None = None,
    ) -> Iterator[Device]:
        params = list_filters(group, tag, limit)
        return self._rows(_sql.LIST, params, _device)

    def _rows(
        self,
        sql: str,
        params: Mapping[str, Any] | Sequence[Any],
        make: Callable[[Sequence[Any]], _R],
    ) -> Iterator[_R]:
        try:
            cursor = self._conn.execute(sql, params)
            while True:
                chunk = cursor.fetchmany(1000)
                if not chunk:
                    return
                for row in chunk:
                    yield make(row)
        except psycopg.Error as e:
            raise _storage_error(e) from e

    # -- selection -------------------------------------------------------

    @_translated
    def count_eligible(self, e: Eligibility) -> int:
        sql = _sql.query(_sql.SELECT_COUNT, _sql.FROM_DEVICES, _sql.ELIGIBLE, self._in_group(e))
        with self._settings(_sql.PASS_SETTINGS):
            row = self._conn.execute(sql, _eligibility_params(e)).fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _in_group(e: Eligibility) -> str:
        return _sql.IN_GROUP if e.group is not None else ""

    @_translated
    def select_ring(
        self,
        e: Eligibility,
        k: int,
        start: int,
        within: Sequence[str] | None = None,
    ) -> list[str]:
        _check_k(k)
        _check_start(start)
        if k == 0:
            return []
        params = _eligibility_params(e) | {"start": start, "k": k}
        restrict = self._in_group(e)
        if within is not None:
            params["within"] = sorted({canonical_uuid(u) for u in within})
            restrict += _sql.WITHIN
        head = (_sql.SELECT_UUID, _sql.FROM_DEVICES, _sql.ELIGIBLE, restrict)
        conn = self._conn
        sql = _sql.query(*head, _sql.RING_FROM, _sql.BY_RING)
        picked = [row[0] for row in conn.execute(sql, params)]
        if len(picked) < k:
            params["k"] = k - len(picked)
            sql = _sql.query(*head, _sql.RING_BEFORE, _sql.BY_RING)
            picked += [row[0] for row in conn.execute(sql, params)]
        return picked

    @_translated
    def select_all(self, e: Eligibility) -> list[str]:
        sql = _sql.query(
            _sql.SELECT_UUID, _sql.FROM_DEVICES, _sql.ELIGIBLE, self._in_group(e), _sql.BY_UUID
        )
        return [row[0] for row in self._conn.execute(sql, _eligibility_params(e))]

    @_translated
    def select_sorted(
        self, e: Eligibility, k: int | None, start: int, eligible: int | None = None
    ) -> list[str]:
        """``sorted(select_ring(e, k, start))``; with ``k`` None, ``select_all(e)``.

        The same devices, chosen in the database: their ids stay in a temporary
        table so that :meth:`record_ripple`, given this very list in the same
        transaction, records them without sending every UUID back.
        ``eligible``, when given, is ``count_eligible(e)`` as the caller just
        counted it (a stale count costs time, never a different result).

        A large ``k`` (an eighth of the fleet or more) is not walked in ring
        order: the walk is cut at a device found by short index walks from an
        estimated position, and every eligible device up to the cut is taken
        in one unsorted pass (``_choose_to_cut``).
        """
        _check_start(start)
        if k is not None:
            _check_k(k)
        conn = self._conn
        self._selected = None
        conn.execute(_sql.CHOSEN_CREATE)
        conn.execute(_sql.CHOSEN_CLEAR)
        params = _eligibility_params(e) | {"start": start, "k": k}
        head = (_sql.CHOSEN_INSERT, _sql.FROM_DEVICES, _sql.ELIGIBLE, self._in_group(e))
        with self._big_statements(pass_over=True):
            if k is None:
                conn.execute(_sql.query(*head), params)
            elif k > 0:
                cut = k * _sql.CUT_WALK_SHARE >= self._fleet_estimate()
                if not (cut and self._choose_to_cut(e, params, k, eligible)):
                    conn.execute(_sql.CHOSEN_CLEAR)
                    self._choose_walk(e, params, k)
            conn.execute(_sql.CHOSEN_ANALYZE)
            uuids: list[str] = []
            for (chunk,) in conn.execute(_sql.CHOSEN_UUIDS):
                uuids.extend(chunk.split("\n"))
        self._selected = (uuids, len(uuids), self._txn if self._depth else -1)
        return uuids

    def _big_statements(
        self, *, maintenance: bool = False, pass_over: bool = False
    ) -> AbstractContextManager[None]:
        """Raise work_mem (and maintenance_work_mem) for the statements of the
        block, and with ``pass_over`` take :data:`~postgres_sql.PASS_SETTINGS`
        (see :meth:`_settings`)."""
        names = {"work_mem": _sql.BIG_WORK_MEM}
        if maintenance:
            names["maintenance_work_mem"] = _sql.BIG_MAINTENANCE_WORK_MEM
        if pass_over:
            names |= _sql.PASS_SETTINGS
        return self._settings(names)

    @contextmanager
    def _settings(self, names: Mapping[str, str]) -> Iterator[None]:
        """Set server settings for the statements of the block, in a
        transaction (the caller's, else one of its own), and put the previous
        values back after it (a failure rolls them back)."""
        conn = self._conn
        idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with conn.transaction() if idle else nullcontext():
            before: list[tuple[str, str]] = []
            for name, value in names.items():
                row = conn.execute(_sql.CURRENT_SETTING, (name,)).fetchone()
                if row is not None:
                    before.append((name, str(row[0])))
                conn.execute(_sql.SET_LOCAL, (name, value))
            yield
            for name, value in before:
                conn.execute(_sql.SET_LOCAL, (name, value))

    def _choose_walk(self, e: Eligibility, params: dict[str, Any], k: int) -> None:
        """The first ``k`` of the walk, in ring order (two index walks)."""
        conn = self._conn
        head = (_sql.CHOSEN_INSERT, _sql.FROM_DEVICES, _sql.ELIGIBLE, self._in_group(e))
        walk = dict(params, k=k)
        found = conn.execute(_sql.query(*head, _sql.RING_FROM, _sql.BY_RING), walk).rowcount
        if found < k:
            walk["k"] = k - found
            conn.execute(_sql.query(*head, _sql.RING_BEFORE, _sql.BY_RING), walk)

    def _fleet_estimate(self) -> int:
        row = self._conn.execute(_sql.DEVICES_ESTIMATE).fetchone()
        return int(row[0]) if row else 0

    def _choose_to_cut(
        self, e: Eligibility, params: dict[str, Any], k: int, eligible: int | None
    ) -> bool:
        """Choose the first ``k`` devices of the walk without ordering them.

        Ring positions are uniform, so the walk's ``t``-th device lies near
        ``start + t / n * 2**64`` (``n`` eligible devices). Every eligible
        device up to a position a few standard deviations past that estimate
        is chosen in one pass; the surplus (or shortfall) is then found by a
        short index walk back (or on) from there. The result is one
        statement's set "eligible and at most the cut in walk order", which
        is exactly the walk's first ``k`` when it holds ``k`` devices; False
        (the caller walks instead) when changes in between left another count.
        """
        conn = self._conn
        n = eligible if eligible is not None else self.count_eligible(e)
        insert = (_sql.CHOSEN_INSERT, _sql.FROM_DEVICES, _sql.ELIGIBLE, self._in_group(e))
        if k >= n:
            return int(conn.execute(_sql.query(*insert), params).rowcount) <= k
        target = k + 4 * math.isqrt(k) + 16
        if target >= n:  # the estimate is past the walk's end: find the k-th device first
            kth = self._nth(e, params, None, None, n - k + 1, backward=True)
            where, bounds = self._interval(None, kth)
            if kth is None or not where:
                return False
            sql = _sql.query(*insert, "AND", where)
            return int(conn.execute(sql, params | bounds).rowcount) == k
        hi: _Position | None = None
        if target < n:
            offset = (target << 64) // n
            ring = (params["start"] + offset) % 2**64
            ring = ring - 2**64 if ring >= 2**63 else ring
            hi = (0 if ring >= params["start"] else 1, ring, _MAX_UUID)
        where, bounds = self._interval(None, hi)
        if not where:
            return False
        sql = _sql.query(*insert, "AND", where)
        chosen = int(conn.execute(sql, params | bounds).rowcount)
        if chosen > k:
            cut = self._nth(e, params, None, hi, chosen - k + 1, backward=True)
            if cut is None:
                return False
            where, bounds = self._interval(cut, hi)
            sql = _sql.query(_sql.CHOSEN_DROP_INTERVAL, "AND", where, ")")
            chosen -= int(conn.execute(sql, params | bounds).rowcount)
        elif chosen < k:
            cut = self._nth(e, params, hi, None, k - chosen, backward=False)
            where, bounds = self._interval(hi, cut)
            if where:
                sql = _sql.query(*insert, "AND", where)
                chosen += int(conn.execute(sql, params | bounds).rowcount)
        return chosen == k

    @staticmethod
    def _interval(
        lo: _Position | None, hi: _Position | None, only: int | None = None
    ) -> tuple[str, dict[str, Any]]:
        """The condition "walk position in (lo, hi]" (None: the walk's start or
        end), or "" for an empty interval, and its bound parameters; with
        ``only``, restricted to that part of the walk (0: ring >= start)."""
        parts: list[str] = []
        for part, base in enumerate((_sql.PART_AFTER, _sql.PART_WRAPPED)):
            if (lo is not None and lo[0] > part) or (hi is not None and hi[0] < part):
                continue
            if only is not None and part != only:
                continue
            terms = [base]
            if lo is not None and lo[0] == part:
                terms.append(_sql.ABOVE_LO)
            if hi is not None and hi[0] == part:
                terms.append(_sql.UP_TO_HI)
            parts.append("(" + " AND ".join(terms) + ")")
        bounds: dict[str, Any] = {}
        if lo is not None:
            bounds |= {"lo_ring": lo[1], "lo_uuid": lo[2]}
        if hi is not None:
            bounds |= {"hi_ring": hi[1], "hi_uuid": hi[2]}
        return ("(" + " OR ".join(parts) + ")" if parts else ""), bounds

    def _nth(
        self,
        e: Eligibility,
        params: dict[str, Any],
        lo: _Position | None,
        hi: _Position | None,
        n: int,
        *,
        backward: bool,
    ) -> _Position | None:
        """The ``n``-th eligible device of the walk interval (lo, hi], counted
        from its start (or its end), by index walks; None if there are fewer."""
        conn = self._conn
        for part in (1, 0) if backward else (0, 1):
            where, bounds = self._interval(lo, hi, part)
            if not where:
                continue
            sql = _sql.query(
                _sql.SELECT_POSITION,
                _sql.FROM_DEVICES,
                _sql.ELIGIBLE,
                self._in_group(e),
                _sql.TAG_KEY,
                "AND",
                where,
                _sql.BACKWARD if backward else _sql.FORWARD,
                _sql.WALK_LIMIT,
            )
            rows = conn.execute(sql, params | bounds | {"n": n}).fetchall()
            if len(rows) == n:
                ring, uuid = rows[-1]
                return (part, int(ring), str(uuid))
            n -= len(rows)
        return None

    def _is_kept_selection(self, uuids_sorted: Sequence[str]) -> bool:
        """Is this the very list :meth:`select_sorted` returned in this transaction?"""
        selected = self._selected
        return (
            selected is not None
            and selected[0] is uuids_sorted
            and selected[1] == len(uuids_sorted)
            and selected[2] == self._txn
            and self._depth > 0
        )

    @_translated
    def explain_ineligible(self, e: Eligibility, uuids: Sequence[str]) -> dict[str, str]:
        params = _eligibility_params(e)
        reasons: dict[str, str] = {}
        for raw in uuids:
            uuid = canonical_uuid(raw)
            row = self._conn.execute(_sql.EXPLAIN, params | {"uuid": uuid}).fetchone()
            reason = ineligible_reason(e, row)
            if reason is not None:
                reasons[uuid] = reason
        return reasons

    # -- rollout history -------------------------------------------------

    @_translated
    def record_ripple(
        self,
        wave: str,
        index: int,
        uuids_sorted: Sequence[str],
        selector: Mapping[str, Any],
        encoding: str,
        key_ids: Sequence[str],
        at: datetime,
    ) -> None:
        kept = self._is_kept_selection(uuids_sorted)
        if kept:  # UUIDs from the database, sorted there: nothing to check
            uuids: Sequence[str] = uuids_sorted
        else:
            uuids = [canonical_uuid(u) for u in uuids_sorted]
            for before, after in itertools.pairwise(uuids):
                if before >= after:
                    raise InputError(
                        f"ripple devices must be sorted and unique; {after} follows {before}"
                    )
        if isinstance(index, bool) or not isinstance(index, int) or index < 1:
            raise InputError(f"ripple index {index!r} must be an integer >= 1")
        check_wave(wave)
        created = check_time(at)
        selector_text = canonical_json(selector)
        conn = self._conn
        with self._atomic():
            conn.execute(_sql.ADD_WAVE, (wave,))
            found = conn.execute(_sql.WAVE_BY_NAME, (wave,)).fetchone()
            assert found is not None  # noqa: S101 - inserted just above
            wave_id = found[0]
            try:
                with conn.transaction():
                    conn.execute(
                        _sql.ADD_RIPPLE,
                        (wave_id, index, created, selector_text, len(uuids), encoding),
                    )
            except pg_errors.UniqueViolation as err:
                raise RefusedError(
                    f"ripple {index} of wave {wave} is already recorded; nothing "
                    "was recorded (a rollout picks the next ripple number)"
                ) from err
            try:
                with conn.transaction():
                    if kept:
                        where = {"wave_id": wave_id, "ripple": index}
                        if self._set_based_keys(len(uuids)):
                            inserted = self._record_bulk(where)
                        else:
                            inserted = conn.execute(_sql.CHOSEN_RECORD, where).rowcount
                        self._selected = None
                        conn.execute(_sql.CHOSEN_CLEAR)
                    else:
                        inserted = conn.execute(
                            _sql.ADD_SELECTIONS,
                            {"wave_id": wave_id, "ripple": index, "uuids": uuids},
                        ).rowcount
            except pg_errors.UniqueViolation as err:
                raise self._double_selection(wave, uuids) from err
            conn.execute(_sql.ANALYZE_SELECTIONS)
            if inserted != len(uuids):
                missing = [u for u in uuids if self.get(u) is None]
                raise InputError(
                    f"{len(missing)} device(s) of ripple {index} are not in the "
                    f"inventory (first: {missing[0] if missing else '?'}); "
                    "nothing was recorded; import them first"
                )
            self.audit(
                "ripple",
                key_ids,
                {
                    "wave": wave,
                    "ripple": index,
                    "devices": len(uuids),
                    "encoding": encoding,
                    "selector": dict(selector),
                },
                at,
            )

    def _record_bulk(self, where: dict[str, Any]) -> int:
        """Insert a large kept selection into ``selections`` bare: its keys,
        unique constraint and indexes dropped, then built again with the same
        names and definitions (one sort per index, one join per key)."""
        conn = self._conn
        with self._big_statements(maintenance=True):
            conn.execute(_sql.SELECTIONS_KEYS_DROP)
            for statement in _sql.SELECTIONS_INDEXES_DROP:
                conn.execute(statement)
            inserted = int(conn.execute(_sql.CHOSEN_RECORD_BULK, where).rowcount)
            for statement in _sql.SELECTIONS_INDEXES_ADD:
                conn.execute(statement)
            with self._settings(_sql.BULK_KEYS_SETTINGS):
                conn.execute(_sql.SELECTIONS_KEYS_ADD)
        return inserted

    def _set_based_keys(self, rows: int) -> bool:
        """Check the keys of ``rows`` new selections in one pass, not per row?"""
        if rows < _sql.SET_BASED_KEYS_MIN:
            return False
        found = self._conn.execute(_sql.SELECTIONS_ESTIMATE).fetchone()
        return found is not None and rows * 4 >= int(found[0])

    def _double_selection(self, wave: str, uuids: Sequence[str]) -> RefusedError:
        for uuid in uuids:
            ripple = self.selected_ripple(wave, uuid)
            if ripple is not None:
                return RefusedError(
                    f"device {uuid} was already selected by ripple {ripple} of "
                    f"wave {wave}; nothing was recorded (select again: the "
                    "selection must skip devices earlier ripples took)"
                )
        return RefusedError(f"a device was selected twice in wave {wave}; nothing was recorded")

    @_translated
    def ripples(self, wave: str) -> list[RippleRecord]:
        return [
            RippleRecord(name, int(idx), from_epoch(created), selector, int(devices), encoding)
            for name, idx, created, selector, devices, encoding in self._conn.execute(
                _sql.RIPPLES, (wave,)
            )
        ]

    def ripple_members(self, wave: str, index: int) -> Iterator[str]:
        return self._rows(_sql.MEMBERS, (wave, index), lambda row: str(row[0]))

    @_translated
    def wave_selections(self, wave: str) -> Iterator[tuple[str, int]]:
        check_wave(wave)
        return self._rows(_sql.WAVE_SELECTIONS, (wave,), lambda row: (str(row[0]), int(row[1])))

    @_translated
    def selected_ripple(self, wave: str, uuid: str) -> int | None:
        row = self._conn.execute(_sql.SELECTED_RIPPLE, (wave, canonical_uuid(uuid))).fetchone()
        return None if row is None else int(row[0])

    @_translated
    def device_selections(self, uuid: str) -> list[tuple[str, int]]:
        return [
            (str(name), int(index))
            for name, index in self._conn.execute(_sql.DEVICE_SELECTIONS, (canonical_uuid(uuid),))
        ]

    @_translated
    def status(self, e: Eligibility) -> list[GroupStatus]:
        params = _eligibility_params(e)
        del params["group"]
        conn = self._conn
        result = [
            GroupStatus("group", name, *(int(c) for c in counts))
            for name, *counts in conn.execute(_sql.STATUS_GROUPS, params)
        ]
        for kind, sql in (("ungrouped", _sql.STATUS_UNGROUPED), ("total", _sql.STATUS_TOTAL)):
            row = conn.execute(sql, params).fetchone() or (0, 0, 0, 0)
            result.append(GroupStatus(kind, None, *(int(c) for c in row)))  # type: ignore[arg-type]
        return result

    # -- audit -----------------------------------------------------------

    @_translated
    def audit(
        self,
        action: str,
        key_ids: Sequence[str],
        arguments: Mapping[str, Any],
        at: datetime | None = None,
    ) -> AuditEntry:
        if not isinstance(action, str) or not action:
            raise InputError("an audit action must be a non-empty string")
        if isinstance(key_ids, str) or not all(isinstance(k, str) for k in key_ids):
            raise InputError("audit key ids must be a list of strings")
        when = check_time(at if at is not None else _now())
        keys = tuple(key_ids)
        arguments_text = canonical_json(dict(arguments))
        with self._atomic():
            row = self._conn.execute(
                _sql.AUDIT, (when, action, canonical_json(list(keys)), arguments_text)
            ).fetchone()
        assert row is not None  # noqa: S101 - INSERT ... RETURNING gives a row
        return AuditEntry(int(row[0]), from_epoch(when), action, keys, arguments_text)

    @_translated
    def audit_log(self, limit: int | None = None) -> list[AuditEntry]:
        return [
            AuditEntry(int(entry_id), from_epoch(at), action, tuple(json.loads(keys)), arguments)
            for entry_id, at, action, keys, arguments in self._conn.execute(
                _sql.AUDIT_LOG, (limit,)
            )
        ]

    # -- device keys and signed reports (schema 2) -----------------------

    def _device_id(self, uuid: str, *, lock: bool = False) -> int:
        sql = _sql.DEVICE_ID_FOR_UPDATE if lock else _sql.DEVICE_ID
        row = self._conn.execute(sql, {"uuid": uuid}).fetchone()
        if row is None:
            raise InputError(
                f"device {uuid} is not in the inventory; import it first "
                "(tufwaves fleet import FILE --repo REPO)"
            )
        return int(row[0])

    @_translated
    def set_public_key(self, uuid: str, public_key: str | None) -> None:
        uuid = canonical_uuid(uuid)
        if public_key is not None:
            check_public_key(public_key)
        with self._atomic():
            device_id = self._device_id(uuid)
            if public_key is None:
                self._conn.execute(_sql.CLEAR_KEY, {"id": device_id})
            else:
                self._conn.execute(_sql.SET_KEY, {"id": device_id, "key": public_key})

    def _store_keys(self, keys: Sequence[tuple[str, str]]) -> None:
        """Keys of an import (inside its transaction; the devices exist)."""
        if keys:
            with self._conn.cursor() as cur:
                cur.executemany(_sql.STAGE_KEY, [{"uuid": u, "key": k} for u, k in keys])

    @_translated
    def public_key(self, uuid: str) -> str | None:
        row = self._conn.execute(_sql.GET_KEY, {"uuid": canonical_uuid(uuid)}).fetchone()
        return None if row is None else str(row[0])

    @_translated
    def store_report(self, report: DeviceReport, ripple: int, envelope: bytes) -> bool:
        received = check_time(_now())
        conn = self._conn
        # Not the inventory's write lock: the device's row lock orders the
        # reports of one device, and devices report in parallel.
        with conn.transaction():
            device_id = self._device_id(report.device, lock=True)
            last = conn.execute(_sql.LAST_REPORT, {"id": device_id}).fetchone()
            if last is not None and report.counter <= last[0]:
                if report.counter == last[0] and report.digest == last[1]:
                    return False
                raise RefusedError(
                    f"replayed report: counter {report.counter} is not above the "
                    f"device's last counter {last[0]}"
                )
            conn.execute(
                _sql.ADD_REPORT,
                {
                    "id": device_id,
                    "counter": report.counter,
                    "wave": report.wave,
                    "ripple": ripple,
                    "version": report.version,
                    "status": report.status,
                    "code": report.code,
                    "installed": report.installed_version,
                    "device_time": check_time(report.device_time),
                    "received": received,
                    "digest": report.digest,
                    "envelope": envelope.decode("utf-8"),
                },
            )
            params = {"id": device_id, "received": received}
            if report.status in _INSTALL_STATES and report.installed_version is not None:
                params["installed"] = report.installed_version
                conn.execute(_sql.REPORT_INSTALLED, params)
            else:
                conn.execute(_sql.REPORT_SEEN, params)
        return True

    @_translated
    def report_counts(self, wave: str) -> list[ReportCounts]:
        check_wave(wave)
        return [
            ReportCounts(int(r), int(n), int(i or 0), int(f or 0))
            for r, n, i, f in self._conn.execute(_sql.REPORT_COUNTS, {"wave": wave})
        ]

    @_translated
    def latest_reports(self, wave: str) -> list[StoredReport]:
        check_wave(wave)
        rows = self._conn.execute(_sql.LATEST_REPORTS, {"wave": wave})
        return [stored_report(row) for row in rows]

    @_translated
    def recent_failures(self, wave: str, limit: int = 20) -> list[StoredReport]:
        check_wave(wave)
        params = {"wave": wave, "limit": _limit(limit)}
        return [stored_report(row) for row in self._conn.execute(_sql.RECENT_FAILURES, params)]

    @_translated
    def device_reports(self, uuid: str, limit: int = 100) -> list[StoredReport]:
        params = {"uuid": canonical_uuid(uuid), "limit": _limit(limit)}
        return [stored_report(row) for row in self._conn.execute(_sql.DEVICE_REPORTS, params)]

    # -- whole tables (migration) ----------------------------------------

    @_translated
    def is_empty(self) -> bool:
        """No device, group, wave or audit entry yet."""
        row = self._conn.execute(_sql.IS_EMPTY).fetchone()
        return bool(row and row[0])

    def export_rows(self, table: str) -> Iterator[tuple[Any, ...]]:
        """Every row of ``table`` in the fixed column order and row order of
        ``postgres_sql.EXPORT`` (UUIDs as canonical text)."""
        return self._rows(_sql.EXPORT[table], (), lambda row: tuple(_plain(v) for v in row))

    @_translated
    def load_rows(self, table: str, rows: Iterable[Sequence[Any]]) -> None:
        """COPY rows (columns of ``postgres_sql.EXPORT_COLUMNS``) into ``table``;
        call inside :meth:`transaction`, then :meth:`reset_sequences`."""
        with self._atomic(), self._conn.cursor().copy(_sql.COPY_IN[table]) as copy:
            for row in rows:
                copy.write_row(row)

    @_translated
    def reset_sequences(self) -> None:
        """Let new rows get ids above the loaded ones."""
        with self._atomic():
            for statement in _sql.RESET_SEQUENCES:
                self._conn.execute(statement)


@contextmanager
def repository_lock(dsn: str, key: int, timeout: float) -> Iterator[None]:
    """Hold the session advisory lock ``key`` on ``dsn``'s server (the repository
    lock across machines); wait up to ``timeout`` seconds."""
    conn = _connect(dsn)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                row = conn.execute(_sql.TRY_ADVISORY_LOCK, (key,)).fetchone()
            except psycopg.Error as e:
                raise _storage_error(e, dsn) from e
            if row and row[0]:
                break
            if time.monotonic() >= deadline:
                raise StorageError(
                    "the repository is locked by a tufwaves command on another "
                    f"machine (PostgreSQL advisory lock {key} on {redact(dsn)}); "
                    "wait for it to finish and try again"
                )
            time.sleep(0.1)
        try:
            yield
        finally:
            with suppress(psycopg.Error):
                conn.execute(_sql.ADVISORY_UNLOCK, (key,))
    finally:
        conn.close()
