"""``tufwaves-conformance``: the verifier's TUF core as a general TUF client.

Implements the command-line protocol of the TUF conformance suite
(theupdateframework/tuf-conformance)::

    tufwaves-conformance --metadata-dir DIR init TRUSTED_ROOT
    tufwaves-conformance --metadata-dir DIR --metadata-url URL refresh
    tufwaves-conformance --metadata-dir DIR --metadata-url URL \\
        --target-name PATH [--target-name PATH2 ...] \\
        --target-base-url URL --target-dir DIR download

Exit status 0 on success, 1 on any failure. The workflow is the one
:meth:`tufwaves.verify.Verifier.decide` runs (:mod:`tufwaves.device._client`),
fed from HTTP instead of a bundle, with the same size caps. Verified metadata
is kept in the metadata directory under unversioned names (``root.json``,
``timestamp.json``, ``<quoted role>.json``); artifacts in the target directory
under their quoted target path.
"""

from __future__ import annotations

import argparse
import logging
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from tuf.api.metadata import Root, TargetFile, Targets

from tufwaves.device._client import (
    Chain,
    ChainError,
    Fetched,
    TrustState,
    atomic_write,
    load_role,
    refresh,
)
from tufwaves.device.bundle import LIMITS, role_size_cap

__all__ = ["main", "run"]

logger = logging.getLogger("tufwaves.conformance")

_TIMEOUT = 30.0


class FetchError(Exception):
    """A file could not be downloaded (network, HTTP status, size cap)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _download(url: str, limit: int) -> bytes:
    """GET ``url``, reading at most ``limit`` bytes (more is an error)."""
    if urllib.parse.urlsplit(url).scheme not in {"http", "https"}:
        raise FetchError(f"refusing to fetch {url!r}: only http and https")
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT) as response:  # noqa: S310
            data: bytes = response.read(limit + 1)
    except urllib.error.HTTPError as e:
        raise FetchError(f"GET {url}: HTTP {e.code}", e.code) from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise FetchError(f"GET {url}: {e}") from None
    if len(data) > limit:
        raise FetchError(f"GET {url}: more than {limit:,} bytes")
    logger.debug("fetched %s (%d bytes)", url, len(data))
    return data


def _quoted(role: str) -> str:
    return urllib.parse.quote(role, "")


class HttpSource:
    """A :class:`tufwaves.device._client.Source` over a repository's HTTP URL."""

    def __init__(self, metadata_url: str, metadata_dir: Path) -> None:
        self._base = metadata_url if metadata_url.endswith("/") else metadata_url + "/"
        self._dir = metadata_dir

    def _url(self, role: str, version: int | None) -> str:
        prefix = "" if version is None else f"{version}."
        return f"{self._base}{prefix}{_quoted(role)}.json"

    def next_root(self, version: int) -> Fetched | None:
        try:
            data = _download(self._url("root", version), LIMITS.root_bytes)
        except FetchError as e:
            if e.status in {403, 404}:
                return None
            raise
        return Fetched(data, version)

    def timestamp(self) -> Fetched:
        return Fetched(_download(self._url("timestamp", None), LIMITS.timestamp_bytes))

    def snapshot(self, version: int | None, length: int | None) -> Fetched:
        limit = min(length, LIMITS.snapshot_bytes) if length else LIMITS.snapshot_bytes
        return Fetched(_download(self._url("snapshot", version), limit), version)

    def targets(self, role: str, version: int | None, length: int | None) -> Fetched:
        cap = role_size_cap(role)
        limit = min(length, cap) if length else cap
        return Fetched(_download(self._url(role, version), limit), version)

    def cached(self, role: str) -> bytes | None:
        path = self._dir / f"{_quoted(role)}.json"
        try:
            with path.open("rb") as f:
                data = f.read(role_size_cap(role) + 1)
        except OSError:
            return None
        return data if len(data) <= role_size_cap(role) else None

    def store(self, role: str, data: bytes) -> None:
        atomic_write(self._dir / f"{_quoted(role)}.json", data)


