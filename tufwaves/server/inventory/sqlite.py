"""The embedded inventory: one SQLite file per repository (``REPO/inventory.sqlite``).

Nothing to start or administer: WAL mode lets readers run while one writer
works, ``BEGIN IMMEDIATE`` serialises writers across processes, and every
statement is parameterised. See ``specs/inventory.md`` for the schema and the
rules it enforces.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import math
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, ParamSpec, Self, TypeVar

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
from tufwaves.server.inventory import sqlite_sql as _sql
from tufwaves.server.inventory.readers import (
    Chunks,
    Match,
    NumberedRows,
    detect_format,
    device_file_chunks,
    group_names,
    row_chunks,
)

__all__ = ["FILENAME", "SCHEMA_VERSION", "SqliteInventory"]

SCHEMA_VERSION = _sql.SCHEMA_VERSION
"""Stored in ``PRAGMA user_version``; 0 means a new, empty file."""

FILENAME = "inventory.sqlite"
"""The inventory's file name inside a repository directory."""

_INSTALL_STATES = ("installed", "rolled_back")
"""Reports whose installed_version becomes the device's."""

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _translated(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn SQLite failures into StorageError (locks into a clear message)."""

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return func(*args, **kwargs)
        except sqlite3.Error as e:
            raise _storage_error(e) from e

    return wrapper


def _storage_error(e: sqlite3.Error) -> StorageError:
    text = str(e)
    if "locked" in text or "busy" in text:
        return StorageError(
            f"the inventory is busy ({text}): another tufwaves process is "
            "writing it; try again when it has finished"
        )
    if "readonly" in text:
        return StorageError(
            f"the inventory cannot be written here ({text}): is this a read-only "
            "copy? Change it where the repository is writable"
        )
    return StorageError(f"the inventory database failed: {text}")


def _connect_read_only(uri: str, timeout: float) -> sqlite3.Connection:
    """Open ``uri`` read-only and read the schema (where a WAL open fails)."""
    conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
    try:
        conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
    except BaseException:
        conn.close()
        raise
    return conn


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


def _groups_json(groups: tuple[str, ...]) -> str:
    """A sorted tuple of group names as the JSON array text staged rows hold
    (names cannot contain a quote or a backslash, so joining them is JSON)."""
    return '["' + '","'.join(groups) + '"]'


def _stage_rows(rows: NumberedRows) -> tuple[list[tuple[Any, ...]], set[tuple[str, ...]]]:
    """Numbered rows as staging-table tuples (groups as JSON text), and every
    distinct tuple of groups among them.

    Group names cannot contain a quote or a backslash, so joining them is JSON.
    """
    batch: list[tuple[Any, ...]] = []
    append = batch.append
    combinations: set[tuple[str, ...]] = set()
    combine = combinations.add
    for line, (uuid, ring, hardware_id, tag, groups, version) in rows:
        if groups:
            groups_json: str | None = _groups_json(groups)
            combine(groups)
        else:
            groups_json = None
        append((line, uuid, ring, hardware_id, tag, version, groups_json))
    return batch, combinations


def _stage_matches(
    first: int, found: Sequence[Match]
) -> tuple[list[tuple[Any, ...]], set[tuple[str, ...]]]:
    """:func:`_stage_rows` of a block of good CSV lines, without a row per line."""
    batch: list[tuple[Any, ...]] = []
    append = batch.append
    combinations: set[tuple[str, ...]] = set()
    combine = combinations.add
    uuids = [fields[0].lower() for fields in found]
    rings = rings_of_canonical(uuids)
    for line, (_, hardware_id, tag, groups_text, version), uuid, ring in zip(
        itertools.count(first), found, uuids, rings, strict=False
    ):
        if not groups_text:
            groups_json = None
        else:
            groups = group_names(groups_text)
            groups_json = _groups_json(groups)
            combine(groups)
        append((line, uuid, ring, hardware_id, tag, int(version) if version else None, groups_json))
    return batch, combinations


def _check_k(k: object) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise InputError(f"k {k!r} must be a non-negative integer")


def _check_start(start: object) -> None:
    if isinstance(start, bool) or not isinstance(start, int) or not -(2**63) <= start < 2**63:
        raise InputError(f"ring start {start!r} must be a signed 64-bit integer")


def _eligibility_params(e: Eligibility) -> dict[str, Any]:
    return {
        "tag": e.tag,
        "hw": json.dumps(sorted(e.hardware_ids)),
        "version": e.version,
        "wave": e.wave,
        "group": e.group,
    }


class SqliteInventory:
    """The :class:`~tufwaves.server.inventory.Inventory` in one SQLite file."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        """Use :meth:`open`; this wraps an already configured connection."""
        self._conn = conn
        self.path = path
        self.read_only = False
        self._depth = 0
        self._txn = 0  # counts outermost transactions
        self._shapes: dict[tuple[str, str], bool] = {}  # see _shape
        self._shapes_txn = -1
        # What select_sorted chose last: (its list, its length, transaction).
        self._selected: tuple[list[str], int, int] | None = None
        self._unchanged = 0  # rows of the last import that matched a device exactly
        self._bulk = False  # the last import was a first import (see _bulk_apply)
        self._schema = _sql.SCHEMA_VERSION  # a read-only older file: its schema

    # -- lifecycle -------------------------------------------------------

    @classmethod
    def open(
        cls, path: Path | str, timeout: float = 30.0, *, read_only: bool = False
    ) -> SqliteInventory:
        """Open (and on first use create) the inventory file at ``path``.

        ``timeout`` is how many seconds a write waits for another process's
        transaction before failing with StorageError.

        ``read_only=True`` opens it for reading only and never creates or
        changes a file, so it works on a copy this process cannot write (see
        specs/inventory.md, "Read-only opening"); a missing file reads as an
        empty inventory.
        """
        path = Path(path)
        if read_only:
            return cls._open_read_only(path, timeout)
        if not path.parent.is_dir():
            raise StorageError(f"cannot create {path}: directory {path.parent} does not exist")
        try:
            conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
        except sqlite3.Error as e:
            raise StorageError(f"cannot open the inventory {path}: {e}") from e
        return cls._configured(conn, path, read_only=False)

    @classmethod
    def _configured(cls, conn: sqlite3.Connection, path: Path, *, read_only: bool) -> Self:
        inventory = cls(conn, path)
        inventory.read_only = read_only
        try:
            inventory._configure()
        except sqlite3.Error as e:
            conn.close()
            if isinstance(e, sqlite3.DatabaseError) and "not a database" in str(e):
                raise StorageError(f"{path} is not an SQLite database") from e
            raise _storage_error(e) from e
        except BaseException:
            conn.close()
            raise
        return inventory

    @classmethod
    def _open_read_only(cls, path: Path, timeout: float) -> SqliteInventory:
        if not path.exists() or path.stat().st_size == 0:
            # Nothing imported yet: an empty inventory, in memory.
            memory = sqlite3.connect(":memory:", isolation_level=None)
            empty = cls._configured(memory, path, read_only=False)
            empty.read_only = True  # nothing it would write is kept
            return empty
        uri = path.resolve().as_uri() + "?mode=ro"
        try:
            conn = _connect_read_only(uri, timeout)
        except sqlite3.OperationalError as e:
            # A WAL database needs its shared-memory index (-shm): without one
            # this process may create or use, read the file as immutable, but
            # only when no write-ahead log holds changes it would miss.
            wal = path.with_name(path.name + "-wal")
            if wal.exists() and wal.stat().st_size > 0:
                raise StorageError(
                    f"cannot read the inventory {path} read-only: {e}. Its write-ahead "
                    f"log {wal.name} holds changes and its {path.name}-shm cannot be "
                    "used by this process; give it read access to both files, or copy "
                    "the inventory when no command is writing it"
                ) from e
            try:
                conn = _connect_read_only(uri + "&immutable=1", timeout)
            except sqlite3.Error as e2:
                raise StorageError(f"cannot read the inventory {path}: {e2}") from e2
        except sqlite3.Error as e:
            if isinstance(e, sqlite3.DatabaseError) and "not a database" in str(e):
                raise StorageError(f"{path} is not an SQLite database") from e
            raise StorageError(f"cannot read the inventory {path}: {e}") from e
        return cls._configured(conn, path, read_only=True)

    def _configure(self) -> None:
        conn = self._conn
        if not self.read_only:  # (query_only would refuse the TEMP tables selection uses)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA cache_size = -131072")  # 128 MiB
        conn.execute("PRAGMA temp.cache_size = -131072")  # imports stage rows there
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == _sql.SCHEMA_VERSION:
            return
        if self.read_only and version in (1, 2):
            self._schema = version  # readable as it is (1: no device keys or reports yet)
            return
        if self.read_only:
            raise StorageError(
                f"{self.path} is not a tufwaves inventory of schema {_sql.SCHEMA_VERSION} "
                f"(schema {version}); open it where it is writable, or upgrade tufwaves"
            )
        with self._atomic():
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                tables = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
                if tables[0]:
                    raise StorageError(
                        f"{self.path} is an SQLite database but not a tufwaves "
                        "inventory; move it away"
                    )
                for statement in _sql.SCHEMA:
                    conn.execute(statement)
            elif version in (1, 2):  # in place, in this transaction
                upgrade = (*_sql.UPGRADE_2, *_sql.UPGRADE_3) if version == 1 else _sql.UPGRADE_3
                for statement in (*upgrade, _sql.SET_VERSION):
                    conn.execute(statement)
            elif version != _sql.SCHEMA_VERSION:
                raise StorageError(
                    f"{self.path} has inventory schema {version}; this tufwaves "
                    f"knows schema {_sql.SCHEMA_VERSION}: upgrade tufwaves"
                )

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
        conn = self._conn
        if self._depth == 0:
            # A reader takes a snapshot; a writer takes the write lock at once.
            conn.execute("BEGIN" if self.read_only else "BEGIN IMMEDIATE")
            self._depth = 1
            self._txn += 1
            try:
                yield
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            finally:
                self._depth = 0
                if self._selected is not None:
                    self._forget_selected()
        else:
            conn.execute("SAVEPOINT tufwaves_nested")
            self._depth += 1
            try:
                yield
            except BaseException:
                conn.execute("ROLLBACK TO tufwaves_nested")
                conn.execute("RELEASE tufwaves_nested")
                raise
            else:
                conn.execute("RELEASE tufwaves_nested")
            finally:
                self._depth -= 1

    @contextmanager
    def transaction(self) -> Iterator[None]:
        try:
            with self._atomic():
                yield
        except sqlite3.Error as e:
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
            # A first import adds every row (a second count would read them all again).
            added = rows if before == 0 and self._bulk else self._count_devices() - before
            self._store_keys(keys)
        unchanged = self._unchanged
        return ImportResult(str(path), fmt, rows, added, rows - added - unchanged, unchanged)

    def _count_devices(self) -> int:
        count: int = self._conn.execute("SELECT count(*) FROM devices").fetchone()[0]
        return count

    @_translated
    def _store(
        self, chunks: Chunks, progress: ProgressCallback | None, source: str, unit: str
    ) -> int:
        """Stage, check and apply numbered rows (``unit`` n of ``source``)."""
        conn = self._conn
        done = 0
        combinations: set[tuple[str, ...]] = set()
        self._bulk = False
        with self._atomic():
            conn.execute(_sql.STAGE_DROP)
            conn.execute(_sql.STAGE_CREATE)
            try:
                for done, (batch, combined) in chunks(_stage_rows, _stage_matches):
                    conn.executemany(_sql.STAGE_ROW, batch)
                    combinations |= combined
                    if progress is not None:
                        progress(done)
                if conn.execute(_sql.EMPTY_INVENTORY).fetchone()[0]:
                    self._unchanged = 0
                    if not self._bulk_apply(combinations):
                        raise self._duplicate(source, unit)
                    self._bulk = True
                else:
                    try:
                        conn.execute(_sql.STAGE_INDEX)
                    except sqlite3.IntegrityError:
                        raise self._duplicate(source, unit) from None
                    self._unchanged = int(conn.execute(_sql.STAGE_UNCHANGED).fetchone()[0])
                    conn.execute(_sql.STAGE_CLEAR_GROUPS)
                    conn.execute(_sql.STAGE_UPSERT)
                    conn.execute(_sql.STAGE_GROUPS)
                    conn.execute(_sql.STAGE_MEMBERSHIPS)
            finally:
                conn.execute(_sql.STAGE_DROP)
        return done

    def _duplicate(self, source: str, unit: str) -> InputError:
        """The error for the first staged row whose UUID an earlier row gave."""
        first, second, uuid = self._conn.execute(_sql.STAGE_DUPLICATE).fetchone()
        return InputError(
            f"{source}{unit} {second}: uuid {uuid} was already given "
            f"on {unit} {first} (a device may appear once); nothing "
            "was imported (fix it and import again)"
        )

    def _bulk_apply(self, combinations: set[tuple[str, ...]]) -> bool:
        """Apply the staged rows to an empty inventory: load the tables in UUID
        order without their secondary indexes, then build those (the same
        definitions, in the same transaction) with a larger page cache and
        the sorter's worker threads. ``combinations`` are the staged rows'
        distinct tuples of groups.

        False if a UUID was staged twice (the caller refuses the import and
        rolls back); nothing else is checked twice.
        """
        conn = self._conn
        for pragma in _sql.IMPORT_CACHE:
            conn.execute(pragma)
        try:
            for statement in _sql.BULK_DROP:
                conn.execute(statement)
            conn.execute(_sql.BULK_SORT)
            conn.execute(_sql.BULK_DEVICES)
            try:
                for statement in _sql.BULK_DEVICE_INDEXES:
                    conn.execute(statement)
            except sqlite3.IntegrityError:
                return False
            names = sorted({name for groups in combinations for name in groups})
            conn.executemany(_sql.BULK_GROUP, [(name,) for name in names])
            ids = {name: n for n, name in enumerate(names, start=1)}  # in an empty table
            conn.execute(_sql.COMBOS_CREATE)
            conn.executemany(
                _sql.COMBOS_ROW,
                [(_groups_json(groups), ids[name]) for groups in combinations for name in groups],
            )
            conn.execute(_sql.BULK_MEMBERSHIPS)
            for statement in _sql.BULK_GROUP_INDEXES:
                conn.execute(statement)
            return True
        finally:
            conn.execute(_sql.BULK_SORTED_DROP)
            conn.execute(_sql.COMBOS_DROP)
            for pragma in _sql.NORMAL_CACHE:
                conn.execute(pragma)

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
                "UPDATE devices SET installed_version = ?, last_seen = ? WHERE uuid = ?",
                (installed_version, seen, uuid),
            )
        return replace(device, installed_version=installed_version, last_seen=from_epoch(seen))

    @_translated
    def get(self, uuid: str) -> Device | None:
        row = self._conn.execute(_sql.GET, (canonical_uuid(uuid),)).fetchone()
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
        except sqlite3.Error as e:
            raise _storage_error(e) from e

    # -- selection -------------------------------------------------------

    @_translated
    def count_eligible(self, e: Eligibility) -> int:
        source, condition = self._pass_source(e)
        params = _eligibility_params(e)
        if self._matching_then_unselect(condition, params):
            in_group = _sql.IN_GROUP_PROBE if e.group is not None else ""
            sql = _sql.query(
                _sql.COUNT_MATCHING,
                source,
                _sql.MATCHES,
                _sql.MINUS_SELECTED,
                _sql.MATCHES,
                in_group,
                _sql.COUNT_END,
            )
        else:
            sql = _sql.query("SELECT count(*)", source, condition)
        count: int = self._conn.execute(sql, params).fetchone()[0]
        return count

    def _matching_then_unselect(self, condition: str, params: dict[str, Any]) -> bool:
        """Should a pass whose ``condition`` is :data:`_sql.ELIGIBLE_SCAN`
        take the matching devices and then take away the wave's selections?
        Yes while the wave has selected fewer than a tenth of the fleet: then
        that is cheaper than looking every row up in the selections."""
        if condition != _sql.ELIGIBLE_SCAN:
            return False
        cap = max(1, self._fleet_size() // 10)
        few: int = self._conn.execute(_sql.SELECTED_FEW, params | {"cap": cap}).fetchone()[0]
        return bool(few)

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
        conn = self._conn
        with self._within(within):
            source, restrict = self._source(e, within)
            head = ("SELECT d.uuid", source)
            sql = _sql.query(*head, _sql.RING_FROM, _sql.ELIGIBLE, restrict, _sql.BY_RING)
            picked = [row[0] for row in conn.execute(sql, params)]
            if len(picked) < k:
                params["k"] = k - len(picked)
                sql = _sql.query(*head, _sql.RING_BEFORE, _sql.ELIGIBLE, restrict, _sql.BY_RING)
                picked += [row[0] for row in conn.execute(sql, params)]
        return picked

    def _source(self, e: Eligibility, within: Sequence[str] | None) -> tuple[str, str]:
        """Which rows to walk for ``e``: (FROM fragment, extra condition).

        An explicit list or a small group is walked member by member; anything
        else walks an index of the devices table and probes the group per
        candidate (a walk that stops after k rows never reads the whole group).
        """
        in_group = _sql.IN_GROUP_PROBE if e.group is not None else ""
        if within is not None:
            return _sql.FROM_WITHIN, in_group
        if e.group is not None and self._small_group(e.group):
            return _sql.FROM_GROUP, ""
        return _sql.FROM_DEVICES + " WHERE", in_group

    def _small_group(self, group: str) -> bool:
        return self._shape(("group", group), self._count_small_group)

    def _count_small_group(self, group: str) -> bool:
        members: int = self._conn.execute(
            _sql.GROUP_SAMPLE, {"group": group, "cap": _sql.SMALL_GROUP}
        ).fetchone()[0]
        return members < _sql.SMALL_GROUP

    def _shape(self, key: tuple[str, str], measure: Callable[[str], bool]) -> bool:
        """``measure(key[1])``, measured once per transaction: which way to
        read rows (a question of speed only; every way gives the same rows)."""
        if self._depth == 0:
            return measure(key[1])
        if self._shapes_txn != self._txn:
            self._shapes.clear()
            self._shapes_txn = self._txn
        found = self._shapes.get(key)
        if found is None:
            found = self._shapes[key] = measure(key[1])
        return found

    def _scan_source(self, e: Eligibility) -> tuple[str, str]:
        """How to visit every eligible device once: (FROM fragment, condition).

        A small group is read member by member. For a tag that a good part of
        the fleet follows the table is read in order, with the wave's
        selections (and the group's members) looked up in lists built once;
        for a rare tag the tag's rows are reached through the (tag, ring)
        index with a probe per row.
        """
        if e.group is not None and self._small_group(e.group):
            return _sql.FROM_GROUP, _sql.ELIGIBLE
        if self._common_tag(e.tag):
            in_group = _sql.IN_GROUP if e.group is not None else ""
            return _sql.FROM_DEVICES_SCAN + " WHERE", _sql.ELIGIBLE_SCAN + in_group
        in_group = _sql.IN_GROUP_PROBE if e.group is not None else ""
        return _sql.FROM_DEVICES + " WHERE", _sql.ELIGIBLE + in_group

    def _pass_source(self, e: Eligibility) -> tuple[str, str]:
        """As :meth:`_scan_source`, for passes that need no order: a large
        group of a common tag is read through its members (rows in ascending
        id order), which beats reading the whole table and looking every row
        up in a list of the group's members."""
        source, condition = self._scan_source(e)
        if e.group is not None and source == _sql.FROM_DEVICES_SCAN + " WHERE":
            return _sql.FROM_GROUP, _sql.ELIGIBLE_SCAN
        return source, condition

    def _common_tag(self, tag: str) -> bool:
        return self._shape(("tag", tag), self._count_common_tag)

    def _count_common_tag(self, tag: str) -> bool:
        """Does at least a third of the fleet follow ``tag``?

        Then a pass over the whole table beats jumping to each of the tag's
        rows from the (tag, ring) index; for a minority tag the index wins.
        Counting stops at a third of the fleet.
        """
        cap = -(-self._fleet_size() // 3)
        found: int = self._conn.execute(_sql.TAG_AT_LEAST, {"tag": tag, "cap": cap}).fetchone()[0]
        return bool(found)

    def _fleet_size(self) -> int:
        """An upper bound of the number of devices (the largest row id)."""
        size: int = self._conn.execute(_sql.FLEET_SIZE).fetchone()[0]
        return size

    @_translated
    def select_sorted(
        self, e: Eligibility, k: int | None, start: int, eligible: int | None = None
    ) -> list[str]:
        """``sorted(select_ring(e, k, start))``; with ``k`` None, ``select_all(e)``.

        The same devices, chosen without bringing the walk into Python; the
        chosen devices' row ids stay in the database so that
        :meth:`record_ripple`, given this very list in the same transaction,
        records them without looking each UUID up again. ``eligible``, when
        given, must be ``count_eligible(e)`` now (the caller has just counted
        in the same transaction).

        For a ``k`` close to the number of eligible devices the walk is turned
        around: every eligible device is taken in one pass except the last
        ``eligible - k`` of the walk, which a short walk backwards from
        ``start`` finds. Both give exactly the first ``k`` of the walk.
        """
        if k is not None:
            _check_k(k)
        _check_start(start)
        conn = self._conn
        self._selected = None
        conn.execute(_sql.CHOSEN_CREATE)
        conn.execute(_sql.CHOSEN_CLEAR)
        params = _eligibility_params(e) | {"start": start}
        if k is None:
            self._choose_all(e, params)
        elif k > 0:
            if eligible is None and k * 4 >= self._fleet_size():
                eligible = self.count_eligible(e)
            if eligible is not None and k >= eligible:
                if self._choose_all(e, params) > k:  # the count was stale: walk instead
                    conn.execute(_sql.CHOSEN_CLEAR)
                    self._choose_walk(e, params, k)
            elif (
                eligible is None
                or eligible - k >= min(k, _sql.SORTED_SCAN_MIN)
                or not self._choose_all_but(e, params, k, eligible - k)
            ):
                self._choose_walk(e, params, k)
        uuids = [row[0] for row in conn.execute(_sql.CHOSEN_UUIDS)]
        uuids.sort()  # chosen rows come in row id order: runs already in UUID order
        self._selected = (uuids, len(uuids), self._txn if self._depth else -1)
        return uuids

    def _choose_all(self, e: Eligibility, params: dict[str, Any]) -> int:
        source, condition = self._pass_source(e)
        sql = _sql.query(_sql.CHOSEN_INSERT, source, condition)
        count: int = self._conn.execute(sql, params).rowcount
        return count

    def _choose_all_but(self, e: Eligibility, params: dict[str, Any], k: int, skip: int) -> bool:
        """Choose all eligible devices but the last ``skip`` of the walk from
        ``start``; False (nothing chosen) if that does not leave ``k``."""
        conn = self._conn
        conn.execute(_sql.PASSED_CREATE)
        conn.execute(_sql.PASSED_CLEAR)
        try:
            source, restrict = self._source(e, None)
            back = dict(params, k=skip)
            sql = _sql.query(
                _sql.PASSED_INSERT,
                source,
                _sql.RING_BEFORE,
                _sql.ELIGIBLE,
                restrict,
                _sql.BY_RING_DESC,
            )
            found: int = conn.execute(sql, back).rowcount
            if found < skip:
                back["k"] = skip - found
                sql = _sql.query(
                    _sql.PASSED_INSERT,
                    source,
                    _sql.RING_FROM,
                    _sql.ELIGIBLE,
                    restrict,
                    _sql.BY_RING_DESC,
                )
                found += conn.execute(sql, back).rowcount
            scan, condition = self._pass_source(e)
            sql = _sql.query(_sql.CHOSEN_INSERT, scan, condition, _sql.NOT_PASSED)
            if found == skip and conn.execute(sql, params).rowcount == k:
                return True
            conn.execute(_sql.CHOSEN_CLEAR)  # the count was stale: walk instead
            return False
        finally:
            conn.execute(_sql.PASSED_CLEAR)

    def _choose_walk(self, e: Eligibility, params: dict[str, Any], k: int) -> None:
        conn = self._conn
        if k >= _sql.SORTED_SCAN_MIN:
            scan, _ = self._scan_source(e)
            if scan != _sql.FROM_GROUP:  # a small group is walked member by member
                self._choose_cut(e, params, k)
                return
        source, restrict = self._source(e, None)
        sql = _sql.query(
            _sql.CHOSEN_INSERT, source, _sql.RING_FROM, _sql.ELIGIBLE, restrict, _sql.BY_RING
        )
        found: int = conn.execute(sql, dict(params, k=k)).rowcount
        if found < k:
            sql = _sql.query(
                _sql.CHOSEN_INSERT, source, _sql.RING_BEFORE, _sql.ELIGIBLE, restrict, _sql.BY_RING
            )
            conn.execute(sql, dict(params, k=k - found))

    def _choose_cut(self, e: Eligibility, params: dict[str, Any], k: int) -> None:
        """The first ``k`` of the walk from ``start``, for a large ``k``,
        without sorting them (specs/inventory.md section 5, "cut walk").

        A sample of the eligible devices (every ``step``-th row id) estimates
        a ring position ``cut`` a little past the k-th device of the walk;
        one unordered pass chooses every eligible device from ``start`` up to
        ``cut``; then the walk's exact end is found through the (tag, ring)
        index: the surplus is removed from the end of that window, in walk
        order, or, when the estimate fell short, the missing devices are
        walked after it. Only the sample's luck decides how much index is
        read; the devices chosen are always exactly the walk's first ``k``.
        """
        conn = self._conn
        start: int = params["start"]
        last = self._fleet_size()
        step = max(1, last // _sql.CUT_SAMPLE_ROWS)
        in_group = _sql.IN_GROUP_PROBE if e.group is not None else ""
        sample = _sql.query(_sql.CUT_SAMPLE, _sql.ELIGIBLE, in_group)
        ring = 1 << 64
        rows = conn.execute(sample, params | {"step": step, "last": last})
        distances = sorted((r - start) % ring for (r,) in rows)
        expected = k / step  # sampled devices among the walk's first k
        rank = math.ceil(expected + 3 * math.sqrt(expected)) + 16
        # The window [start, cut) in walk order and the ranges before and
        # after its end, each in walk order.
        ends: tuple[str, ...]
        after: tuple[str, ...]
        if rank >= len(distances):  # the whole ring
            cut, window = start, ""
            ends, after = (_sql.RING_BEFORE, _sql.RING_FROM), ()
        else:
            cut = start + distances[rank]
            if cut < 2**63:
                window, ends = _sql.RING_WINDOW, (_sql.RING_WINDOW,)
                after = (_sql.RING_FROM_CUT, _sql.RING_BEFORE)
            else:
                cut -= ring
                window, ends = _sql.RING_WRAPPED, (_sql.RING_BEFORE_CUT, _sql.RING_FROM)
                after = (_sql.RING_CUT_TO_START,)
        bound = params | {"cut": cut}
        scan, condition = self._pass_source(e)
        if self._matching_then_unselect(condition, bound):
            sql = _sql.query(_sql.CHOSEN_INSERT, scan, window, _sql.MATCHES)
            found: int = conn.execute(sql, bound).rowcount
            found -= conn.execute(_sql.CHOSEN_UNSELECT, bound).rowcount
        else:
            sql = _sql.query(_sql.CHOSEN_INSERT, scan, window, condition)
            found = conn.execute(sql, bound).rowcount
        for part in ends:  # too many: remove the last ones of the window
            if found <= k:
                break
            trim = (_sql.CUT_TRIM, part, _sql.IS_CHOSEN, _sql.BY_RING_DESC, _sql.CUT_TRIM_END)
            sql = _sql.query(*trim)
            found -= conn.execute(sql, bound | {"k": found - k}).rowcount
        source, restrict = self._source(e, None)
        for part in after:  # too few: walk on after the window
            if found >= k:
                break
            sql = _sql.query(
                _sql.CHOSEN_INSERT, source, part, _sql.ELIGIBLE, restrict, _sql.BY_RING
            )
            found += conn.execute(sql, bound | {"k": k - found}).rowcount

    @contextmanager
    def _within(self, within: Sequence[str] | None) -> Iterator[None]:
        if within is None:
            yield
            return
        uuids = [(canonical_uuid(u),) for u in within]
        conn = self._conn
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS within_devices (id INTEGER PRIMARY KEY)")
        conn.execute("DELETE FROM temp.within_devices")
        try:
            conn.executemany(
                "INSERT OR IGNORE INTO temp.within_devices (id) "
                "SELECT id FROM devices WHERE uuid = ?",
                uuids,
            )
            yield
        finally:
            conn.execute("DELETE FROM temp.within_devices")

    @_translated
    def select_all(self, e: Eligibility) -> list[str]:
        source, condition = self._scan_source(e)
        if source == _sql.FROM_DEVICES_SCAN + " WHERE":
            # Walking the UUID index yields the answer already sorted and, as
            # imports insert in UUID order, reads the table nearly in order.
            source = _sql.FROM_DEVICES_BY_UUID + " WHERE"
        sql = _sql.query("SELECT d.uuid", source, condition, _sql.BY_UUID)
        return [row[0] for row in self._conn.execute(sql, _eligibility_params(e))]

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

    def _forget_selected(self) -> None:
        """Drop what select_sorted chose (it is only valid in its transaction)."""
        self._selected = None
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute(_sql.CHOSEN_CLEAR)

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
        if self._is_kept_selection(uuids_sorted):
            self._record_kept(wave, index, uuids_sorted, selector, encoding, key_ids, at)
            return
        uuids = [canonical_uuid(u) for u in uuids_sorted]
        for before, after in itertools.pairwise(uuids):
            if before >= after:
                raise InputError(
                    f"ripple devices must be sorted and unique; {after} follows {before}"
                )

        def add(wave_id: int) -> int:
            inserted: int = self._conn.executemany(
                _sql.ADD_SELECTION, [(wave_id, index, u) for u in uuids]
            ).rowcount
            return inserted

        self._record(wave, index, uuids, add, selector, encoding, key_ids, at)

    @_translated
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

    def _record_kept(
        self,
        wave: str,
        index: int,
        uuids_sorted: Sequence[str],
        selector: Mapping[str, Any],
        encoding: str,
        key_ids: Sequence[str],
        at: datetime,
    ) -> None:
        """Record the list :meth:`select_sorted` just chose from the row ids it
        kept, in row id order, without looking each UUID up again."""

        def add(wave_id: int) -> int:
            inserted: int = self._conn.execute(_sql.CHOSEN_RECORD, (wave_id, index)).rowcount
            return inserted

        self._record(wave, index, uuids_sorted, add, selector, encoding, key_ids, at)
        self._forget_selected()

    def _record(
        self,
        wave: str,
        index: int,
        uuids: Sequence[str],
        add: Callable[[int], int],
        selector: Mapping[str, Any],
        encoding: str,
        key_ids: Sequence[str],
        at: datetime,
    ) -> None:
        """Store a ripple whose (checked) devices ``add(wave_id)`` inserts."""
        if isinstance(index, bool) or not isinstance(index, int) or index < 1:
            raise InputError(f"ripple index {index!r} must be an integer >= 1")
        check_wave(wave)
        created = check_time(at)
        selector_text = canonical_json(selector)
        conn = self._conn
        with self._atomic():
            conn.execute(
                "INSERT INTO waves (name) VALUES (?) ON CONFLICT (name) DO NOTHING",
                (wave,),
            )
            wave_id = conn.execute("SELECT id FROM waves WHERE name = ?", (wave,)).fetchone()[0]
            try:
                conn.execute(
                    "INSERT INTO ripples "
                    "(wave_id, idx, created, selector, devices, encoding) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (wave_id, index, created, selector_text, len(uuids), encoding),
                )
            except sqlite3.IntegrityError as err:
                raise RefusedError(
                    f"ripple {index} of wave {wave} is already recorded; nothing "
                    "was recorded (a rollout picks the next ripple number)"
                ) from err
            try:
                inserted = add(wave_id)
            except sqlite3.IntegrityError as err:
                raise self._double_selection(wave, uuids) from err
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
            RippleRecord(name, idx, from_epoch(created), selector, devices, encoding)
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
            GroupStatus("group", name, *counts)
            for name, *counts in conn.execute(_sql.STATUS_GROUPS, params)
        ]
        ungrouped = conn.execute(_sql.STATUS_UNGROUPED, params).fetchone()
        result.append(GroupStatus("ungrouped", None, *ungrouped))
        total = conn.execute(_sql.STATUS_TOTAL, params).fetchone()
        result.append(GroupStatus("total", None, *total))
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
            entry_id = self._conn.execute(
                _sql.AUDIT, (when, action, canonical_json(list(keys)), arguments_text)
            ).fetchone()[0]
        return AuditEntry(entry_id, from_epoch(when), action, keys, arguments_text)

    @_translated
    def audit_log(self, limit: int | None = None) -> list[AuditEntry]:
        return [
            AuditEntry(entry_id, from_epoch(at), action, tuple(json.loads(keys)), arguments)
            for entry_id, at, action, keys, arguments in self._conn.execute(
                _sql.AUDIT_LOG, (limit,)
            )
        ]

    # -- device keys and signed reports (schema 2) -----------------------

    def _device_id(self, uuid: str) -> int:
        row = self._conn.execute(_sql.DEVICE_ID, (uuid,)).fetchone()
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
                self._conn.execute(_sql.CLEAR_KEY, (device_id,))
            else:
                self._conn.execute(_sql.SET_KEY, (device_id, public_key))

    def _store_keys(self, keys: Sequence[tuple[str, str]]) -> None:
        """Keys of an import (inside its transaction; the devices exist)."""
        if keys:
            self._conn.executemany(_sql.STAGE_KEY, [(key, uuid) for uuid, key in keys])

    @_translated
    def public_key(self, uuid: str) -> str | None:
        if self._schema < 2:
            return None
        row = self._conn.execute(_sql.GET_KEY, (canonical_uuid(uuid),)).fetchone()
        return None if row is None else str(row[0])

    @_translated
    def store_report(self, report: DeviceReport, ripple: int, envelope: bytes) -> bool:
        received = check_time(_now())
        conn = self._conn
        with self._atomic():
            device_id = self._device_id(report.device)
            last = conn.execute(_sql.LAST_REPORT, (device_id,)).fetchone()
            if last is not None and report.counter <= last[0]:
                same = (device_id, report.counter, report.digest)
                if conn.execute(_sql.SAME_REPORT, same).fetchone() is not None:
                    return False
                raise RefusedError(
                    f"replayed report: counter {report.counter} is not above the "
                    f"device's last counter {last[0]}"
                )
            conn.execute(
                _sql.ADD_REPORT,
                (
                    device_id,
                    report.counter,
                    report.wave,
                    ripple,
                    report.version,
                    report.status,
                    report.code,
                    report.installed_version,
                    check_time(report.device_time),
                    received,
                    report.digest,
                    envelope.decode("utf-8"),
                ),
            )
            if report.status in _INSTALL_STATES and report.installed_version is not None:
                conn.execute(_sql.REPORT_INSTALLED, (report.installed_version, received, device_id))
            else:
                conn.execute(_sql.REPORT_SEEN, (received, device_id))
        return True

    @_translated
    def report_counts(self, wave: str) -> list[ReportCounts]:
        check_wave(wave)
        if self._schema < 2:
            return []
        return [
            ReportCounts(int(r), int(n), int(i or 0), int(f or 0))
            for r, n, i, f in self._conn.execute(_sql.REPORT_COUNTS, (wave,))
        ]

    @_translated
    def latest_reports(self, wave: str) -> list[StoredReport]:
        check_wave(wave)
        if self._schema < 2:
            return []
        return [stored_report(row) for row in self._conn.execute(_sql.LATEST_REPORTS, (wave,))]

    @_translated
    def recent_failures(self, wave: str, limit: int = 20) -> list[StoredReport]:
        check_wave(wave)
        if self._schema < 2:
            return []
        rows = self._conn.execute(_sql.RECENT_FAILURES, (wave, _limit(limit)))
        return [stored_report(row) for row in rows]

    @_translated
    def device_reports(self, uuid: str, limit: int = 100) -> list[StoredReport]:
        uuid = canonical_uuid(uuid)
        if self._schema < 2:
            return []
        rows = self._conn.execute(_sql.DEVICE_REPORTS, (uuid, _limit(limit)))
        return [stored_report(row) for row in rows]


def _limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InputError(f"limit {limit!r} must be a non-negative integer")
    return limit
