"""The end-to-end demo on the embedded default, with throwaway keys.

Runs the real workflow, with real keys, signatures and files: keys, a
repository with a 2-of-3 offline targets threshold, a wave signed through the
export / sign / import ceremony, python-tuf's own ngclient walking
``targets -> wave`` to the artifact, then a generated fleet in SQLite, signed
ripples (canaries, a group percentage, a deterministic fraction), per-device
bundles decided by the device verifier, and the wave completed.
"""

from __future__ import annotations

import os
import random
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tufwaves._files import atomic_write
from tufwaves.demo.ngcheck import ngclient_fetch
from tufwaves.device.membership import fraction_member
from tufwaves.errors import StorageError
from tufwaves.http import create_app
from tufwaves.http.serve import ServerThread
from tufwaves.server.bundler import build_bundle
from tufwaves.server.ceremony import Ceremony
from tufwaves.server.inventory import Inventory
from tufwaves.server.keys import PASSPHRASE_ENV, generate_key, load_key_ref, write_key_pair
from tufwaves.server.metadata import expiry, wave_role
from tufwaves.server.repository import Repository
from tufwaves.server.rollout import Selector, complete, load_wave, open_inventory, rollout
from tufwaves.server.roots import create_repository
from tufwaves.server.staging import load_ceremony
from tufwaves.server.waves import import_ceremony, init_wave
from tufwaves.simulator import identities, simulate, write_fleet
from tufwaves.verify import DeviceIdentity, Verifier

__all__ = ["DemoResult", "run_demo"]

WAVE = "canary-42"
TAG = "production"
HARDWARE = "imx8mm-lpddr4"


@dataclass
class DemoResult:
    repo: Path
    lines: list[str] = field(default_factory=list)


def run_demo(
    directory: Path, *, devices: int = 1000, say: Callable[[str], None] = print
) -> DemoResult:
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
        return _run(directory, result, step, devices)
    finally:
        if previous is None:
            os.environ.pop(PASSPHRASE_ENV, None)


def _run(
    directory: Path, result: DemoResult, step: Callable[[str], None], devices: int
) -> DemoResult:
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
        42,
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
    _rollout_demo(directory, repo, result, step, devices)
    return result


def _write_fleet(path: Path, devices: int) -> None:
    """A generated fleet: mostly the demo hardware and tag, groups eu/us/lab."""
    rng = random.Random(42)  # noqa: S311 - a reproducible demo fleet, not a secret
    lines = ["uuid,hardware_id,tag,groups,installed_version"]
    for i in range(devices):
        uid = uuid.UUID(int=rng.getrandbits(128), version=4)
        hw = HARDWARE if i % 20 else "rpi4"
        groups = ("eu" if i % 2 else "us") + (";lab" if i % 50 == 0 else "")
        lines.append(f"{uid},{hw},{TAG},{groups},{41 if i % 10 else 40}")
    atomic_write(path, ("\n".join(lines) + "\n").encode())


def _devices_over_http(
    directory: Path, repo: Repository, inv: Inventory, step: Callable[[str], None]
) -> None:
    """Step 11: the update server and 20 simulated devices on 127.0.0.1.

    Each device has its own key pair (registered in the fleet file), trusts
    root version 1, fetches its bundle over HTTP, decides with the verifier,
    downloads the artifact and checks it, installs (or fails: 1 in 5) and sends
    a signed report that the server stores.
    """
    players = identities(20, "demo", hardware_id=HARDWARE, tag=TAG)
    fleet = directory / "simulated-fleet.csv"
    write_fleet(fleet, players, installed_version=41)
    inv.import_file(fleet)
    ripple = rollout(repo, inv, WAVE, Selector(uuids=tuple(d.uuid for d in players)))
    with ServerThread(create_app(repo.path)) as server:
        sim = simulate(
            server.url,
            players,
            concurrency=4,
            failure_rate=0.2,
            installed_version=41,
            root=repo.role_bytes("root", 1),
            rng_seed=42,
        )
    updated = sum(
        1 for d in players if (device := inv.get(d.uuid)) and device.installed_version == 42
    )
    step(
        f"11. tufwaves serve on {server.url} and {len(players)} simulated devices in ripple "
        f"{ripple.index}: every device fetched its bundle over HTTP, decided, downloaded and "
        f"checked the artifact; {sim.installs} installed and {sum(sim.failures.values())} "
        f"failed, each sending a signed report; the inventory now records {updated} devices "
        f"on version 42 ({sim.to_dict()['request_count']} requests, p50 "
        f"{sim.to_dict()['latency_ms']['p50']} ms)"
    )


