"""Reading device files: the fleet CSV and JSON-lines formats of ``specs/inventory.md``.

Every row is validated and normalised (:func:`~tufwaves.server.inventory.normalise_row`)
before an inventory stores it; a bad row names its file and line.
"""

from __future__ import annotations

import csv
import gc
import io
import itertools
import json
import multiprocessing
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Literal, Protocol, TextIO, TypeVar

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
    rings_of_canonical,
)

__all__ = [
    "Chunks",
    "Match",
    "MatchTransform",
    "detect_format",
    "device_file_chunks",
    "group_names",
    "read_device_file",
    "row_chunks",
]


_JSON_KEYS = frozenset(CSV_HEADER_KEYS)
_HEADERS = (",".join(CSV_HEADER), ",".join(CSV_HEADER_KEYS))
Keys = list[tuple[str, str]]
"""Where a reader puts the (uuid, public key) of rows that give a key."""
_REQUIRED_JSON_KEYS = ("uuid", "hardware_id", "tag")
T = TypeVar("T")
Row = tuple[str, int, str, str, tuple[str, ...], int | None]
"""The fields of a :class:`NormalRow` (a plain tuple where a million are built)."""
NumberedRows = Sequence[tuple[int, Row]]
Match = tuple[str, str, str, str, str]
"""A good 5-column CSV line's fields as the line gives them: the UUID (either
case), hardware id, tag, groups text (``;``-separated, may repeat a name, or
empty) and version text (checked to be at most ``MAX_VERSION``, or empty)."""
MatchTransform = Callable[[int, Sequence[Match]], T]
"""``fast`` of :class:`Chunks`."""

CHUNK_ROWS = 5_000
"""Rows per chunk when a file is parsed in this process."""
PARALLEL_MIN_BYTES = 32 << 20
"""A 5-column CSV file at least this large is parsed by worker processes."""
BLOCK_BYTES = 1 << 20
"""Bytes (whole lines) a worker parses at a time."""
PARALLEL_WORKERS: int | None = None
"""Worker processes for a large file; None: one per CPU this process may use (at most 16)."""


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
) -> Iterator[tuple[int, Row]]:
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
_CSV_FIELDS = (
    rf"(?P<uuid>{UUID_PATTERN}),"
    rf"(?P<hw>{LABEL_PATTERN}),"
    rf"(?P<tag>{LABEL_PATTERN}),"
    rf"(?P<groups>(?:{LABEL_PATTERN})(?:;{LABEL_PATTERN})*)?,"
    rf"(?P<version>{VERSION_PATTERN})?"
)
_CSV_LINE_RE = re.compile(_CSV_FIELDS + r"\r?\n?")
# The same, for every line of a block of text at once (``findall``): no field
# can hold a line break, so each match is one whole line, and a block of n
# lines with n matches is a block of n good lines. Any other block (a bad,
# quoted or blank line, a lone CR) is read line by line instead.
_CSV_BLOCK_RE = re.compile("^" + _CSV_FIELDS + r"\r?$", re.MULTILINE)


def _check_header(path: Path, first: str) -> bool:
    """Whether the header line ``first`` is the 6-column one (InputError if neither)."""
    header = first.rstrip("\r\n")
    if header not in _HEADERS:
        raise _bad(
            path,
            1,
            f"the header must be exactly {_HEADERS[0]} or {_HEADERS[1]} (found {header!r})",
        )
    return header == _HEADERS[1]


def _read_csv(path: Path, f: TextIO, keys: Keys | None) -> Iterator[tuple[int, Row]]:
    if _check_header(path, f.readline()):
        yield from _read_csv_keys(path, iter(f), keys)
        return
    line = 2
    while lines := f.readlines(BLOCK_BYTES):
        yield from _csv_block(path, line, "".join(lines), len(lines))
        line += len(lines)


_VERSION_DIGITS = len(str(MAX_VERSION))


def group_names(text: str | None) -> tuple[str, ...]:
    """The distinct group names of a checked ``groups`` field (names joined by
    ``;``, possibly repeated, or empty), sorted."""
    if not text:
        return ()
    if ";" not in text:
        return (text,)
    return tuple(sorted(set(text.split(";"))))


def _good_lines(path: Path, first: int, text: str, count: int) -> list[Match] | None:
    """The fields of ``count`` data lines (``text``; the first is line
    ``first``) when every one is a good line, else None (read them one by one)."""
    found: list[Match] = _CSV_BLOCK_RE.findall(text)
    if len(found) != count:
        return None
    for line, fields in enumerate(found, start=first):
        version_text = fields[4]
        if len(version_text) == _VERSION_DIGITS and int(version_text) > MAX_VERSION:
            raise _bad(path, line, _version_problem(version_text))
    return found


def _csv_block(path: Path, first: int, text: str, count: int) -> list[tuple[int, Row]]:
    """The rows of ``count`` data lines (``text``; the first is line ``first``)."""
    found = _good_lines(path, first, text, count)
    if found is None:
        return list(_csv_lines(path, enumerate(io.StringIO(text, newline=""), start=first)))
    uuids = [fields[0].lower() for fields in found]
    rings = rings_of_canonical(uuids)
    rows: list[tuple[int, Row]] = []
    append = rows.append
    numbered = zip(itertools.count(first), found, uuids, rings, strict=False)
    for line, (_, hardware_id, tag, groups_text, version_text), uuid, ring in numbered:
        version = int(version_text) if version_text else None
        append((line, (uuid, ring, hardware_id, tag, group_names(groups_text), version)))
    return rows


