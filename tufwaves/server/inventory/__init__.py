"""The fleet inventory: which devices exist, what they run, which ripple took them.

The rollout code talks to an :class:`Inventory`, a protocol with no database in
it; :mod:`tufwaves.server.inventory.sqlite` is the embedded default (one file per
repository) and a PostgreSQL implementation is meant to be a second class with
the same methods. Everything an implementation must agree on -- UUID
normalisation, the ring position, the name rules, the device file formats --
lives here so that two implementations select the same devices.

See ``specs/inventory.md`` for the normative description.
"""

from __future__ import annotations

import hashlib
import json
import struct
import uuid as uuid_mod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NamedTuple, Protocol, Self

from tufwaves.device import profile
from tufwaves.device.profile import MAX_VERSION, canonical_uuid
from tufwaves.device.report import DeviceReport
from tufwaves.errors import InputError

__all__ = [
    "MAX_VERSION",
    "AuditEntry",
    "Device",
    "DeviceRow",
    "Eligibility",
    "GroupStatus",
    "ImportResult",
    "Inventory",
    "ProgressCallback",
    "ReportCounts",
    "RippleRecord",
    "StoredReport",
    "canonical_uuid",
    "ring_position",
]

ProgressCallback = Callable[[int], None]
"""Called now and then during an import with the number of rows read so far."""

CSV_HEADER = ("uuid", "hardware_id", "tag", "groups", "installed_version")
CSV_HEADER_KEYS = (*CSV_HEADER, "public_key")
"""The 6-column header: a device's ed25519 public key (64 hex digits) or empty."""


# -- domain values -----------------------------------------------------------


@dataclass(frozen=True)
class DeviceRow:
    """One device as an import states it.

    ``installed_version`` ``None`` means "this row does not know"; an import
    then keeps whatever version the inventory already has for the device.
    """

    uuid: str
    hardware_id: str
    tag: str
    groups: frozenset[str] = frozenset()
    installed_version: int | None = None


@dataclass(frozen=True)
class Device:
    """One device as the inventory knows it."""

    uuid: str
    hardware_id: str
    tag: str
    groups: frozenset[str]
    installed_version: int | None
    last_seen: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """As JSON-ready data (what ``--json`` prints).

        Returns:
            A dict of JSON types.
        """
        return {
            "uuid": self.uuid,
            "hardware_id": self.hardware_id,
            "tag": self.tag,
            "groups": sorted(self.groups),
            "installed_version": self.installed_version,
            "last_seen": _format_time(self.last_seen),
        }


@dataclass(frozen=True)
class Eligibility:
    """Which devices a wave may still pick.

    A device is eligible when its tag is ``tag``, its hardware id is one of
    ``hardware_ids``, its installed version is unknown or below ``version``,
    no earlier ripple of ``wave`` selected it and, if ``group`` is set, it is
    in that group.
    """

    wave: str
    tag: str
    hardware_ids: frozenset[str]
    version: int
    group: str | None = None

    def __post_init__(self) -> None:
        check_wave(self.wave)
        check_name("tag", self.tag)
        if not isinstance(self.hardware_ids, frozenset) or not self.hardware_ids:
            raise InputError("a wave needs a non-empty frozenset of hardware ids")
        for hardware_id in self.hardware_ids:
            check_name("hardware id", hardware_id)
        check_version("wave version", self.version)
        if self.group is not None:
            check_name("group", self.group)


@dataclass(frozen=True)
class ImportResult:
    """What one ``import_file`` did."""

    path: str
    format: Literal["csv", "jsonl"]
    rows: int
    added: int
    updated: int  # existing devices the file changed
    unchanged: int = 0  # existing devices the file gave exactly as stored

    def to_dict(self) -> dict[str, Any]:
        """As JSON-ready data (what ``--json`` prints).

        Returns:
            A dict of JSON types.
        """
        return {
            "path": self.path,
            "format": self.format,
            "rows": self.rows,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
        }


@dataclass(frozen=True)
class RippleRecord:
    """A ripple as the inventory recorded it (the signed ripple role is canon)."""

    wave: str
    index: int
    created: datetime
    selector: str  # canonical JSON text of how the devices were chosen
    devices: int
    encoding: str

    @property
    def selector_data(self) -> dict[str, Any]:
        """The selector, parsed."""
        data: dict[str, Any] = json.loads(self.selector)
        return data

    @property
    def size_label(self) -> str:
        """The ripple's size for people: a device count, or a fraction ripple's
        percentage (it names no devices)."""
        if self.encoding == "fraction":
            return f"{self.selector_data.get('fraction_ppm', 0) / 10_000:g}%"
        return f"{self.devices:,}"

    def to_dict(self) -> dict[str, Any]:
        """As JSON-ready data (what ``--json`` prints).

        Returns:
            A dict of JSON types.
        """
        return {
            "wave": self.wave,
            "index": self.index,
            "created": _format_time(self.created),
            "selector": self.selector_data,
            "devices": self.devices,
            "encoding": self.encoding,
        }


