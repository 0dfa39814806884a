"""RFC 9162 section 2.1 Merkle trees over SHA-256, on concatenated 16-byte leaves.

Private helpers for :mod:`tufwaves.device.membership`. Nothing here validates input
beyond what the arithmetic needs; the public module does that.

Tree shape: nodes at level ``j`` are numbered ``0 .. ceil(n / 2**j) - 1`` and
node ``i`` of level ``j`` is the Merkle tree hash of leaves
``[i * 2**j, min((i + 1) * 2**j, n))``. Building level ``j + 1`` pairs nodes
``2i`` and ``2i + 1`` and carries an odd last node up unchanged, which yields
exactly RFC 9162's MTH for every size.
"""

from __future__ import annotations

import hashlib
import itertools
import operator
from collections.abc import Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_LEN",
    "LEAF_LEN",
    "chunk_roots",
    "leaf_hash",
    "level_up",
    "levels_above",
    "node_hash",
    "root_from_path",
    "subtree_path",
]

HASH_LEN = 32
LEAF_LEN = 16
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


def leaf_hash(leaf: bytes) -> bytes:
    """``SHA-256(0x00 || leaf)``."""
    return _sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return _sha256(b"\x01" + left + right).digest()


def level_up(nodes: Sequence[bytes]) -> list[bytes]:
    """The next level up: pair neighbours, carry an odd last node unchanged."""
    it = iter(nodes)
    up = [_sha256(b"\x01" + a + b).digest() for a, b in zip(it, it, strict=False)]
    if len(nodes) & 1:
        up.append(nodes[-1])
    return up


def _leaf_slices(leaves: bytes, start: int, end: int) -> list[bytes]:
    return [leaves[o : o + LEAF_LEN] for o in range(start * 16, end * 16, LEAF_LEN)]


def chunk_roots(leaves: bytes, n: int, level: int) -> tuple[bytearray, int]:
    """Hashes of level ``level`` (subtrees of ``2**level`` leaves), concatenated.

    Also checks on the way that the leaves are strictly ascending; returns the
    index of the first leaf that is not greater than its predecessor, or -1.
    """
    width = 1 << level
    out = bytearray()
    bad = -1
    prev = b""
    lt = operator.lt
    sha = _sha256
    for start in range(0, n, width):
        end = min(start + width, n)
        sl = _leaf_slices(leaves, start, end)
        if bad < 0:
            if sl[0] <= prev:
                bad = start
            elif not all(map(lt, sl, itertools.islice(sl, 1, None))):
                pairs = enumerate(itertools.pairwise(sl), start=start + 1)
                bad = next(k for k, (a, b) in pairs if a >= b)  # all() says there is one
            prev = sl[-1]
        nodes = [sha(b"\x00" + x).digest() for x in sl]
        while len(nodes) > 1:
            nodes = level_up(nodes)
        out += nodes[0]
    return out, bad


def levels_above(base: bytes | bytearray) -> list[bytes]:
    """All levels from ``base`` (concatenated hashes) up to the single root."""
    levels = [bytes(base)]
    while len(levels[-1]) > HASH_LEN:
        cur = levels[-1]
        nodes = [cur[o : o + HASH_LEN] for o in range(0, len(cur), HASH_LEN)]
        levels.append(b"".join(level_up(nodes)))
    return levels


def subtree_path(leaves: bytes, n: int, index: int, level: int) -> list[bytes]:
    """The audit path of leaf ``index`` for levels ``0 .. level - 1``.

    Recomputes only the ``2**level``-leaf subtree that holds the leaf; the
    siblings at levels ``>= level`` are the caller's business.
    """
    start = (index >> level) << level
    end = min(start + (1 << level), n)
    nodes = [leaf_hash(x) for x in _leaf_slices(leaves, start, end)]
    local = index - start
    path: list[bytes] = []
    for _ in range(level):
        sib = local ^ 1
        if sib < len(nodes):
            path.append(nodes[sib])
        if len(nodes) == 1:
            break
        nodes = level_up(nodes)
        local >>= 1
    return path


def root_from_path(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes | None:
    """RFC 9162 section 2.1.3.2: the root implied by a proof, or None if malformed."""
    if not 0 <= index < size:
        return None
    fn, sn, r = index, size - 1, leaf_hash(leaf)
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        return None
    return r
