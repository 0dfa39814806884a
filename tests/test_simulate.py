"""tufwaves simulate: simulated devices against a real uvicorn on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import KeyStore, RepoFactory, publish_wave
from tests.http_support import live
from tufwaves.cli import main
from tufwaves.errors import InputError
from tufwaves.http import create_app
from tufwaves.server.rollout import Selector, open_inventory, rollout
from tufwaves.simulator import identities, simulate

DEVICES = 20


def test_simulated_fleet_installs_fails_and_reports(
    make_repo: RepoFactory,
    keystore: KeyStore,
    artifact: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = make_repo()
    publish_wave(repo, keystore, artifact)
    fleet = tmp_path / "sim.csv"
    assert main(["simulate", "--devices", str(DEVICES), "--write-fleet", str(fleet)]) == 0
    assert fleet.read_text().startswith("uuid,hardware_id,tag,groups,installed_version,public_key")
    assert main(["fleet", "import", str(fleet), "--repo", str(repo.path)]) == 0
    with open_inventory(repo) as inv:
        chosen = set(rollout(repo, inv, "w1", Selector(limit=10, seed="s")).uuids)
    devices = identities(DEVICES, "tufwaves-simulate")
    with live(create_app(repo.path)) as server:
        result = simulate(server.url, devices, concurrency=4, failure_rate=0.3, rng_seed=1)
        out = tmp_path / "sim.json"
        capsys.readouterr()
        argv = ["simulate", "--url", server.url, "--devices", str(DEVICES), "--json", str(out)]
        assert main(argv) == 0  # a second run: the same devices, starting at version 0 again
    summary = result.to_dict()
    assert summary["decisions"].get("allowed_ripple") == 10
    assert sum(summary["decisions"].values()) == DEVICES
    assert result.installs + sum(result.failures.values()) == 10
    assert result.failures and set(result.failures) == {"simulated-failure"}
    assert summary["reports"] == {"201": 30}  # downloading, installing, installed/failed
    assert not result.errors
    assert summary["latency_ms"]["p50"] is not None and summary["latency_ms"]["p99"] is not None
    assert summary["requests"]["bundle 200"] == DEVICES
    second = json.loads(out.read_text())
    # The inventory now records version 10 for the devices that installed it, so
    # their bundles leave w1 out (specs/bundle.md 2.1); the ones that failed retry.
    retried = 10 - result.installs
    assert second["installs"] == retried and second["failures"] == {}
    assert second["reports"] == {"201": 3 * retried}  # counters keep increasing across runs
    assert "devices in" in capsys.readouterr().out
    retries = 0
    with open_inventory(repo, read_only=True) as inv:
        for device in devices:
            stored = inv.device_reports(device.uuid)
            if device.uuid not in chosen:
                assert stored == []
                continue
            # Newest first: installed, after a failed first attempt for the retried.
            assert stored[0].status == "installed" and len(stored) in (3, 6)
            assert [r.status for r in stored[-3:]][::-1][:2] == ["downloading", "installing"]
            if len(stored) == 6:
                assert stored[3].status == "failed"
                retries += 1
            got = inv.get(device.uuid)
            assert got is not None and got.installed_version == 10
    assert retries == retried


def test_simulate_refuses_other_hosts_and_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InputError, match="loopback"):
        simulate("http://10.1.2.3:8080", identities(1, "x"))
    with pytest.raises(InputError, match="loopback"):
        simulate("file:///etc/passwd", identities(1, "x"))
    assert main(["simulate", "--devices", "3"]) == 2
    assert "--url" in capsys.readouterr().err
    for argv in (["--devices", "0"], ["--devices", "1", "--failure-rate", "2"]):
        with pytest.raises(SystemExit) as e:
            main(["simulate", *argv, "--url", "http://127.0.0.1:1"])
        assert e.value.code == 2