@dataclass(frozen=True)
class GroupStatus:
    """Counts for one group of a wave's status.

    ``kind`` is ``"group"`` (``group`` names it), ``"ungrouped"`` (devices in
    no group) or ``"total"`` (every device once, whatever its groups).
    """

    kind: Literal["group", "ungrouped", "total"]
    group: str | None
    total: int
    eligible: int
    selected: int
    updated: int

    def to_dict(self) -> dict[str, Any]:
        """As JSON-ready data (what ``--json`` prints).

        Returns:
            A dict of JSON types.
        """
        return {
            "kind": self.kind,
            "group": self.group,
            "total": self.total,
            "eligible": self.eligible,
            "selected": self.selected,
            "updated": self.updated,
        }


@dataclass(frozen=True)
class AuditEntry:
    """One line of the append-only audit log."""

    id: int
    at: datetime
    action: str
    key_ids: tuple[str, ...]
    arguments: str  # canonical JSON text of an object

    @property
    def arguments_data(self) -> dict[str, Any]:
        """The arguments, parsed."""
        data: dict[str, Any] = json.loads(self.arguments)
        return data

    def to_dict(self) -> dict[str, Any]:
        """As JSON-ready data (what ``--json`` prints).

        Returns:
            A dict of JSON types.
        """
        return {
            "id": self.id,
            "at": _format_time(self.at),
            "action": self.action,
            "key_ids": list(self.key_ids),
            "arguments": self.arguments_data,
        }


@dataclass(frozen=True)
class StoredReport:
    """A device-signed report as the inventory keeps it (``specs/reports.md``)."""

    device: str
    wave: str
    ripple: int  # the ripple that offered the wave to the device
    version: int
    status: str
    code: str | None
    installed_version: int | None
    counter: int
    device_time: datetime
    received: datetime

    def to_dict(self) -> dict[str, Any]:
        """As JSON-ready data.

        Returns:
            A dict of JSON types.
        """
        return {
            "device": self.device,
            "wave": self.wave,
            "ripple": self.ripple,
            "version": self.version,
            "status": self.status,
            "code": self.code,
            "installed_version": self.installed_version,
            "counter": self.counter,
            "device_time": _format_time(self.device_time),
            "received": _format_time(self.received),
        }


@dataclass(frozen=True)
class ReportCounts:
    """Per ripple of a wave: devices whose latest report for the wave is ...

    ``reported`` counts every device with a report, ``installed`` those whose
    latest status is ``installed``, ``failed`` those whose latest is
    ``failed`` or ``rolled_back``.
    """

    ripple: int
    reported: int
    installed: int
    failed: int


def stored_report(row: Sequence[Any]) -> StoredReport:
    """A :class:`StoredReport` from the columns of a reports query."""
    uuid, wave, ripple, version, status, code, installed, counter, device_time, received = row
    return StoredReport(
        str(uuid),
        wave,
        int(ripple),
        int(version),
        status,
        code,
        None if installed is None else int(installed),
        int(counter),
        from_epoch(int(device_time)),
        from_epoch(int(received)),
    )


# -- the protocol ------------------------------------------------------------


