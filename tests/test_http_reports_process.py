"""Reports against real server processes: a read-only replica, a worker killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from starlette.testclient import TestClient

from tests.conftest import KeyStore, RepoFactory, publish_wave
from tests.http_support import dev
from tests.test_serving import as_nobody, needs_root, read_only_copy, shared, world  # noqa: F401
from tufwaves.device.report import sign_report
from tufwaves.http import create_app
from tufwaves.server.inventory import DeviceRow
from tufwaves.server.repository import Repository
from tufwaves.server.rollout import Selector, open_inventory, rollout

JSON = {"Content-Type": "application/json"}
SIGNER = CryptoSigner.generate_ed25519()
PUBLIC = str(SIGNER.public_key.to_dict()["keyval"]["public"])


def envelope(uuid: str, counter: int = 1) -> bytes:
    report = sign_report(
        SIGNER,
        device=uuid,
        wave="w1",
        version=10,
        status="installed",
        installed_version=10,
        counter=counter,
    )
    return report.to_bytes()


@needs_root
def test_a_read_only_replica_serves_bundles_and_refuses_reports(
    world: Repository,  # noqa: F811 - the fixture
    shared: Path,  # noqa: F811 - the fixture
) -> None:
    with open_inventory(world) as inv:
        member = next(iter(inv.ripple_members("w1", 1)))
        inv.set_public_key(member, PUBLIC)
    copy = read_only_copy(world, shared / "replica")
    body = envelope(member)

    def run() -> list[object]:
        client = TestClient(create_app(copy))
        bundle = client.get(f"/v1/devices/{member}/bundle")
        refused = client.post(f"/v1/devices/{member}/reports", content=body, headers=JSON)
        return [bundle.status_code, refused.status_code, refused.json()["type"]]

    assert as_nobody(run) == [200, 503, "urn:tufwaves:problem:read-only-replica"]
    with open_inventory(world, read_only=True) as inv:
        assert inv.device_reports(member) == []


# -- SIGKILL of a worker while devices report --------------------------------------

DEVICES = 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _workers(pid: int) -> list[int]:
    """The uvicorn worker processes of the supervisor ``pid``."""
    found = []
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in children:
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline:
            found.append(int(child))
    return found


def _wait_listening(proc: subprocess.Popen[bytes], port: int) -> None:
    for _ in range(1200):  # bounded: 60 s
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            return
        except ConnectionRefusedError:
            try:
                proc.wait(timeout=0.05)
                pytest.fail("tufwaves serve exited")
            except subprocess.TimeoutExpired:
                pass
    pytest.fail("tufwaves serve did not listen")


def test_acknowledged_reports_survive_a_killed_worker(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> None:
    repo = make_repo()
    publish_wave(repo, keystore, artifact)
    uuids = [dev(n) for n in range(DEVICES)]
    with open_inventory(repo) as inv:
        inv.import_rows(DeviceRow(u, "hw1", "prod", frozenset(), 5) for u in uuids)
        for u in uuids:
            inv.set_public_key(u, PUBLIC)
        assert len(rollout(repo, inv, "w1", Selector(limit=DEVICES, seed="s")).uuids) == DEVICES
    bodies = {u: envelope(u) for u in uuids}
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from tufwaves.cli import run; run()",
            "serve",
            "--repo",
            str(repo.path),
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
        start_new_session=True,
    )
    acked: dict[str, int] = {}  # device -> status of its first acknowledgement
    lost: list[str] = []  # sent, no answer (the worker died or the connection failed)
    lock = threading.Lock()
    queue = iter(uuids)

    def send(uuid: str) -> int | None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/devices/{uuid}/reports",
            data=bodies[uuid],
            headers=JSON,
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as r:  # noqa: S310 - loopback
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
        except (OSError, urllib.error.URLError):
            return None

    def device_thread() -> None:
        while True:
            with lock:
                uuid = next(queue, None)
            if uuid is None:
                return
            status = send(uuid)
            with lock:
                if status is None:
                    lost.append(uuid)
                else:
                    acked[uuid] = status

    try:
        _wait_listening(proc, port)
        workers = _workers(proc.pid)
        assert len(workers) == 2, workers
        threads = [threading.Thread(target=device_thread) for _ in range(8)]
        for t in threads:
            t.start()
        for _ in range(600):  # bounded: kill once a third has been acknowledged
            with lock:
                if len(acked) >= DEVICES // 3:
                    break
            time.sleep(0.01)
        os.kill(workers[0], signal.SIGKILL)
        with lock:
            assert len(acked) < DEVICES  # killed while devices were still reporting
        for t in threads:
            t.join(timeout=120)
        assert all(status == 201 for status in acked.values()), acked
        # Every acknowledged report is stored, whatever happened to the others.
        with open_inventory(repo, read_only=True) as inv:
            for uuid in acked:
                assert [r.counter for r in inv.device_reports(uuid)] == [1], uuid
        # Devices resend what got no answer: stored once (200 when it had been).
        for _ in range(100):  # bounded retries while the supervisor restarts the worker
            retry, lost[:] = list(lost), []
            for uuid in retry:
                status = send(uuid)
                if status in (200, 201):
                    acked[uuid] = status
                else:
                    lost.append(uuid)
            if not lost:
                break
            time.sleep(0.1)
        assert not lost
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    assert sorted(acked) == sorted(uuids)
    with open_inventory(repo, read_only=True) as inv:
        stored = [r for u in uuids for r in inv.device_reports(u)]
        assert len(stored) == DEVICES
        assert {r.device for r in stored} == set(uuids)
        assert all(d.installed_version == 10 for d in inv.list_devices())
