"""The Merkle tree file hashed by worker processes is byte for byte the serial one."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tufwaves.device import merkle
from tufwaves.device.membership import MerkleMembership, merkle_root
from tufwaves.errors import InputError, StorageError
from tufwaves.server import merkle_file
from tufwaves.server.merkle_file import MerkleTreeFile


def _leaves(n: int) -> bytes:
    rng = random.Random(n)
    return b"".join(sorted({rng.randbytes(16) for _ in range(n)}))


@pytest.mark.parametrize("n", [1, 17, 1000, 4099])
def test_parallel_build_is_the_serial_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int
) -> None:
    data = _leaves(n)
    serial = MerkleTreeFile.build(tmp_path / "serial", data, level=4)
    monkeypatch.setattr(merkle_file, "PARALLEL_MIN_LEAVES", 1)
    parallel = MerkleTreeFile.build(tmp_path / "parallel", data, level=4)
    assert parallel == serial
    assert (tmp_path / "parallel").read_bytes() == (tmp_path / "serial").read_bytes()


def test_parallel_chunk_roots_find_the_first_bad_leaf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(merkle_file, "PARALLEL_MIN_LEAVES", 1)
    n = 4099
    data = _leaves(n)
    for pos in (1, 15, 16, 17, n // 2 - 1, n // 2, n // 2 + 1, 2048, 2049, n - 1):
        bad = bytearray(data)
        bad[pos * 16 : (pos + 1) * 16] = bad[(pos - 1) * 16 : pos * 16]
        want = merkle.chunk_roots(bytes(bad), n, 4)[1]
        assert want == pos
        assert merkle_file._chunk_roots(bytes(bad), n, 4, parallel=True)[1] == pos
    with pytest.raises(InputError):
        MerkleTreeFile.build(Path("/nonexistent/never-written"), bytes(bad), level=4)


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("n", [0, 1, 17, 4099])
def test_a_dry_run_commitment_is_the_tree_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int, parallel: bool
) -> None:
    """merkle_commitment (what a dry run signs nothing with) is build()'s and the device's root."""
    if parallel:
        monkeypatch.setattr(merkle_file, "PARALLEL_MIN_LEAVES", 1)
    data = _leaves(n)
    commitment = merkle_file.merkle_commitment(data)
    assert commitment == MerkleTreeFile.build(tmp_path / "tree", data)
    assert commitment == MerkleMembership(n, merkle_root(data))
    if n > 1:
        with pytest.raises(InputError, match="leaf 2 is not greater"):
            merkle_file.merkle_commitment(data[16:32] + data[:16] + data[32:])


def test_a_tree_built_in_the_background_is_the_tree_built_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _leaves(4099)
    here = MerkleTreeFile.build(tmp_path / "here", data, level=4)
    monkeypatch.setattr(merkle_file, "PARALLEL_MIN_LEAVES", 1)
    with merkle_file.TreeBuild(tmp_path / "forked", data, level=4) as building:
        assert building._child is not None  # it is being built in another process
        assert building.result() == here
        assert building.result() == here  # asked again: the same, without waiting
    assert (tmp_path / "forked").read_bytes() == (tmp_path / "here").read_bytes()


def test_a_background_build_reports_what_went_wrong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(merkle_file, "PARALLEL_MIN_LEAVES", 1)
    data = _leaves(100)
    unsorted = data[16:32] + data[:16] + data[32:]
    building = merkle_file.TreeBuild(tmp_path / "tree", unsorted)
    with building, pytest.raises(InputError, match="sorted"):
        building.result()
    assert list(tmp_path.iterdir()) == []  # no tree file, no temporary file
    building = merkle_file.TreeBuild(tmp_path / "missing" / "tree", data)
    with building, pytest.raises(StorageError, match="cannot write Merkle tree file"):
        building.result()

    def die(*args: object) -> None:
        os._exit(3)

    monkeypatch.setattr(merkle_file, "_build_and_report", die)
    building = merkle_file.TreeBuild(tmp_path / "tree", data)
    with building, pytest.raises(StorageError, match="exit code 3"):
        building.result()


def test_leaving_a_background_build_early_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure while the tree is hashed (the inventory refusing the ripple)
    leaves the block only once the file is complete, so the caller's cleanup
    finds a whole file to remove, never one still being written."""
    monkeypatch.setattr(merkle_file, "PARALLEL_MIN_LEAVES", 1)
    data = _leaves(4099)
    with pytest.raises(RuntimeError), merkle_file.TreeBuild(tmp_path / "tree", data) as building:
        child = building._child
        raise RuntimeError("the inventory refused the ripple")
    assert child is not None and child.exitcode == 0
    assert MerkleTreeFile(tmp_path / "tree").commitment() == MerkleMembership(
        4099, merkle_root(data)
    )