class Inventory(Protocol):
    """The fleet inventory and rollout history of one repository.

    Every method that writes is atomic on its own; :meth:`transaction` makes a
    larger unit (select devices, record the ripple, publish metadata) that two
    processes can never interleave. UUID arguments are validated and
    normalised; bad input raises :class:`~tufwaves.errors.InputError`, a
    database that cannot be used raises :class:`~tufwaves.errors.StorageError`.
    """

    def transaction(self) -> AbstractContextManager[None]:
        """Hold the inventory's write lock until the block ends; roll back on error.

        Nested uses join the outer transaction (and roll back only their part).
        """
        ...

    def close(self) -> None:
        """Release the database; the object is unusable afterwards."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    # devices

    def import_rows(
        self, rows: Iterable[DeviceRow], progress: ProgressCallback | None = None
    ) -> int:
        """Insert or update every row (groups are replaced); all or nothing."""
        ...

    def import_file(self, path: Path, progress: ProgressCallback | None = None) -> ImportResult:
        """Import a CSV or JSON-lines device file; a bad line imports nothing."""
        ...

    def report(self, uuid: str, installed_version: int, at: datetime | None = None) -> Device:
        """Record what a device reported: its installed version, seen ``at``."""
        ...

    def get(self, uuid: str) -> Device | None:
        """The device ``uuid``, or None if the inventory does not know it."""
        ...

    def list_devices(
        self,
        group: str | None = None,
        tag: str | None = None,
        limit: int | None = None,
    ) -> Iterator[Device]:
        """Devices in UUID order, optionally only one group and/or tag."""
        ...

    # selection

    def count_eligible(self, e: Eligibility) -> int:
        """How many devices ``e`` allows now."""
        ...

    def select_ring(
        self,
        e: Eligibility,
        k: int,
        start: int,
        within: Sequence[str] | None = None,
    ) -> list[str]:
        """The first ``k`` eligible devices on the ring from ``start``, in ring order.

        With ``within``, only devices of that UUID list are considered.
        """
        ...

    def select_all(self, e: Eligibility) -> list[str]:
        """Every eligible device, sorted by UUID."""
        ...

    def select_sorted(
        self, e: Eligibility, k: int | None, start: int, eligible: int | None = None
    ) -> list[str]:
        """Exactly ``sorted(select_ring(e, k, start))``, or ``select_all(e)`` for
        ``k`` None: what a rollout signs. ``eligible``, when given, is
        ``count_eligible(e)`` counted in the same transaction. An
        implementation may keep the choice so that :meth:`record_ripple`, given
        this very list in the same transaction, records it without looking each
        device up again."""
        ...

    def explain_ineligible(self, e: Eligibility, uuids: Sequence[str]) -> dict[str, str]:
        """For each listed device that ``e`` does not allow: why not (canonical UUID keys)."""
        ...

    # rollout history

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
        """Record a ripple and its devices, and audit it; a device already
        selected by this wave aborts the whole ripple (RefusedError)."""
        ...

    def ripples(self, wave: str) -> list[RippleRecord]:
        """The recorded ripples of ``wave``, by index."""
        ...

    def ripple_members(self, wave: str, index: int) -> Iterator[str]:
        """The UUIDs a ripple selected, sorted."""
        ...

    def selected_ripple(self, wave: str, uuid: str) -> int | None:
        """The index of the ripple of ``wave`` that selected the device, or None."""
        ...

    def wave_selections(self, wave: str) -> Iterator[tuple[str, int]]:
        """Every (UUID, ripple index) the list and Merkle ripples of ``wave``
        recorded, in UUID order (fraction ripples record none)."""
        ...

    def device_selections(self, uuid: str) -> list[tuple[str, int]]:
        """Every (wave, ripple index) that selected the device, sorted."""
        ...

    def status(self, e: Eligibility) -> list[GroupStatus]:
        """Per-group counts for a wave (``e.group`` is ignored): one row per
        group in name order, then the ungrouped row, then the total row."""
        ...

    # device keys and signed reports (specs/reports.md)

    def set_public_key(self, uuid: str, public_key: str | None) -> None:
        """Set, rotate (or with None remove) the device's ed25519 public key
        (64 lowercase hex digits); InputError for a device not in the inventory."""
        ...

    def public_key(self, uuid: str) -> str | None:
        """The device's public key, or None (no key, or no such device)."""
        ...

    def store_report(self, report: DeviceReport, ripple: int, envelope: bytes) -> bool:
        """Store a verified report in one transaction: True when stored now,
        False when this very report (same counter and digest) was stored
        before. A counter not above the device's last one is a replay
        (RefusedError), nothing stored. ``installed`` and ``rolled_back``
        reports with an ``installed_version`` set the device's installed
        version; every stored report sets its last-seen time."""
        ...

    def report_counts(self, wave: str) -> list[ReportCounts]:
        """Per ripple (by index), counts of the devices' latest reports for ``wave``."""
        ...

    def latest_reports(self, wave: str) -> list[StoredReport]:
        """Each device's latest report (highest counter) for ``wave``, in UUID order:
        one per device that reported about the wave (what the gates count)."""
        ...

    def recent_failures(self, wave: str, limit: int = 20) -> list[StoredReport]:
        """The newest ``failed`` and ``rolled_back`` reports for ``wave``, newest first."""
        ...

    def device_reports(self, uuid: str, limit: int = 100) -> list[StoredReport]:
        """The device's newest reports, highest counter first."""
        ...

    # audit

    def audit(
        self,
        action: str,
        key_ids: Sequence[str],
        arguments: Mapping[str, Any],
        at: datetime | None = None,
    ) -> AuditEntry:
        """Append an entry to the audit log (``at`` default: now) and return it."""
        ...

    def audit_log(self, limit: int | None = None) -> list[AuditEntry]:
        """The newest ``limit`` entries (all without a limit), oldest first."""
        ...


