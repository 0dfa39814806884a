"""A planned wave in the operator API and on the dashboard: its stages and where it is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner
from starlette.testclient import TestClient

from tests.conftest import KeyStore, RepoFactory, publish_wave
from tests.http_support import TOKEN, dev, rendered_dom
from tufwaves.device.report import sign_report
from tufwaves.http import create_app
from tufwaves.server import open_inventory, pause, sign_stage
from tufwaves.server.inventory import DeviceRow
from tufwaves.server.repository import Repository

T0 = datetime.now(UTC).replace(microsecond=0)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FLEET = 20
SIGNERS = {n: CryptoSigner.generate_ed25519() for n in range(FLEET)}
PLAN: dict[str, Any] = {
    "stages": [
        {
            "name": "canary",
            "size": {"devices": 2},
            "not_before": f"{T0 - timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}",
            "timeout": "30m",
            "abort": {
                "max_failed": "10%",
                "min_reports": 2,
                "codes": ["hash-mismatch"],
                "action": "cancel",
            },
        },
        {
            "name": "half",
            "size": "50%",
            "soak": "1h",
            "success": {"min_installed": "95%", "min_reports": 2},
        },
        {"name": "everyone", "size": "100%", "soak": "2h"},
    ]
}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def planned(make_repo: RepoFactory, keystore: KeyStore, artifact: Path) -> Repository:
    """Wave w1 in stage 2 (half) of 3, paused; stage 1's devices reported."""
    repo = make_repo()
    clock = Clock()
    repo.clock = clock
    with open_inventory(repo) as inv:
        inv.import_rows(DeviceRow(dev(i), "hw1", "prod", frozenset(), 5) for i in range(FLEET))
        for n, signer in SIGNERS.items():
            inv.set_public_key(dev(n), str(signer.public_key.to_dict()["keyval"]["public"]))
    publish_wave(repo, keystore, artifact, plan=PLAN)
    with open_inventory(repo) as inv:
        canary = sign_stage(repo, "w1", 1, inv=inv)
    client = TestClient(create_app(repo.path, operator_token=TOKEN))
    for i, uuid in enumerate(canary.uuids):
        n = next(k for k in SIGNERS if dev(k) == uuid)
        status = "installed" if i == 0 else "failed"
        extra: dict[str, Any] = {"installed_version": 10} if i == 0 else {"code": "boot-loop"}
        envelope = sign_report(
            SIGNERS[n], device=uuid, wave="w1", version=10, status=status, counter=1, **extra
        )
        posted = client.post(
            f"/v1/devices/{uuid}/reports",
            content=envelope.to_bytes(),
            headers={"Content-Type": "application/json"},
        )
        assert posted.status_code == 201, posted.text
    clock.now = T0 + timedelta(hours=1)
    with open_inventory(repo) as inv:
        sign_stage(repo, "w1", 2, inv=inv)
        pause(repo, inv, "w1")
    return repo


def test_the_wave_detail_has_the_plan_and_where_the_wave_is(planned: Repository) -> None:
    client = TestClient(create_app(planned.path, operator_token=TOKEN))
    listing = client.get("/v1/waves", headers=AUTH).json()
    brief = listing["waves"][0]
    assert brief["status"] == "paused"
    assert brief["plan"] == {
        "stage_count": 3,
        "current_stage": 2,
        "current_stage_name": "half",
        "started": True,
    }
    detail = client.get("/v1/waves/w1", headers=AUTH).json()
    plan = detail["plan"]
    assert plan["eligible"] == FLEET
    assert plan["current_stage"] == 2
    stages = plan["stages"]
    assert [s["name"] for s in stages] == ["canary", "half", "everyone"]
    assert [s["position"] for s in stages] == ["done", "current", "waiting"]
    assert [s["cap"] for s in stages] == [2, 10, 20]
    assert [s["allowed"] for s in stages] == [2, 10, None]
    assert [s["ripples"] for s in stages] == [[1], [2], []]
    assert stages[0]["started"] == f"{T0:%Y-%m-%dT%H:%M:%SZ}"
    assert stages[1]["started"] == f"{T0 + timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}"
    assert stages[2]["started"] is None
    assert plan["stage_starts"] == {"1": stages[0]["started"], "2": stages[1]["started"]}
    assert (stages[0]["selected"], stages[0]["installed"], stages[0]["failed"]) == (2, 1, 1)
    assert (stages[1]["selected"], stages[1]["installed"], stages[1]["failed"]) == (8, 0, 0)
    assert stages[0]["abort"] == {
        "max_failed_ppm": 100_000,
        "min_reports": 2,
        "codes": ["hash-mismatch"],
        "action": "cancel",
    }
    assert stages[1]["success"] == {"min_installed_ppm": 950_000, "min_reports": 2}
    assert (stages[1]["soak_seconds"], stages[0]["timeout_seconds"]) == (3600, 1800)
    assert stages[1]["size_label"] == "50% of 20 = 10 devices"


def test_an_unplanned_wave_has_no_plan(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> None:
    repo = make_repo()
    publish_wave(repo, keystore, artifact)
    client = TestClient(create_app(repo.path, operator_token=TOKEN))
    assert client.get("/v1/waves", headers=AUTH).json()["waves"][0]["plan"] is None
    assert client.get("/v1/waves/w1", headers=AUTH).json()["plan"] is None


def test_a_pending_planned_wave_shows_its_plan_not_started(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> None:
    repo = make_repo(threshold=2, signers=2)
    with open_inventory(repo) as inv:
        inv.import_rows(DeviceRow(dev(i), "hw1", "prod", frozenset(), 5) for i in range(FLEET))
    publish_wave(repo, keystore, artifact, signers=("t1",), plan=PLAN)
    client = TestClient(create_app(repo.path, operator_token=TOKEN))
    detail = client.get("/v1/waves/w1", headers=AUTH).json()
    assert detail["status"] == "pending"
    assert detail["plan"]["current_stage"] is None
    assert [s["position"] for s in detail["plan"]["stages"]] == ["waiting"] * 3
    assert detail["plan"]["stage_starts"] == {}
    page = client.get(f"/?token={TOKEN}").text
    assert "Plan <span" in page and "not started (3 stages), 20 eligible devices" in page
    assert 'aria-current="step"' not in page


def test_the_dashboard_shows_the_plan_in_chromium(planned: Repository, tmp_path: Path) -> None:
    dom = rendered_dom(
        create_app(planned.path, operator_token=TOKEN), f"/?token={TOKEN}", tmp_path / "profile"
    )
    assert "tufwaves rollouts" in dom
    assert "in stage 2 of 3 (half), 20 eligible devices" in dom
    for name in ("canary", "half", "everyone"):
        assert f'<span class="stage-name">{name}</span>' in dom
    current = dom.split('aria-current="step">', 1)[1].split("</li>", 1)[0]
    assert current.startswith('<span class="stage-name">half</span>')
    assert "current stage (paused)" in current
    assert "10 of 10 devices allowed" in current
    assert f"started {T0 + timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}" in current
    assert dom.count('aria-current="step"') == 1
    canary = dom.split('data-stage="1"', 1)[1].split("</li>", 1)[0]
    assert "1 installed, 1 failed of 2 offered" in canary
    assert "cancel if &gt; 10% failed or a failure hash-mismatch (≥ 2 reports)" in canary
    assert f"not before {T0 - timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}" in canary
    everyone = dom.split('data-stage="3"', 1)[1].split("</li>", 1)[0]
    assert "nothing allowed yet; not started" in everyone
    assert '<div class="seg current"' in dom
