"""Helpers for the HTTP server tests: a repository with a rollout, a live uvicorn."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from starlette.applications import Starlette

from tests.conftest import KeyStore, publish_wave
from tufwaves.http.serve import ServerThread
from tufwaves.server.inventory import DeviceRow
from tufwaves.server.repository import Repository
from tufwaves.server.rollout import Selector, open_inventory, rollout

TOKEN = "operator-token-0123456789abcdef"
CHROMIUM = Path("/usr/bin/chromium")


def dev(n: int) -> str:
    return str(uuidlib.UUID(int=n * 0x9E3779B97F4A7C15 + 1))


FLEET_SIZE = 40


@dataclass
class Served:
    repo: Repository
    member: str  # selected by ripple 1 of wave w1
    outsider: str  # in the inventory, selected by nothing


def rolled_out_repo(repo: Repository, keystore: KeyStore, artifact: Path) -> Served:
    """Wave w1 (tag prod, hw1, version 10) with a 3-device ripple 1."""
    publish_wave(repo, keystore, artifact)
    with open_inventory(repo) as inv:
        inv.import_rows(
            DeviceRow(dev(i), "hw1", "prod", frozenset({"eu"}), 5) for i in range(FLEET_SIZE)
        )
        chosen = rollout(repo, inv, "w1", Selector(uuids=(dev(1), dev(2), dev(3)))).uuids
    assert dev(1) in chosen
    return Served(repo, dev(1), dev(FLEET_SIZE - 1))


LiveServer = ServerThread


@contextlib.contextmanager
def live(app: Starlette) -> Iterator[LiveServer]:
    with LiveServer(app) as server:
        yield server


def ensure_chromium() -> Path:
    """Chromium from Debian, installed with apt-get when missing."""
    if CHROMIUM.exists():
        return CHROMIUM
    if shutil.which("apt-get") is None:
        pytest.fail("chromium is missing and apt-get is not available: install Debian's chromium")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
        if done.returncode != 0:
            pytest.fail(f"cannot install chromium: {' '.join(cmd)}: {done.stderr[-500:]}")
    return CHROMIUM


def rendered_dom(app: Starlette, path: str, profile: Path) -> str:
    """What headless Chromium renders of ``path`` on a live server of ``app``
    (the DOM after loading), with ``profile`` as its user data directory."""
    chromium = ensure_chromium()
    with live(app) as server:
        done = subprocess.run(
            [
                str(chromium),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--dump-dom",
                f"{server.url}{path}",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert done.stdout.strip(), f"chromium rendered nothing: {done.stderr[-2000:]}"
    return done.stdout