# -- rules shared by every implementation ------------------------------------

_RING = struct.Struct(">q")
_sha256 = hashlib.sha256


def ring_position(uuid: str) -> int:
    """The device's place on the selection ring.

    The first 8 bytes of SHA-256 over the UUID's 16 raw bytes, read as a
    big-endian signed 64-bit integer.
    """
    raw = uuid_mod.UUID(canonical_uuid(uuid)).bytes
    return int.from_bytes(hashlib.sha256(raw).digest()[:8], "big", signed=True)


def ring_of_canonical(uuid: str) -> int:
    """:func:`ring_position` of an already canonical UUID, without re-checking it."""
    return rings_of_canonical((uuid,))[0]


def rings_of_canonical(uuids: Iterable[str]) -> list[int]:
    """:func:`ring_position` of each already canonical UUID, without re-checking
    them (imports call this for a block of lines at a time). Hex digits in
    upper case give the same positions (the 16 raw bytes are the same)."""
    unpack, sha256, from_hex = _RING.unpack_from, _sha256, bytes.fromhex
    return [unpack(sha256(from_hex(uuid.replace("-", ""))).digest())[0] for uuid in uuids]


def check_name(what: str, value: object) -> str:
    """A tag, hardware id or group name, or InputError."""
    return profile.check_label(what, value)


def check_wave(value: object) -> str:
    """A wave name, or InputError."""
    return profile.check_wave_name(value)


def check_version(what: str, value: object) -> int:
    """A release version (``int``, 0 to ``MAX_VERSION``), or InputError."""
    return profile.check_version(value, what)


def check_time(at: datetime) -> int:
    """A timezone-aware time as whole UTC seconds since the epoch."""
    if not isinstance(at, datetime) or at.tzinfo is None:
        raise InputError(f"time {at!r} must be a timezone-aware datetime")
    return int(at.timestamp() // 1)


def from_epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _format_time(at: datetime | None) -> str | None:
    if at is None:
        return None
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def canonical_json(obj: Mapping[str, Any] | Sequence[Any]) -> str:
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise InputError(f"cannot store {obj!r} as JSON: {e}") from e


class NormalRow(NamedTuple):
    """A validated row, ready to store: canonical UUID plus its ring position.

    A named tuple rather than a dataclass: imports build a million of them.
    """

    uuid: str
    ring: int
    hardware_id: str
    tag: str
    groups: tuple[str, ...]
    installed_version: int | None


def normalise_row(row: DeviceRow) -> NormalRow:
    """Validate a DeviceRow (InputError says which field) and normalise it."""
    uuid = canonical_uuid(row.uuid)
    check_name("hardware_id", row.hardware_id)
    check_name("tag", row.tag)
    if isinstance(row.groups, str):
        raise InputError("groups must be a collection of group names, not a string")
    groups = tuple(sorted({check_name("group", g) for g in row.groups}))
    version = row.installed_version
    if version is not None:
        check_version("installed_version", version)
    return NormalRow(uuid, ring_of_canonical(uuid), row.hardware_id, row.tag, groups, version)


def list_filters(group: str | None, tag: str | None, limit: int | None) -> dict[str, Any]:
    """The checked filters of :meth:`Inventory.list_devices`, as query parameters.

    Raises:
        InputError: a malformed group or tag, or a negative limit.
    """
    if group is not None:
        check_name("group", group)
    if tag is not None:
        check_name("tag", tag)
    if limit is not None and (isinstance(limit, bool) or limit < 0):
        raise InputError(f"limit {limit!r} must be a non-negative integer")
    return {"group": group, "tag": tag, "limit": limit}


def ineligible_reason(e: Eligibility, row: Sequence[Any] | None) -> str | None:
    """Why a device is not eligible for ``e`` (None when it is), checked in the
    order of ``specs/inventory.md`` section 6.

    ``row`` is the device's (tag, hardware id, installed version, ripple of
    ``e.wave`` that selected it or None, member of ``e.group`` or no group
    asked), or None for a device not in the inventory.
    """
    if row is None:
        return "not in the inventory"
    tag, hardware_id, version, ripple, in_group = row
    if tag != e.tag:
        return f"tag is {tag}, wave is for {e.tag}"
    if hardware_id not in e.hardware_ids:
        return f"hardware id {hardware_id} not in the wave"
    if version is not None and version >= e.version:
        return f"already runs version {version}"
    if ripple is not None:
        return f"selected by ripple {ripple}"
    if not in_group:
        return f"not in group {e.group}"
    return None
