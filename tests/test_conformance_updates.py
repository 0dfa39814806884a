"""`tufwaves-conformance` across updates: what it does with its stored metadata.

A second refresh after the repository changed must use the stored timestamp
and snapshot for rollback checks and fetch what is new; a repository timestamp
with the stored version but other bytes keeps the stored copy; a stored
timestamp or snapshot that the new root's keys do not sign is not used.
"""

from __future__ import annotations

import copy
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata

from tests.forge import sign
from tests.simulator import Simulator, device
from tufwaves import conformance


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    repo = tmp_path / "repo"
    repo.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(repo))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def sim(tmp_path: Path) -> Simulator:
    s = Simulator()
    s.add_production(5)
    s.add_wave("w1", 7)
    s.add_list_ripple("w1", [device(1)])
    s.publish()
    s.write_repository(tmp_path / "repo")
    (tmp_path / "root.json").write_bytes(s.trusted_root())
    md = str(tmp_path / "md")
    assert conformance.main(["--metadata-dir", md, "init", str(tmp_path / "root.json")]) == 0
    return s


def refresh(url: str, tmp: Path) -> int:
    md = str(tmp / "md")
    return conformance.main(["--metadata-dir", md, "--metadata-url", f"{url}/metadata", "refresh"])


def stored(tmp: Path, role: str) -> int:
    return int(Metadata.from_file(str(tmp / "md" / f"{role}.json")).signed.version)


def test_second_refresh_after_a_publish(url: str, sim: Simulator, tmp_path: Path) -> None:
    assert refresh(url, tmp_path) == 0
    sim.add_production(6)
    sim.publish()
    sim.write_repository(tmp_path / "repo")
    assert refresh(url, tmp_path) == 0
    assert stored(tmp_path, "snapshot") == sim.snapshot.version
    assert stored(tmp_path, "targets") == sim.targets.version


def test_same_timestamp_version_keeps_the_stored_copy(
    url: str, sim: Simulator, tmp_path: Path
) -> None:
    assert refresh(url, tmp_path) == 0
    kept = (tmp_path / "md" / "timestamp.json").read_bytes()
    ts = copy.deepcopy(sim.timestamp)
    ts.unrecognized_fields["x-note"] = "same version, other bytes"
    (tmp_path / "repo" / "metadata" / "timestamp.json").write_bytes(
        sign(ts, sim.signers["timestamp"])
    )
    assert refresh(url, tmp_path) == 0
    assert (tmp_path / "md" / "timestamp.json").read_bytes() == kept


@pytest.mark.parametrize("role", ["timestamp", "snapshot"], ids=["timestamp", "snapshot"])
def test_stored_metadata_under_rotated_keys_is_not_used(
    role: str, url: str, sim: Simulator, tmp_path: Path
) -> None:
    assert refresh(url, tmp_path) == 0
    sim.rotate_root(keys={role: [f"{role}-2"]})
    sim.publish()
    sim.write_repository(tmp_path / "repo")
    assert refresh(url, tmp_path) == 0
    assert stored(tmp_path, role) == sim.signed_of(role).version
    assert stored(tmp_path, "root") == 2
