"""The baseline: a ripple as ONE flat python-tuf targets role listing every UUID.

The repository is plain TUF built with python-tuf's Metadata API and
securesystemslib's ``CryptoSigner``::

    targets -> wave (paths waves/W/*) -> ripple-flat (the artifact, with
                                         custom.uuids = every member, sorted)

A device runs python-tuf's unmodified ``tuf.ngclient.Updater`` over an
in-memory fetcher (``bootstrap`` = the root's bytes): refresh, look the
artifact up (which walks ``targets -> wave -> ripple-flat``) and checks that
its UUID is in ``custom.uuids``. Every metadata byte the fetcher serves counts
as downloaded.
"""

from __future__ import annotations

import bisect
import hashlib
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from securesystemslib.signer import CryptoSigner
from tuf.api.exceptions import DownloadHTTPError, DownloadLengthMismatchError
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

BASE = "https://baseline.invalid/"
FLAT_ROLE = "ripple-flat"
WAVE_ROLE = "wave"


def _paths(wave: str) -> list[str]:
    return [f"waves/{wave}/*", f"waves/{wave}/*/*"]


@dataclass
class FlatRepository:
    """The signed files (``name -> bytes``) and what signing the flat role cost."""

    files: dict[str, bytes]
    target_path: str
    sign_seconds: float
    flat_bytes: int


def build(
    wave: str,
    artifact: bytes,
    artifact_name: str,
    hardware_id: str,
    tag: str,
    version: int,
    members_sorted: Sequence[str],
) -> FlatRepository:
    """Sign the whole repository; time only the flat ripple role (build, sign,
    serialise), which is what the server pays per ripple."""
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=365)
    signers = {
        name: CryptoSigner.generate_ed25519()
        for name in ("root", "targets", "snapshot", "timestamp", WAVE_ROLE, FLAT_ROLE)
    }
    root = Root(version=1, expires=expires, consistent_snapshot=True)
    for role in ("root", "targets", "snapshot", "timestamp"):
        root.add_key(signers[role].public_key, role)

    def delegating(to: str, key: CryptoSigner) -> Targets:
        return Targets(
            version=1,
            expires=expires,
            delegations=Delegations(
                keys={key.public_key.keyid: key.public_key},
                roles={to: DelegatedRole(to, [key.public_key.keyid], 1, True, paths=_paths(wave))},
            ),
        )

    targets = delegating(WAVE_ROLE, signers[WAVE_ROLE])
    wave_role = delegating(FLAT_ROLE, signers[FLAT_ROLE])
    target_path = f"waves/{wave}/{hardware_id}/{artifact_name}"

    started = time.perf_counter()
    flat = Targets(version=1, expires=expires)
    flat.targets[target_path] = TargetFile(
        len(artifact),
        {"sha256": hashlib.sha256(artifact).hexdigest()},
        target_path,
        unrecognized_fields={
            "custom": {
                "hardwareIds": [hardware_id],
                "tags": [tag],
                "version": version,
                "uuids": list(members_sorted),
            }
        },
    )
    flat_md = Metadata(flat)
    flat_md.sign(signers[FLAT_ROLE])
    flat_bytes = flat_md.to_bytes()
    sign_seconds = time.perf_counter() - started
    del flat_md, flat

    files: dict[str, bytes] = {f"1.{FLAT_ROLE}.json": flat_bytes}
    for name, signed in (("root", root), ("targets", targets), (WAVE_ROLE, wave_role)):
        md = Metadata(signed)
        md.sign(signers[name])
        files[f"1.{name}.json"] = md.to_bytes()
    snapshot = Metadata(
        Snapshot(
            version=1,
            expires=expires,
            meta={f"{r}.json": MetaFile(version=1) for r in ("targets", WAVE_ROLE, FLAT_ROLE)},
        )
    )
    snapshot.sign(signers["snapshot"])
    files["1.snapshot.json"] = snapshot.to_bytes()
    timestamp = Metadata(
        Timestamp(
            version=1,
            expires=expires,
            snapshot_meta=MetaFile(
                version=1,
                length=len(files["1.snapshot.json"]),
                hashes={"sha256": hashlib.sha256(files["1.snapshot.json"]).hexdigest()},
            ),
        )
    )
    timestamp.sign(signers["timestamp"])
    files["timestamp.json"] = timestamp.to_bytes()
    return FlatRepository(files, target_path, sign_seconds, len(flat_bytes))


def write(repo: FlatRepository, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in repo.files.items():
        (directory / name).write_bytes(data)
    (directory / "target-path").write_text(repo.target_path)


def read(directory: Path) -> tuple[dict[str, bytes], str]:
    files = {p.name: p.read_bytes() for p in directory.iterdir() if p.name.endswith(".json")}
    return files, (directory / "target-path").read_text()


class MemoryFetcher(FetcherInterface):
    """Serve ``BASE + name`` from a dict and count what was served."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.served: list[tuple[str, int]] = []

    def _fetch(self, url: str) -> Iterator[bytes]:
        data = self.files.get(url.removeprefix(BASE))
        if data is None:
            raise DownloadHTTPError(f"{url} not found", 404)
        self.served.append((url.removeprefix(BASE), len(data)))
        return iter([data])


@dataclass
class Outcome:
    seconds: float
    member: bool
    error: str | None
    downloaded: int
    fetched: list[str] = field(default_factory=list)


def decide(
    files: dict[str, bytes],
    target_path: str,
    uuid: str,
    targets_max_length: int | None,
) -> Outcome:
    """One device's decision with a fresh ``Updater`` (empty metadata dir)."""
    config = UpdaterConfig()
    if targets_max_length is not None:
        config.targets_max_length = targets_max_length
    fetcher = MemoryFetcher(files)
    with tempfile.TemporaryDirectory(prefix="tufwaves-bench-ngclient-") as tmp:
        started = time.perf_counter()
        error: str | None = None
        member = False
        try:
            updater = Updater(
                metadata_dir=tmp,
                metadata_base_url=BASE,
                target_base_url=BASE + "targets/",
                fetcher=fetcher,
                config=config,
                bootstrap=files["1.root.json"],
            )
            updater.refresh()
            info = updater.get_targetinfo(target_path)
            if info is None:
                error = "artifact not found"
            else:
                uuids = info.custom["uuids"]
                i = bisect.bisect_left(uuids, uuid)
                member = i < len(uuids) and uuids[i] == uuid
        except DownloadLengthMismatchError:
            error = "targets_max_length exceeded"
        except Exception as e:
            error = f"{type(e).__name__}: {e}"[:200]
        seconds = time.perf_counter() - started
    return Outcome(
        seconds,
        member,
        error,
        sum(n for _, n in fetcher.served),
        [name for name, _ in fetcher.served],
    )
