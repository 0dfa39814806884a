"""The server-side Merkle tree file: per-device inclusion proofs for large ripples.

The commitment a ripple signs and the proof a device checks are defined in
``specs/membership.md`` and computed by :mod:`tufwaves.device.merkle`; this
module stores a ripple's tree on disk so that a bundle build reads one proof
in microseconds without rehashing the ripple.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import struct
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from tufwaves._files import atomic_writer
from tufwaves.device import merkle as _merkle
from tufwaves.device.membership import (
    CHUNK_LEVEL,
    MerkleEvidence,
    MerkleMembership,
    join_sorted,
    not_sorted,
    uuid_bytes,
    uuid_text,
)
from tufwaves.errors import InputError, StorageError

__all__ = ["MerkleTreeFile", "TreeBuild", "merkle_commitment"]


_MAGIC: Final = b"TWMERKL1"
_HEADER = struct.Struct(">8sQB7x")


PARALLEL_MIN_LEAVES = 1 << 20
"""From this many leaves on, :meth:`MerkleTreeFile.build` hashes parts of the
tree in worker processes, one per core (hashlib holds the GIL for inputs this
short, so threads would not help)."""

_SHARED: list[bytes] = [b""]  # the leaves, inherited by forked workers (never pickled)


def _part_roots(start: int, end: int, level: int) -> tuple[bytes, int]:
    roots, bad = _merkle.chunk_roots(_SHARED[0][start * 16 : end * 16], end - start, level)
    return bytes(roots), bad


def _chunk_roots(data: bytes, n: int, level: int, *, parallel: bool) -> tuple[bytearray, int]:
    """:func:`tufwaves.device.merkle.chunk_roots` over every core: the leaves
    are cut into one run of whole ``2**level`` chunks per worker; the same
    hashes and the same first out-of-order index come back."""
    workers = min(os.cpu_count() or 1, 16)
    methods = multiprocessing.get_all_start_methods()
    if not parallel or n < PARALLEL_MIN_LEAVES or workers < 2 or "fork" not in methods:
        return _merkle.chunk_roots(data, n, level)
    width = 1 << level
    chunks = (n + width - 1) // width
    per = (chunks + workers - 1) // workers * width  # leaves per part, whole chunks
    bounds = [(start, min(start + per, n)) for start in range(0, n, per)]
    _SHARED[0] = data
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(len(bounds) - 1 or 1, mp_context=context) as pool:
            futures = [pool.submit(_part_roots, a, b, level) for a, b in bounds[1:]]
            results = [_part_roots(*bounds[0], level)]  # this process takes the first part
            results += [f.result() for f in futures]
    finally:
        _SHARED[0] = b""
    out = bytearray()
    bad = -1
    for (start, _end), (roots, part_bad) in zip(bounds, results, strict=True):
        out += roots
        if bad < 0:
            at = start * 16
            if start and data[at - 16 : at] >= data[at : at + 16]:
                bad = start
            elif part_bad >= 0:
                bad = start + part_bad
    return out, bad


def _stored_levels(data: bytes, n: int, level: int, *, parallel: bool = True) -> list[bytes]:
    """The tree's levels ``level .. root`` over ``n`` leaves, hashed on every core.

    Raises:
        InputError: the leaves are not strictly ascending.
    """
    if not n:
        return []
    base, bad = _chunk_roots(data, n, level, parallel=parallel)
    if bad >= 0:
        raise not_sorted(bad)
    return _merkle.levels_above(base)


def merkle_commitment(leaves: bytes) -> MerkleMembership:
    """The commitment :meth:`MerkleTreeFile.build` returns for ``leaves``,
    without writing a file (a dry run): the same hashes, on every core.

    Raises:
        InputError: ``leaves`` is not a multiple of 16 bytes or not strictly
            ascending.
    """
    data = join_sorted(leaves)
    n = len(data) // _merkle.LEAF_LEN
    levels = _stored_levels(data, n, CHUNK_LEVEL)
    return MerkleMembership(n, levels[-1] if levels else _merkle.EMPTY_ROOT)


def _level_counts(n: int, level: int) -> list[int]:
    """Node counts of the stored levels ``level, level + 1, ...`` up to the root."""
    if n == 0:
        return []
    counts = [-(-n >> level)]
    while counts[-1] > 1:
        counts.append((counts[-1] + 1) // 2)
    return counts


class MerkleTreeFile:
    """A Merkle tree over sorted UUIDs, on disk, for serving per-device proofs.

    Layout (all integers big-endian)::

        header  magic "TWMERKL1" (8) | n: u64 | L: u8 | 7 zero bytes
        leaves  n sorted 16-byte UUIDs
        levels  the hashes of tree levels L, L+1, ... up to the root, each
                level ceil(n / 2**L') hashes of 32 bytes

    Opening maps the file read-only; :meth:`evidence` finds the leaf by binary
    search, recomputes the one ``2**L``-leaf subtree it needs and reads the
    rest of the path from the stored levels. Use as a context manager or call
    :meth:`close`.
    """

    def __init__(self, path: Path) -> None:
        """Open and check a tree file written by :meth:`build`.

        Raises:
            StorageError: the file cannot be read or is not a valid tree file.
        """
        self.path = Path(path)
        try:
            with self.path.open("rb") as f:
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:
            raise StorageError(f"cannot open Merkle tree file {self.path}: {e}") from e
        try:
            self._parse()
        except StorageError:
            self._mm.close()
            raise

    def _parse(self) -> None:
        mm = self._mm
        if len(mm) < _HEADER.size:
            raise StorageError(f"{self.path} is not a Merkle tree file (too short)")
        magic, n, level = _HEADER.unpack_from(mm, 0)
        if magic != _MAGIC or level > 32:
            raise StorageError(f"{self.path} is not a Merkle tree file")
        self._n: int = n
        self._level: int = level
        self._leaves_at = _HEADER.size
        offset = self._leaves_at + n * _merkle.LEAF_LEN
        self._levels: list[tuple[int, int]] = []
        for count in _level_counts(n, level):
            self._levels.append((offset, count))
            offset += count * _merkle.HASH_LEN
        if len(mm) != offset:
            raise StorageError(
                f"{self.path} is truncated or has trailing bytes "
                f"({len(mm)} bytes, expected {offset})"
            )
        if n:
            top = self._levels[-1][0]
            self._root = bytes(mm[top : top + _merkle.HASH_LEN])
        else:
            self._root = _merkle.EMPTY_ROOT

    @classmethod
    def build(
        cls, path: Path, leaves: bytes, *, level: int = CHUNK_LEVEL, parallel: bool = True
    ) -> MerkleMembership:
        """Write the tree file for ``leaves`` atomically and return its commitment.

        ``leaves`` is the concatenation of the sorted, de-duplicated 16-byte
        UUIDs. The file is written to a temporary file in the same directory,
        fsynced and renamed over ``path``. ``level`` is the lowest stored level
        (subtrees of ``2**level`` leaves are recomputed per proof). With
        ``parallel`` (the default) a large tree is hashed on every core.

        Raises:
            InputError: ``leaves`` is not a multiple of 16 bytes or not strictly
                ascending, or ``level`` is outside 0..20.
            StorageError: the file cannot be written.
        """
        if type(level) is not int or not 0 <= level <= 20:
            raise InputError("stored level must be an integer 0..20")
        data = join_sorted(leaves)
        n = len(data) // _merkle.LEAF_LEN
        levels = _stored_levels(data, n, level, parallel=parallel)
        root = levels[-1] if levels else _merkle.EMPTY_ROOT
        path = Path(path)
        try:
            with atomic_writer(path) as f:
                f.write(_HEADER.pack(_MAGIC, n, level))
                f.write(data)
                for stored in levels:
                    f.write(stored)
        except OSError as e:
            raise StorageError(f"cannot write Merkle tree file {path}: {e}") from e
        return MerkleMembership(n, root)

    @property
    def size(self) -> int:
        """Number of leaves (devices)."""
        return self._n

    @property
    def root(self) -> bytes:
        """The tree's root hash."""
        return self._root

    def commitment(self) -> MerkleMembership:
        """The signed form of this tree: ``MerkleMembership(size, root)``."""
        return MerkleMembership(self._n, self._root)

    def _leaf(self, i: int) -> bytes:
        o = self._leaves_at + i * _merkle.LEAF_LEN
        return self._mm[o : o + _merkle.LEAF_LEN]

    def _index(self, uuid: str) -> int:
        key = uuid_bytes(uuid)
        lo, hi = 0, self._n
        while lo < hi:
            mid = (lo + hi) // 2
            if self._leaf(mid) < key:
                lo = mid + 1
            else:
                hi = mid
        return lo if lo < self._n and self._leaf(lo) == key else -1

    def contains(self, uuid: str) -> bool:
        """True iff ``uuid`` is a leaf. Raises InputError for a malformed UUID."""
        return self._index(uuid) >= 0

    def evidence(self, uuid: str, role: str) -> MerkleEvidence | None:
        """The inclusion proof of ``uuid`` for the ripple ``role``, or None.

        Raises:
            InputError: ``uuid`` or ``role`` is malformed.
        """
        i = self._index(uuid)
        if i < 0:
            return None
        level = self._level
        start = (i >> level) << level
        end = min(start + (1 << level), self._n)
        lo = self._leaves_at + start * _merkle.LEAF_LEN
        chunk = self._mm[lo : self._leaves_at + end * _merkle.LEAF_LEN]
        path = _merkle.subtree_path(chunk, end - start, i - start, level)
        width = _merkle.HASH_LEN
        node = i >> level
        for offset, count in self._levels:
            if count <= 1:
                break
            sib = node ^ 1
            if sib < count:
                path.append(self._mm[offset + sib * width : offset + (sib + 1) * width])
            node >>= 1
        return MerkleEvidence(role, i, tuple(path))

    def members(self) -> Iterator[str]:
        """The canonical UUID strings, ascending."""
        for i in range(self._n):
            yield uuid_text(self._leaf(i))

    def close(self) -> None:
        """Unmap the file."""
        self._mm.close()

    def __enter__(self) -> MerkleTreeFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


BACKGROUND_PARALLEL = False
"""Whether a :class:`TreeBuild` hashes on every core. It overlaps the
inventory's record of the ripple, which keeps a core busy (and PostgreSQL's
index builds both): one hashing process beside it finished sooner at 10^7
devices than two competing with it."""


def _build_and_report(send: Connection, path: Path, leaves: bytes, level: int) -> None:
    """In the forked process of a :class:`TreeBuild`: build, then send the
    commitment or the error (its class name and message)."""
    try:
        built = MerkleTreeFile.build(path, leaves, level=level, parallel=BACKGROUND_PARALLEL)
        send.send(("ok", built.size, built.root))
    except (InputError, StorageError) as e:
        send.send((type(e).__name__, str(e)))
    finally:
        send.close()


class TreeBuild:
    """:meth:`MerkleTreeFile.build` going on in a forked process, while this
    process does other work, such as waiting for
    the database to record the same ripple; :meth:`result` waits for it.

    A tree of fewer than :data:`PARALLEL_MIN_LEAVES` leaves (or a platform
    without ``fork``) is built at once, in this process. Use as a context
    manager: leaving the block, even with an exception, waits for the forked
    process, so that the tree file is complete or absent afterwards.
    """

    def __init__(self, path: Path, leaves: bytes, *, level: int = CHUNK_LEVEL) -> None:
        """Start building the tree file of ``leaves`` at ``path``.

        Raises:
            InputError: As :meth:`MerkleTreeFile.build`, for a tree built at once.
            StorageError: Likewise.
        """
        self.path = Path(path)
        self._done: MerkleMembership | None = None
        self._child: multiprocessing.process.BaseProcess | None = None
        self._receive: Connection | None = None
        forked = "fork" in multiprocessing.get_all_start_methods()
        if len(leaves) < PARALLEL_MIN_LEAVES * _merkle.LEAF_LEN or not forked:
            self._done = MerkleTreeFile.build(self.path, leaves, level=level)
            return
        context = multiprocessing.get_context("fork")
        receive, send = context.Pipe(duplex=False)
        child = context.Process(
            target=_build_and_report, args=(send, self.path, leaves, level), name="merkle-tree"
        )
        child.start()
        send.close()  # the child holds the only writer: its exit ends the pipe
        self._child, self._receive = child, receive

    def result(self) -> MerkleMembership:
        """The commitment of the tree file, once it is written.

        Raises:
            InputError: ``leaves`` is not a multiple of 16 bytes or not strictly
                ascending, or ``level`` is outside 0..20.
            StorageError: the file cannot be written, or the forked process died.
        """
        if self._done is not None:
            return self._done
        assert self._receive is not None  # noqa: S101 - set with _child
        try:
            message = self._receive.recv()
        except EOFError:
            message = None
        exit_code = self._wait()
        if message is None:
            raise StorageError(
                f"building Merkle tree file {self.path} failed (the process building "
                f"it ended with exit code {exit_code}); nothing was published"
            )
        if message[0] == "ok":
            self._done = MerkleMembership(message[1], message[2])
            return self._done
        raise (InputError if message[0] == "InputError" else StorageError)(message[1])

    def _wait(self) -> int | None:
        child, self._child = self._child, None
        if self._receive is not None:
            self._receive.close()
            self._receive = None
        if child is None:
            return None
        child.join()
        return child.exitcode

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._wait()
