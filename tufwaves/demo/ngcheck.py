"""Walk a repository directory with python-tuf's own, unmodified ngclient.

Used by the demo and the tests to show that what tufwaves publishes is plain
TUF: the client refreshes top-level metadata and finds a wave's artifact by
walking ``targets -> wave.W``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

from tuf.api.exceptions import DownloadHTTPError
from tuf.api.metadata import TargetFile
from tuf.ngclient import FetcherInterface, Updater

from tufwaves.errors import VerificationError

__all__ = ["DirectoryFetcher", "ngclient_fetch"]

BASE = "https://repository.invalid/"


class DirectoryFetcher(FetcherInterface):
    """Serve ``BASE + path`` from a repository directory (no network)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.fetched: list[str] = []

    def _fetch(self, url: str) -> Iterator[bytes]:
        if not url.startswith(BASE):
            raise DownloadHTTPError(f"unexpected URL {url}", 404)
        path = (self.root / url[len(BASE) :]).resolve()
        if self.root not in path.parents or not path.is_file():
            raise DownloadHTTPError(f"{url} not found", 404)
        self.fetched.append(url[len(BASE) :])
        return iter([path.read_bytes()])


def ngclient_fetch(
    repo_dir: Path, trusted_root: bytes, target_path: str, dest: Path | None = None
) -> tuple[TargetFile, bytes, list[str]]:
    """Refresh with ngclient, look up ``target_path``, download and verify it.

    Returns the target info, the artifact bytes and the files ngclient fetched.
    """
    with tempfile.TemporaryDirectory() as tmp:
        meta_dir = Path(tmp) / "metadata"
        meta_dir.mkdir()
        fetcher = DirectoryFetcher(repo_dir)
        updater = Updater(
            metadata_dir=str(meta_dir),
            metadata_base_url=BASE + "metadata/",
            target_base_url=BASE + "targets/",
            target_dir=str(dest or Path(tmp)),
            fetcher=fetcher,
            bootstrap=trusted_root,
        )
        updater.refresh()
        info = updater.get_targetinfo(target_path)
        if info is None:
            raise VerificationError(f"ngclient did not find {target_path}")
        path = updater.download_target(info)
        data = Path(path).read_bytes()
    return info, data, fetcher.fetched