def _rollout_demo(
    directory: Path,
    repo: Repository,
    result: DemoResult,
    step: Callable[[str], None],
    devices: int,
) -> None:
    fleet = directory / "fleet.csv"
    _write_fleet(fleet, devices)
    with open_inventory(repo) as inv:
        imported = inv.import_file(fleet)
        step(f"6. fleet: imported {imported.rows:,} devices from {fleet.name} into SQLite")

        canaries = rollout(repo, inv, WAVE, Selector(limit=10))
        atomic_write(directory / "canaries.txt", "".join(f"{u}\n" for u in canaries.uuids).encode())
        step(
            f"7. waves rollout {WAVE} --limit 10 --print-uuids > canaries.txt: ripple 1 "
            f"signed ({canaries.encoding}): " + ", ".join(u[:8] for u in canaries.uuids)
        )
        eu = rollout(repo, inv, WAVE, Selector(group="eu", percent=10, seed="demo"))
        step(
            f"8. waves rollout {WAVE} --group eu --limit 10% --seed demo: ripple 2, "
            f"{len(eu.uuids):,} devices ({eu.encoding})"
        )
        frac = rollout(repo, inv, WAVE, Selector(fraction_ppm=50_000))
        step(
            f"9. waves rollout {WAVE} --fraction 5%: ripple {frac.index}, no device list: "
            f"each device checks H(salt, uuid) < 5% itself"
        )

        verifier = Verifier.from_trusted_root(repo.role_bytes("root", 1))
        selected = set(canaries.uuids) | set(eu.uuids)
        salt = load_wave(repo, WAVE).fraction_salt
        member = eu.uuids[0]
        outsider = next(
            d
            for d in inv.list_devices(group="us")
            if d.hardware_id == HARDWARE
            and d.uuid not in selected
            and not fraction_member(salt, d.uuid, 50_000)
        )
        bundles = directory / "bundles"
        bundles.mkdir(exist_ok=True)
        for label, uid in (("member", member), ("non-member", outsider.uuid)):
            bundle = build_bundle(repo, inv, uid)
            path = bundles / f"{label}-{uid}.json"
            atomic_write(path, bundle.to_bytes())
            device = inv.get(uid)
            assert device is not None  # noqa: S101 - it was just selected from the inventory
            decision = verifier.decide(
                bundle,
                DeviceIdentity(uid, device.hardware_id, device.tag, device.installed_version or 0),
            )
            step(
                f"10. bundle {path.relative_to(directory)} ({len(bundle.to_bytes()):,} bytes): "
                f"{'ALLOWED' if decision.allowed else 'DENIED'} {decision.reason.value}"
            )

        _devices_over_http(directory, repo, inv, step)

        complete(repo, inv, WAVE)
        bundle = build_bundle(repo, inv, outsider.uuid)
        decision = verifier.decide(
            bundle, DeviceIdentity(outsider.uuid, HARDWARE, TAG, outsider.installed_version or 0)
        )
        step(
            f"12. waves complete {WAVE}: signed; the non-member is now "
            f"{'ALLOWED' if decision.allowed else 'DENIED'} {decision.reason.value}"
        )
        step("\nrollout history:")
        step(f"{'RIPPLE':>6}  {'DEVICES':>8}  {'ENCODING':14}  SELECTOR")
        for r in inv.ripples(WAVE):
            selector = ", ".join(f"{k}={v}" for k, v in r.selector_data.items())
            step(f"{r.index:>6}  {r.size_label:>8}  {r.encoding:14}  {selector}")
