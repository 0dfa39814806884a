"""``tufwaves serve`` as a process, and the published-state reader's edge cases."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import KeyStore, RepoFactory
from tests.http_support import TOKEN, Served, rolled_out_repo
from tufwaves.cli import main
from tufwaves.http.published import Busy, CachingRepository, StateCache, Unpublished


@pytest.fixture
def served(make_repo: RepoFactory, keystore: KeyStore, artifact: Path) -> Served:
    return rolled_out_repo(make_repo(), keystore, artifact)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_serve_command(served: Served, tmp_path: Path) -> None:
    token_file = tmp_path / "operator.token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from tufwaves.cli import run; run()",
            "serve",
            "--repo",
            str(served.repo.path),
            "--port",
            str(port),
            "--operator-token-file",
            str(token_file),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )
    try:
        for _ in range(1200):  # bounded readiness poll: connect until it listens
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                break
            except ConnectionRefusedError:
                try:  # the pause between attempts doubles as the "did it exit" check
                    proc.wait(timeout=0.05)
                    pytest.fail(proc.stderr.read().decode() if proc.stderr else "exited")
                except subprocess.TimeoutExpired:
                    pass
        else:
            pytest.fail("tufwaves serve did not listen")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/waves", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=30) as r:  # noqa: S310 - loopback
            assert [w["name"] for w in json.load(r)["waves"]] == ["w1"]
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/waves", timeout=30)
        assert e.value.code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()


def test_serve_refuses_bad_setup(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weak = tmp_path / "weak.token"
    weak.write_text("short\n")
    assert main(["serve", "--repo", str(served.repo.path), "--operator-token-file", str(weak)]) == 2
    assert "at least 16 characters" in capsys.readouterr().err
    missing = tmp_path / "missing.token"
    assert (
        main(["serve", "--repo", str(served.repo.path), "--operator-token-file", str(missing)]) == 3
    )
    assert main(["serve", "--repo", str(tmp_path / "nothing")]) == 2
    assert main(["serve", "--repo", str(served.repo.path), "--workers", "0"]) == 2


def test_state_cache_waits_out_a_root_rotation(served: Served) -> None:
    repo = CachingRepository(served.repo.path)
    states = StateCache(repo, rotation_wait=0)
    first = states.current()
    assert states.current() is first  # cached while timestamp.json is unchanged
    (repo.metadata_dir / "2.root.json").write_bytes(repo.role_bytes("root", 1))
    served.repo.refresh()
    with pytest.raises(Busy):
        states.current()  # 2.root.json exists but root.json still says 1
    (repo.metadata_dir / "2.root.json").unlink()
    second = states.current()
    assert second is not first
    assert second.state.timestamp.signed.version == first.state.timestamp.signed.version + 1


def test_state_cache_unpublished(tmp_path: Path) -> None:
    (tmp_path / "metadata").mkdir()
    with pytest.raises(Unpublished):
        StateCache(CachingRepository(tmp_path)).current()
