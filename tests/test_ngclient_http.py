"""python-tuf's unmodified ngclient over real HTTP on 127.0.0.1."""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tuf.ngclient import Updater

from tests.conftest import KeyStore, RepoFactory
from tufwaves.server.metadata import expiry
from tufwaves.server.waves import init_wave


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        del format, args


def test_ngclient_over_http(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path, tmp_path: Path
) -> None:
    repo = make_repo(2, 3)
    init_wave(
        repo,
        "w1",
        5,
        "prod",
        artifacts=[artifact],
        hardware_ids=["hw"],
        expires=expiry(),
        keys=[keystore.ref("t1"), keystore.ref("t3")],
    )
    handler = functools.partial(_Quiet, directory=str(repo.path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        (tmp_path / "client").mkdir()
        updater = Updater(
            metadata_dir=str(tmp_path / "client"),
            metadata_base_url=f"{url}/metadata/",
            target_base_url=f"{url}/targets/",
            target_dir=str(tmp_path / "client"),
            bootstrap=repo.role_bytes("root", 1),
        )
        updater.refresh()
        info = updater.get_targetinfo(f"waves/w1/hw/{artifact.name}")
        assert info is not None and info.custom["version"] == "5"
        path = updater.download_target(info)
        assert Path(path).read_bytes() == artifact.read_bytes()
        assert updater.get_targetinfo("waves/w1/hw/other.img") is None
    finally:
        server.shutdown()
        server.server_close()
