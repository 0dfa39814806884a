"""Reading device files: the fleet CSV and JSON-lines formats of ``specs/inventory.md``.

Every row is validated and normalised (:func:`~tufwaves.server.inventory.normalise_row`)
before an inventory stores it; a bad row names its file and line.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

from tufwaves.device.profile import (
    LABEL_PATTERN,
    MAX_VERSION,
    UUID_PATTERN,
    VERSION_PATTERN,
    is_label,
    is_version_text,
)
from tufwaves.device.report import check_public_key
from tufwaves.errors import InputError
from tufwaves.server.inventory import (
    CSV_HEADER,
    CSV_HEADER_KEYS,
    DeviceRow,
    NormalRow,
    canonical_uuid,
    normalise_row,
    ring_of_canonical,
)

__all__ = ["detect_format", "read_device_file"]


_JSON_KEYS = frozenset(CSV_HEADER_KEYS)
_HEADERS = (",".join(CSV_HEADER), ",".join(CSV_HEADER_KEYS))
Keys = list[tuple[str, str]]
"""Where a reader puts the (uuid, public key) of rows that give a key."""
_REQUIRED_JSON_KEYS = ("uuid", "hardware_id", "tag")


def detect_format(path: Path) -> Literal["csv", "jsonl"]:
    """``csv`` or ``jsonl`` from the extension, else from the first line."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as f:
            for line in f:
                if not line.strip():
                    continue
                if line.lstrip().startswith("{"):
                    return "jsonl"
                if line.rstrip("\r\n") in _HEADERS:
                    return "csv"
                break
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {path}: {e}") from e
    raise InputError(
        f"{path}: cannot tell the format; name it .csv (header "
        f"{','.join(CSV_HEADER)}) or .jsonl (one JSON object per line)"
    )


def read_device_file(
    path: Path, fmt: Literal["csv", "jsonl"], keys: Keys | None = None
) -> Iterator[tuple[int, NormalRow]]:
    """Validated rows of a device file with their line numbers.

    Raises InputError naming the file and line at the first bad row; the
    caller must not keep anything it stored from this file (one transaction).
    With ``keys``, rows that give a ``public_key`` append (uuid, key) to it.
    """
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as f:
            if fmt == "csv":
                yield from _read_csv(path, f, keys)
            else:
                yield from _read_jsonl(path, f, keys)
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e})") from e
    except OSError as e:
        raise InputError(f"cannot read {path}: {e}") from e


def _bad(path: Path, line: int, what: str) -> InputError:
    return InputError(
        f"{path} line {line}: {what}; nothing from this file was imported "
        "(fix the line and import the file again)"
    )


# A well-formed CSV data line in one match: no valid field can contain a
# quote, comma or newline, so every line of a good file matches this and only
# lines that do not are handed to the csv module (quoted fields) or rejected.
_CSV_LINE_RE = re.compile(
    rf"(?P<uuid>{UUID_PATTERN}),"
    rf"(?P<hw>{LABEL_PATTERN}),"
    rf"(?P<tag>{LABEL_PATTERN}),"
    rf"(?P<groups>(?:{LABEL_PATTERN})(?:;{LABEL_PATTERN})*)?,"
    rf"(?P<version>{VERSION_PATTERN})?"
    r"\r?\n?"
)


def _read_csv(path: Path, f: Iterable[str], keys: Keys | None) -> Iterator[tuple[int, NormalRow]]:
    lines = iter(f)
    first = next(lines, "")
    header = first.rstrip("\r\n")
    if header not in _HEADERS:
        raise _bad(
            path,
            1,
            f"the header must be exactly {_HEADERS[0]} or {_HEADERS[1]} (found {header!r})",
        )
    if header == _HEADERS[1]:
        yield from _read_csv_keys(path, lines, keys)
        return
    match = _CSV_LINE_RE.fullmatch
    ring = ring_of_canonical
    row = NormalRow
    for line, text in enumerate(lines, start=2):
        m = match(text)
        if m is not None:
            uuid, hardware_id, tag, groups_text, version_text = m.groups()
            uuid = uuid.lower()
            if groups_text is None:
                groups: tuple[str, ...] = ()
            elif ";" in groups_text:
                groups = tuple(sorted(set(groups_text.split(";"))))
            else:
                groups = (groups_text,)
            version = None if version_text is None else int(version_text)
            if version is not None and version > MAX_VERSION:
                raise _bad(path, line, _version_problem(version_text))
            yield line, row(uuid, ring(uuid), hardware_id, tag, groups, version)
        elif text.strip():
            yield line, _slow_csv_row(path, line, text)


