"""`tufwaves-conformance` against a simulated repository served over HTTP."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata

from tests.simulator import Simulator, device
from tufwaves import conformance

ARTIFACT = "waves/w1/hw-a/fw-7.bin"


@dataclass
class Served:
    root: Path
    url: str
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    repo = tmp_path / "repo"
    repo.mkdir()
    served = Served(repo, "")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            served.requests.append(self.path)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(repo))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield served
    server.shutdown()
    server.server_close()


@pytest.fixture
def sim(served: Served) -> Simulator:
    s = Simulator()
    s.add_production(5)
    s.add_wave("w1", 7)
    s.add_list_ripple("w1", [device(1)])
    s.publish()
    s.write_repository(served.root)
    return s


def run(served: Served, tmp: Path, command: str, *extra: str) -> int:
    return conformance.main(
        [
            "--metadata-dir",
            str(tmp / "md"),
            "--metadata-url",
            f"{served.url}/metadata",
            *extra,
            command,
        ]
    )


def download(served: Served, tmp: Path, *names: str) -> int:
    extra: list[str] = []
    for name in names:
        extra += ["--target-name", name]
    extra += ["--target-base-url", f"{served.url}/targets", "--target-dir", str(tmp / "t")]
    return run(served, tmp, "download", *extra)


@pytest.fixture
def client(tmp_path: Path, sim: Simulator) -> Path:
    (tmp_path / "root.json").write_bytes(sim.trusted_root())
    md = str(tmp_path / "md")
    assert conformance.main(["--metadata-dir", md, "init", str(tmp_path / "root.json")]) == 0
    return tmp_path


def versions(directory: Path) -> dict[str, int]:
    return {
        p.name: Metadata.from_file(str(p)).signed.version for p in sorted(directory.glob("*.json"))
    }


def test_refresh_keeps_unversioned_metadata(served: Served, sim: Simulator, client: Path) -> None:
    assert run(served, client, "refresh") == 0
    assert versions(client / "md") == {
        "root.json": 1,
        "snapshot.json": sim.snapshot.version,
        "targets.json": sim.targets.version,
        "timestamp.json": sim.timestamp.version,
    }
    assert "/metadata/2.root.json" in served.requests


def test_download_walks_delegations_and_caches(
    served: Served, sim: Simulator, client: Path
) -> None:
    assert download(served, client, ARTIFACT, "production/hw-a/fw-5.bin") == 0
    stored = client / "t" / ARTIFACT.replace("/", "%2F")
    assert stored.read_bytes() == sim.artifacts[ARTIFACT]
    assert "wave.w1.json" in versions(client / "md")
    fetched = [r for r in served.requests if r.startswith("/targets/")]
    assert len(fetched) == 2
    assert all(".fw-" in r for r in fetched)  # consistent-snapshot names
    served.requests.clear()
    assert download(served, client, ARTIFACT) == 0
    assert not [r for r in served.requests if r.startswith("/targets/")]


def test_tampered_artifact_fails(served: Served, sim: Simulator, client: Path) -> None:
    for path in (served.root / "targets").rglob("*fw-7.bin"):
        path.write_bytes(b"evil" + path.read_bytes()[4:])
    assert download(served, client, ARTIFACT) == 1
    assert not (client / "t" / ARTIFACT.replace("/", "%2F")).exists()


def test_unknown_target_fails(served: Served, client: Path) -> None:
    assert download(served, client, "waves/w1/hw-a/none.bin") == 1


def test_root_rotation_over_http(served: Served, sim: Simulator, client: Path) -> None:
    sim.rotate_root(keys={"root": ["next-root"], "snapshot": ["next-snapshot"]})
    sim.rotate_root()
    sim.publish()
    sim.write_repository(served.root)
    assert run(served, client, "refresh") == 0
    assert versions(client / "md")["root.json"] == 3


def test_oversized_timestamp_fails(served: Served, client: Path) -> None:
    (served.root / "metadata" / "timestamp.json").write_bytes(b" " * 20_000)
    assert run(served, client, "refresh") == 1


def test_unreachable_repository_fails(client: Path) -> None:
    dead = Served(client, "http://127.0.0.1:9")
    assert run(dead, client, "refresh") == 1


def test_bad_trusted_root_fails_without_requests(served: Served, tmp_path: Path) -> None:
    (tmp_path / "root.json").write_bytes(b'{"signed": {}, "signatures": []}')
    md = str(tmp_path / "md")
    conformance.main(["--metadata-dir", md, "init", str(tmp_path / "root.json")])
    assert run(served, tmp_path, "refresh") == 1
    assert served.requests == []