def _find_target(chain: Chain, source: HttpSource, path: str) -> TargetFile | None:
    """Pre-order depth-first search of the delegation graph (TUF 5.7.7)."""
    to_visit: list[tuple[str, str]] = [(Targets.type, Root.type)]
    visited: set[str] = set()
    while to_visit and len(visited) <= LIMITS.delegations:
        role, parent = to_visit.pop()
        if role in visited:
            continue
        targets = load_role(chain, source, role, parent)
        found = targets.targets.get(path)
        if found is not None:
            return found
        visited.add(role)
        if targets.delegations is None:
            continue
        children: list[tuple[str, str]] = []
        for child, terminating in targets.delegations.get_roles_for_target(path):
            children.append((child, role))
            if terminating:
                to_visit = []  # a terminating delegation: no backtracking
                break
        to_visit.extend(reversed(children))
    if to_visit:
        logger.debug("stopped after visiting %d delegations", len(visited))
    return None


def _download_target(chain: Chain, target: TargetFile, base_url: str, target_dir: Path) -> None:
    local = target_dir / _quoted(target.path)
    try:
        with local.open("rb") as f:
            target.verify_length_and_hashes(f.read(target.length + 1))
        logger.debug("%s is already downloaded and verified", target.path)
        return
    except Exception:  # noqa: S110 - missing or stale: download it
        pass
    name = target.path
    if chain.root.consistent_snapshot:
        digest = next(iter(target.hashes.values()))
        directory, slash, basename = name.rpartition("/")
        name = f"{directory}{slash}{digest}.{basename}"
    base = base_url if base_url.endswith("/") else base_url + "/"
    data = _download(base + name, target.length)
    target.verify_length_and_hashes(data)
    atomic_write(local, data)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tufwaves-conformance",
        description="A TUF client for the tuf-conformance test suite, built on "
        "the tufwaves verifier's workflow. Exit status 0 success, 1 failure.",
    )
    p.add_argument("--metadata-dir", type=Path, required=True)
    p.add_argument("--metadata-url")
    p.add_argument("--target-name", action="append", default=[])
    p.add_argument("--target-base-url")
    p.add_argument("--target-dir", type=Path)
    p.add_argument("command", choices=["init", "refresh", "download"])
    p.add_argument("trusted_root", nargs="?", type=Path)
    return p


def _refreshed(args: argparse.Namespace) -> tuple[Chain, HttpSource]:
    if not args.metadata_url:
        raise ValueError("--metadata-url is required")
    metadata_dir: Path = args.metadata_dir
    with (metadata_dir / "root.json").open("rb") as f:
        root = f.read(LIMITS.root_bytes + 1)
    chain = Chain(TrustState(root), datetime.now(UTC))
    source = HttpSource(args.metadata_url, metadata_dir)
    refresh(chain, source)
    return chain, source


def _run(args: argparse.Namespace) -> None:
    if args.command == "init":
        if args.trusted_root is None:
            raise ValueError("init needs TRUSTED_ROOT")
        args.metadata_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(args.metadata_dir / "root.json", args.trusted_root.read_bytes())
        return
    chain, source = _refreshed(args)
    if args.command == "refresh":
        return
    if not args.target_name or not args.target_base_url or args.target_dir is None:
        raise ValueError("download needs --target-name, --target-base-url, --target-dir")
    args.target_dir.mkdir(parents=True, exist_ok=True)
    for name in args.target_name:
        target = _find_target(chain, source, name)
        if target is None:
            raise ValueError(f"no target {name!r} in the repository")
        _download_target(chain, target, args.target_base_url, args.target_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; 0 on success, 1 on any failure (2 for bad usage)."""
    args = _parser().parse_args(argv)
    try:
        _run(args)
    except ChainError as e:
        sys.stderr.write(f"tufwaves-conformance: {e.reason.value}: {e.message}\n")
        return 1
    except Exception as e:  # any failure is a failed command
        sys.stderr.write(f"tufwaves-conformance: {type(e).__name__}: {e}\n")
        return 1
    return 0


def run() -> None:
    """Console-script entry point: logs the workflow's steps to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    package_logger = logging.getLogger("tufwaves")
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.DEBUG)
    sys.exit(main())