def _read_csv_keys(
    path: Path, lines: Iterator[str], keys: Keys | None
) -> Iterator[tuple[int, NormalRow]]:
    """Lines of the 6-column format: the 5 columns, then a public key or nothing.

    A key is 64 hex digits (no comma or quote), so the last comma splits it off.
    """
    for line, text in enumerate(lines, start=2):
        if not text.strip():
            continue
        head, comma, key = text.rstrip("\r\n").rpartition(",")
        if not comma:
            raise _bad(path, line, "expected 6 fields, found 1")
        row = _csv_row(path, line, head)
        if key:
            try:
                check_public_key(key)
            except InputError as e:
                raise _bad(path, line, str(e)) from None
            if keys is not None:
                keys.append((row.uuid, key))
        yield line, row


def _csv_row(path: Path, line: int, text: str) -> NormalRow:
    """One 5-column line (without its end of line)."""
    m = _CSV_LINE_RE.fullmatch(text)
    if m is None:
        return _slow_csv_row(path, line, text)
    uuid, hardware_id, tag, groups_text, version_text = m.groups()
    uuid = uuid.lower()
    groups = tuple(sorted(set(groups_text.split(";")))) if groups_text else ()
    version = None if version_text is None else int(version_text)
    if version is not None and version > MAX_VERSION:
        raise _bad(path, line, _version_problem(version_text))
    return NormalRow(uuid, ring_of_canonical(uuid), hardware_id, tag, groups, version)


def _version_problem(text: str) -> str:
    return (
        f"installed_version {text!r} must be empty (unknown) or an integer "
        f"from 0 to {MAX_VERSION} without leading zeros"
    )


def _slow_csv_row(path: Path, line: int, text: str) -> NormalRow:
    """Parse a line the fast pattern refused: accept quoting, or say what is wrong."""
    try:
        parsed = list(csv.reader([text], strict=True))
    except csv.Error as e:
        raise _bad(path, line, f"bad CSV ({e})") from e
    fields = parsed[0] if parsed else []
    if len(fields) != len(CSV_HEADER):
        raise _bad(path, line, f"expected 5 fields, found {len(fields)}")
    raw_uuid, hardware_id, tag, groups_text, version_text = fields
    try:
        uuid = canonical_uuid(raw_uuid)
    except InputError:
        raise _bad(path, line, f"uuid {raw_uuid!r} is not an 8-4-4-4-12 UUID") from None
    for what, value in (("hardware_id", hardware_id), ("tag", tag)):
        if not is_label(value):
            raise _bad(path, line, f"{what} {value!r} must match {LABEL_PATTERN}")
    groups = groups_text.split(";") if groups_text else []
    for group in groups:
        if not is_label(group):
            raise _bad(path, line, f"group {group!r} must match {LABEL_PATTERN}")
    version: int | None = None
    if version_text:
        if not is_version_text(version_text):
            raise _bad(path, line, _version_problem(version_text))
        version = int(version_text)
    return NormalRow(
        uuid,
        ring_of_canonical(uuid),
        hardware_id,
        tag,
        tuple(sorted(set(groups))),
        version,
    )


def _read_jsonl(path: Path, f: Iterable[str], keys: Keys | None) -> Iterator[tuple[int, NormalRow]]:
    for line, text in enumerate(f, start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except ValueError as e:
            raise _bad(path, line, f"not JSON ({e})") from e
        if not isinstance(obj, dict):
            raise _bad(path, line, "expected a JSON object")
        unknown = sorted(set(obj) - _JSON_KEYS)
        if unknown:
            raise _bad(
                path,
                line,
                f"unknown field {unknown[0]!r} (fields: {', '.join(CSV_HEADER_KEYS)})",
            )
        for key in _REQUIRED_JSON_KEYS:
            if key not in obj:
                raise _bad(path, line, f"missing field {key!r}")
        groups = obj.get("groups", [])
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise _bad(path, line, "groups must be a list of group-name strings")
        version = obj.get("installed_version")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise _bad(path, line, f"installed_version {version!r} must be an integer or null")
        try:
            row = normalise_row(
                DeviceRow(
                    obj["uuid"],
                    obj["hardware_id"],
                    obj["tag"],
                    frozenset(groups),
                    version,
                )
            )
        except InputError as e:
            raise _bad(path, line, str(e)) from e
        public_key = obj.get("public_key")
        if public_key is not None:
            try:
                check_public_key(public_key)
            except InputError as e:
                raise _bad(path, line, str(e)) from None
            if keys is not None:
                keys.append((row.uuid, public_key))
        yield line, row
