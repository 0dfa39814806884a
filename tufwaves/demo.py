"""The end-to-end demo on the embedded default, with throwaway keys.

Runs the real workflow, with real keys, signatures and files: keys, a
repository with a 2-of-3 offline targets threshold, a wave signed through the
export / sign / import ceremony, and python-tuf's own ngclient walking
``targets -> wave`` to the artifact.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tufwaves.bootstrap import create_repository
from tufwaves.ceremony import Ceremony
from tufwaves.errors import StorageError
from tufwaves.keys import PASSPHRASE_ENV, generate_key, load_key_ref, write_key_pair
from tufwaves.metadata import expiry, wave_role
from tufwaves.ngcheck import ngclient_fetch
from tufwaves.repository import atomic_write
from tufwaves.waves import import_ceremony, init_wave, load_ceremony

__all__ = ["DemoResult", "run_demo"]

WAVE = "canary-42"
TAG = "production"
HARDWARE = "imx8mm-lpddr4"


@dataclass
class DemoResult:
    repo: Path
    lines: list[str] = field(default_factory=list)


def run_demo(directory: Path, *, say: Callable[[str], None] = print) -> DemoResult:
    """Run the demo in ``directory`` (must be new or empty)."""
    if directory.exists() and any(directory.iterdir()):
        raise StorageError(f"{directory} is not empty; give the demo a new directory")
    directory.mkdir(parents=True, exist_ok=True)
    result = DemoResult(directory / "repo")

    def step(line: str) -> None:
        result.lines.append(line)
        say(line)

    # Throwaway keys: the passphrase is random unless the caller set one.
    previous = os.environ.get(PASSPHRASE_ENV)
    os.environ.setdefault(PASSPHRASE_ENV, secrets.token_urlsafe(16))
    try:
        return _run(directory, result, step)
    finally:
        if previous is None:
            os.environ.pop(PASSPHRASE_ENV, None)


def _run(directory: Path, result: DemoResult, step: Callable[[str], None]) -> DemoResult:
    keys = directory / "keys"
    secret = os.environ[PASSPHRASE_ENV].encode()
    for name in ("root", "alice", "bob", "carol"):
        write_key_pair(name, keys, generate_key("ed25519"), secret)
    step(f"1. keys: root, alice, bob, carol in {keys} (encrypted, 0600)")

    repo, _ = create_repository(
        result.repo,
        root_keys=[load_key_ref(str(keys / "root.key"))],
        root_threshold=1,
        targets_keys=[
            load_key_ref(str(keys / "alice.key")),
            load_key_ref(str(keys / "bob.key")),
            load_key_ref(str(keys / "carol.pub")),
        ],
        targets_threshold=2,
    )
    step(f"2. repository {result.repo}: root 1-of-1, targets 2-of-3 (alice, bob, carol)")

    artifact = directory / "firmware-42.img"
    atomic_write(artifact, b"tufwaves demo firmware 42\n" + secrets.token_bytes(4096))
    ceremony = init_wave(
        repo,
        WAVE,
        "42",
        TAG,
        artifacts=[artifact],
        hardware_ids=[HARDWARE],
        expires=expiry(days=365),
        keys=[load_key_ref(str(keys / "alice.key"))],
    )
    step(
        f"3. wave {WAVE} (version 42, tag {TAG}) signed by alice: "
        + "; ".join(ceremony.status_lines())
    )

    exported = directory / "ceremony.json"
    atomic_write(exported, load_ceremony(repo, wave_role(WAVE)).to_bytes())
    offline = Ceremony.read(exported)
    bob = load_key_ref(str(keys / "bob.key"))
    assert bob.signer is not None  # noqa: S101 - a .key file always signs
    offline.sign(bob.key.keyid, bob.signer)
    atomic_write(exported, offline.to_bytes())
    ceremony, _ = import_ceremony(repo, exported)
    step(
        "4. ceremony: exported, signed by bob on the 'air-gapped' side, imported: "
        + ("published" if ceremony.complete else "still pending")
    )

    trusted_root = repo.role_bytes("root", 1)
    target = f"waves/{WAVE}/{HARDWARE}/{artifact.name}"
    info, data, fetched = ngclient_fetch(result.repo, trusted_root, target)
    walked = [f for f in fetched if f.startswith("metadata/")]
    step(
        f"5. python-tuf ngclient found {info.path} ({info.length} bytes, "
        f"version {info.custom.get('version')}) walking: "
        + " -> ".join(w.removeprefix("metadata/") for w in walked)
    )
    step(f"   downloaded and verified {len(data)} bytes")
    return result
