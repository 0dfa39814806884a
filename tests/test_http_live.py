"""The server under a real uvicorn on 127.0.0.1: ngclient, concurrent publishing, Chromium."""

from __future__ import annotations

import threading
import urllib.request
from pathlib import Path

import pytest
from tuf.ngclient import Updater

from tests.conftest import KeyStore, RepoFactory
from tests.http_support import TOKEN, Served, dev, live, rendered_dom, rolled_out_repo
from tufwaves.device.bundle import Bundle
from tufwaves.http import create_app
from tufwaves.server.rollout import Selector, open_inventory, rollout
from tufwaves.verify import DeviceIdentity, Verifier


@pytest.fixture
def served(make_repo: RepoFactory, keystore: KeyStore, artifact: Path) -> Served:
    return rolled_out_repo(make_repo(), keystore, artifact)


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - loopback URL
        data: bytes = response.read()
        return data


def test_ngclient_against_the_server(served: Served, artifact: Path, tmp_path: Path) -> None:
    with live(create_app(served.repo.path)) as server:
        (tmp_path / "client").mkdir()
        updater = Updater(
            metadata_dir=str(tmp_path / "client"),
            metadata_base_url=f"{server.url}/metadata/",
            target_base_url=f"{server.url}/targets/",
            target_dir=str(tmp_path / "client"),
            bootstrap=served.repo.role_bytes("root", 1),
        )
        updater.refresh()
        info = updater.get_targetinfo(f"waves/w1/hw1/{artifact.name}")
        assert info is not None and info.custom["version"] == "10"
        path = updater.download_target(info)
        assert Path(path).read_bytes() == artifact.read_bytes()


def test_bundles_stay_consistent_while_publishing(served: Served) -> None:
    """Refreshes and rollouts publish while devices fetch: every bundle verifies."""
    repo = served.repo
    identity = DeviceIdentity(served.member, "hw1", "prod", 5)
    done = threading.Event()
    errors: list[str] = []
    fetched: list[int] = []

    def publisher() -> None:
        try:
            with open_inventory(repo) as inv:
                for k in range(4):
                    repo.refresh()
                    rollout(repo, inv, "w1", Selector(uuids=(dev(10 + k),)))
                    repo.refresh()
        except Exception as e:  # reported by the test thread
            errors.append(f"publisher: {e!r}")
        finally:
            done.set()

    def device(url: str) -> None:
        verifier = Verifier.from_trusted_root(repo.role_bytes("root", 1))
        last = 0
        count = 0
        try:
            while True:
                finished = done.is_set()
                body = fetch(url)
                decision = verifier.decide(body, identity)
                if not decision.allowed:
                    errors.append(f"{decision.reason.value}: {decision.message}")
                    return
                version = Bundle.from_bytes(body).files[0].version
                if version < last:
                    errors.append("timestamp went back")
                last = version
                count += 1
                if finished:
                    break
        except Exception as e:
            errors.append(f"device: {e!r}")
        fetched.append(count)

    with live(create_app(repo.path)) as server:
        url = f"{server.url}/v1/devices/{served.member}/bundle"
        devices = [threading.Thread(target=device, args=(url,)) for _ in range(2)]
        writer = threading.Thread(target=publisher)
        for t in devices:
            t.start()
        writer.start()
        writer.join()
        for t in devices:
            t.join()
        assert errors == []
        assert len(fetched) == 2 and min(fetched) >= 1
        final = Bundle.from_bytes(fetch(url))
    state = repo.state()
    assert final.files[0].version == state.timestamp.signed.version
    assert state.version_of("ripple.w1.5") == 1


def test_dashboard_in_headless_chromium(served: Served, tmp_path: Path) -> None:
    dom = rendered_dom(
        create_app(served.repo.path, operator_token=TOKEN), f"/?token={TOKEN}", tmp_path / "profile"
    )
    assert "tufwaves rollouts" in dom
    assert "Wave" in dom and 'class="wave-name">w1<' in dom
    assert 'id="ripple-1"' in dom
    for kind in ("selected", "installed", "failed", "silent"):
        assert f'data-kind="{kind}"' in dom
    assert "3 devices" in dom
    assert "40 devices of this tag and hardware, 3 selected" in dom
    assert "Latest failures" in dom
    assert TOKEN not in dom