def _csv_lines(path: Path, lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, NormalRow]]:
    """Numbered data lines of the 5-column format as rows (blank lines skipped)."""
    for line, text in lines:
        if text.strip():
            yield line, _csv_row(path, line, text)


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
    groups = group_names(groups_text)
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


# -- chunks of rows, parsed in parallel where that pays ----------------------


class Chunks(Protocol):
    """Rows of one import, a chunk at a time: ``chunks(transform, fast)`` yields
    (rows so far, ``transform(chunk)``) in row order.

    ``fast``, when given, must return what ``transform`` would for the same
    lines: ``fast(first, matches)`` gets the fields of a block of good CSV
    lines (the first is line ``first``, the next ``first + 1`` and so on; see
    :data:`Match`) and may be used instead, without building a row per line.
    """

    def __call__(
        self, transform: Callable[[NumberedRows], T], fast: MatchTransform[T] | None = None
    ) -> Iterator[tuple[int, T]]: ...


def row_chunks(rows: Iterable[tuple[int, Row]]) -> Chunks:
    """Numbered rows as :class:`Chunks`, transformed in this process."""

    def chunks(
        transform: Callable[[NumberedRows], T], fast: MatchTransform[T] | None = None
    ) -> Iterator[tuple[int, T]]:
        done = 0
        chunk: list[tuple[int, Row]] = []
        for numbered in rows:
            chunk.append(numbered)
            if len(chunk) >= CHUNK_ROWS:
                done += len(chunk)
                yield done, transform(chunk)
                chunk = []
        if chunk:
            done += len(chunk)
            yield done, transform(chunk)

    return chunks


def device_file_chunks(path: Path, fmt: Literal["csv", "jsonl"], keys: Keys | None) -> Chunks:
    """The rows of a device file as :class:`Chunks` (validated as by
    :func:`read_device_file`; the first bad line in file order raises).

    A 5-column CSV file of at least :data:`PARALLEL_MIN_BYTES` on a machine
    with several CPUs is parsed by forked worker processes, a block of whole
    lines each, which apply ``transform`` (or ``fast`` to a block of good
    lines) too, so both must be module-level functions with picklable
    results; the blocks come back in file order.
    """

    def chunks(
        transform: Callable[[NumberedRows], T], fast: MatchTransform[T] | None = None
    ) -> Iterator[tuple[int, T]]:
        workers = _workers()
        if fmt == "csv" and workers > 1 and _size(path) >= PARALLEL_MIN_BYTES:
            try:
                with path.open("rb") as f:
                    first = f.readline().removeprefix(b"\xef\xbb\xbf").decode("utf-8")
                    # (a lone CR in the header line: text mode splits there, so read it so)
                    lone_cr = "\r" in first.rstrip("\r\n")
                    if not lone_cr and not _check_header(path, first):
                        yield from _parallel_chunks(path, f, workers, transform, fast)
                        return
            except UnicodeDecodeError as e:
                raise InputError(f"{path}: not UTF-8 text ({e})") from e
            except OSError as e:
                raise InputError(f"cannot read {path}: {e}") from e
        yield from row_chunks(read_device_file(path, fmt, keys))(transform)

    return chunks


def _workers() -> int:
    if "fork" not in multiprocessing.get_all_start_methods():  # pragma: no cover - Windows
        return 1
    return PARALLEL_WORKERS or min(len(os.sched_getaffinity(0)), 16)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # read_device_file says what is wrong


def _lines_in(block: bytes) -> int:
    """Lines a block of whole lines holds, counted as text mode with
    ``newline=""`` splits them: at ``\\n``, ``\\r\\n`` and a lone ``\\r``."""
    return block.count(b"\n") + block.count(b"\r") - block.count(b"\r\n")


def _parallel_chunks(
    path: Path,
    f: io.BufferedReader,
    workers: int,
    transform: Callable[[NumberedRows], T],
    fast: MatchTransform[T] | None,
) -> Iterator[tuple[int, T]]:
    context = multiprocessing.get_context("fork")
    # A worker builds rows that all live until its block is sent back: the
    # cyclic garbage collector would only walk them again and again.
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=gc.disable)
    pending: deque[Future[tuple[int, T]]] = deque()
    done = 0
    try:
        line = 2
        while block := f.read(BLOCK_BYTES):
            if not block.endswith(b"\n"):
                block += f.readline()
            pending.append(pool.submit(_parse_block, path, line, block, transform, fast))
            line += _lines_in(block)
            while len(pending) > 2 * workers:
                count, result = pending.popleft().result()
                done += count
                yield done, result
        while pending:
            count, result = pending.popleft().result()
            done += count
            yield done, result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _parse_block(
    path: Path,
    line: int,
    block: bytes,
    transform: Callable[[NumberedRows], T],
    fast: MatchTransform[T] | None,
) -> tuple[int, T]:
    """In a worker: the rows of ``block`` (its first line is ``line``), transformed."""
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e})") from None
    count = _lines_in(block) + (not block.endswith((b"\n", b"\r")))
    if fast is not None:
        found = _good_lines(path, line, text, count)
        if found is not None:
            return count, fast(line, found)
    rows = _csv_block(path, line, text, count)
    return len(rows), transform(rows)
