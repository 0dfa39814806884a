"""A fleet simulator: N devices play the device side against a running server.

Each simulated device keeps its own trust state (a :class:`~tufwaves.verify.Verifier`),
fetches its bundle (``GET /v1/devices/UUID/bundle``, with ``If-None-Match``
on later polls), decides with the real verifier, downloads the allowed
artifact and checks its length and hashes, "installs" it (or fails with the
given probability) and sends signed reports (``specs/reports.md``):
``downloading``, ``installing``, then ``installed`` or ``failed``.

Identities are derived from a seed: device i has a UUID and an ed25519 key
pair computed from ``(seed, i)``, so :func:`write_fleet` can write the fleet
file (with public keys) that the operator imports, and a later
:func:`simulate` with the same seed plays exactly those devices. These keys
are for load tests only: anyone who knows the seed has them.

:func:`simulate` plays rounds on the real clock; a :class:`Fleet` keeps its
devices' state between rounds that its caller drives (one round per tick of
a simulated clock in ``tufwaves demo --simulate``): the devices then decide,
sign their reports and date them by that clock, and a wave can be given an
exact share of failing installs (``wave_failures``).

Loopback only: the simulator refuses any URL whose host is not 127.0.0.1,
::1 or localhost. Every loop is bounded (one round per device, or polls until
``duration`` seconds passed).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid as uuid_mod
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner

from tufwaves._files import atomic_write
from tufwaves.device.report import sign_report
from tufwaves.errors import InputError
from tufwaves.verify import Artifact, DeviceIdentity, Verifier

__all__ = [
    "Fleet",
    "SimulatedDevice",
    "SimulationResult",
    "identities",
    "simulate",
    "write_fleet",
]

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
FAILURE_CODE = "simulated-failure"
MAX_ROUNDS = 100_000
"""Upper bound of polling rounds, whatever ``duration`` says."""


@dataclass(frozen=True)
class SimulatedDevice:
    """One simulated device: identity and key pair from (seed, index)."""

    index: int
    uuid: str
    hardware_id: str
    tag: str
    private_seed: bytes

    def signer(self) -> CryptoSigner:
        return CryptoSigner(Ed25519PrivateKey.from_private_bytes(self.private_seed))

    @property
    def public_key(self) -> str:
        return str(self.signer().public_key.to_dict()["keyval"]["public"])


def identities(
    n: int, seed: str, hardware_id: str = "hw1", tag: str = "prod"
) -> list[SimulatedDevice]:
    """The ``n`` devices of ``seed``: deterministic UUIDs (version 4) and keys."""
    if n < 1:
        raise InputError("--devices must be at least 1")
    out = []
    for i in range(n):
        raw = hashlib.sha256(f"tufwaves-simulate:{seed}:uuid:{i}".encode()).digest()[:16]
        uuid = str(uuid_mod.UUID(bytes=raw, version=4))
        private = hashlib.sha256(f"tufwaves-simulate:{seed}:key:{i}".encode()).digest()
        out.append(SimulatedDevice(i, uuid, hardware_id, tag, private))
    return out


def write_fleet(path: Path, devices: Sequence[SimulatedDevice], installed_version: int) -> None:
    """The fleet CSV with public keys (6 columns) for ``tufwaves fleet import``."""
    lines = ["uuid,hardware_id,tag,groups,installed_version,public_key"]
    lines += [
        f"{d.uuid},{d.hardware_id},{d.tag},,{installed_version},{d.public_key}" for d in devices
    ]
    atomic_write(path, ("\n".join(lines) + "\n").encode())


@dataclass
class SimulationResult:
    """What a simulation did (``to_dict`` is the ``--json`` output)."""

    devices: int
    seconds: float = 0.0
    decisions: Counter[str] = field(default_factory=Counter)
    installs: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    reports: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    bytes_received: int = 0

    def percentile(self, p: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def to_dict(self) -> dict[str, Any]:
        p50, p99 = self.percentile(50), self.percentile(99)
        return {
            "devices": self.devices,
            "seconds": round(self.seconds, 3),
            "decisions": dict(sorted(self.decisions.items())),
            "installs": self.installs,
            "failures": dict(sorted(self.failures.items())),
            "requests": dict(sorted(self.requests.items())),
            "request_count": sum(self.requests.values()),
            "reports": dict(sorted(self.reports.items())),
            "errors": dict(sorted(self.errors.items())),
            "latency_ms": {
                "p50": None if p50 is None else round(p50 * 1000, 2),
                "p99": None if p99 is None else round(p99 * 1000, 2),
            },
            "bytes_received": self.bytes_received,
        }

    def summary(self) -> str:
        d = self.to_dict()
        lines = [
            f"{self.devices:,} devices in {d['seconds']:.1f} s: {self.installs:,} installed, "
            f"{sum(self.failures.values()):,} failed",
            "decisions: " + (", ".join(f"{k} {v:,}" for k, v in d["decisions"].items()) or "none"),
            f"requests: {d['request_count']:,} ("
            + ", ".join(f"{k} {v:,}" for k, v in d["requests"].items())
            + ")",
            "reports: " + (", ".join(f"{k} {v:,}" for k, v in d["reports"].items()) or "none"),
            f"latency: p50 {d['latency_ms']['p50']} ms, p99 {d['latency_ms']['p99']} ms",
        ]
        if self.failures:
            lines.append("failures: " + ", ".join(f"{k} {v:,}" for k, v in d["failures"].items()))
        if self.errors:
            lines.append("errors: " + ", ".join(f"{k} {v:,}" for k, v in d["errors"].items()))
        return "\n".join(lines)


class _Http:
    """Timed requests to one loopback server, counted into a result."""

    def __init__(self, base: str, result: SimulationResult, lock: threading.Lock) -> None:
        self.base = base.rstrip("/")
        self.result = result
        self.lock = lock

    def request(
        self,
        kind: str,
        path: str,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        limit: int = 64 * 1024 * 1024,
    ) -> tuple[int, bytes, dict[str, str]]:
        req = urllib.request.Request(  # noqa: S310 - http on loopback only (_check_url)
            self.base + path,
            data=data,
            headers=headers or {},
            method="POST" if data is not None else "GET",
        )
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=60) as r:  # noqa: S310 - loopback only
                status, body, got = int(r.status), r.read(limit + 1), dict(r.headers)
        except urllib.error.HTTPError as e:
            status, body, got = int(e.code), e.read(limit + 1), dict(e.headers)
        except (OSError, urllib.error.URLError) as e:
            with self.lock:
                self.result.errors[f"{kind}: {type(e).__name__}"] += 1
            return 0, b"", {}
        elapsed = time.perf_counter() - started
        with self.lock:
            self.result.requests[f"{kind} {status}"] += 1
            self.result.latencies.append(elapsed)
            self.result.bytes_received += len(body)
        return status, body, got


def _check_url(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "http" or parsed.hostname not in LOOPBACK:
        raise InputError(
            f"--url {url!r}: the simulator only talks to a server on loopback "
            "(http://127.0.0.1:PORT, http://[::1]:PORT or http://localhost:PORT)"
        )
    return url


def _artifact_path(artifact: Artifact) -> str:
    digest = artifact.hashes.get("sha256") or next(iter(artifact.hashes.values()))
    directory, slash, basename = artifact.name.rpartition("/")
    quoted = urllib.parse.quote(f"{directory}{slash}{digest}.{basename}")
    return f"/targets/{quoted}"


def _hashes_match(data: bytes, artifact: Artifact) -> bool:
    if len(data) != artifact.length:
        return False
    for algorithm, expected in artifact.hashes.items():
        try:
            actual = hashlib.new(algorithm, data).hexdigest()
        except ValueError:
            return False
        if actual != expected:
            return False
    return True


class _Device:
    """One device's run: trust state, installed version, report counter."""

    def __init__(
        self,
        sim: SimulatedDevice,
        root: bytes,
        installed: int,
        http: _Http,
        rng: random.Random,
        fleet: Fleet,
    ) -> None:
        self.sim = sim
        self.fleet = fleet
        self.signer = sim.signer()
        self.verifier = Verifier.from_trusted_root(root)
        self.installed = installed
        self.http = http
        self.rng = rng
        self.counter = 0
        self.etag: str | None = None

    def next_counter(self) -> int:
        # Milliseconds since the epoch, strictly increasing: counters keep
        # growing across runs of the simulator with the same seed.
        self.counter = max(self.counter + 1, int(time.time() * 1000))
        return self.counter

    def report(self, wave: str, version: int, status: str, code: str | None = None) -> None:
        clock = self.fleet.clock
        envelope = sign_report(
            self.signer,
            device=self.sim.uuid,
            wave=wave,
            version=version,
            status=status,
            code=code,
            installed_version=self.installed if status != "installed" else version,
            counter=self.next_counter(),
            device_time=None if clock is None else clock(),
        )
        code_, _, _ = self.http.request(
            "report",
            f"/v1/devices/{self.sim.uuid}/reports",
            data=envelope.to_bytes(),
            headers={"Content-Type": "application/json"},
        )
        with self.http.lock:
            self.http.result.reports[str(code_)] += 1

    def poll(self) -> None:
        headers = {"If-None-Match": self.etag} if self.etag else {}
        status, body, got = self.http.request(
            "bundle",
            f"/v1/devices/{self.sim.uuid}/bundle?since-root={self.verifier.trusted_root_version}",
            headers=headers,
        )
        result = self.http.result
        if status != 200:
            return
        self.etag = got.get("ETag") or got.get("etag")
        identity = DeviceIdentity(self.sim.uuid, self.sim.hardware_id, self.sim.tag, self.installed)
        clock = self.fleet.clock
        decision = self.verifier.decide(body, identity, None if clock is None else clock())
        with self.http.lock:
            result.decisions[decision.reason.value] += 1
        if not decision.allowed or decision.artifact is None or decision.wave is None:
            return
        artifact, wave = decision.artifact, decision.wave
        version = artifact.version
        self.report(wave, version, "downloading")
        code, data, _ = self.http.request(
            "artifact", _artifact_path(artifact), limit=artifact.length
        )
        failure: str | None = None
        if code != 200:
            failure = f"download-{code}"
        elif not _hashes_match(data, artifact):
            failure = "hash-mismatch"
        if failure is None:
            self.report(wave, version, "installing")
            if self.fleet.fails(wave, self.rng):
                failure = FAILURE_CODE
        if failure is not None:
            self.report(wave, version, "failed", failure)
            with self.http.lock:
                result.failures[failure] += 1
            return
        self.installed = version
        self.report(wave, version, "installed")
        with self.http.lock:
            result.installs += 1


Clock = Callable[[], datetime]


class Fleet:
    """Simulated devices that keep their trust state and installed version between rounds.

    Use it as a context manager (it holds the worker threads); each
    :meth:`poll` is one round in which the given devices (by default all)
    poll once: fetch the bundle, decide, download, install or fail, report.

    Args:
        url: The server, on loopback.
        devices: The devices (from :func:`identities`).
        concurrency: Devices working at the same time, 1..1024.
        failure_rate: Probability that an install fails after the download.
        wave_failures: Per wave, the exact share of its installs that fail,
            spread evenly: of the first n installs of wave W, ``ceil(n * rate)``
            fail (instead of ``failure_rate`` for that wave).
        installed_version: The version every device starts with.
        root: The trusted root of every device (default: the server's
            ``1.root.json``).
        rng_seed: Seeds the failures.
        clock: The devices' clock: their verifier's reference time and the
            ``device_time`` of their reports (default: the real time).

    Raises:
        InputError: A URL off loopback, or a value out of range.
    """

    def __init__(
        self,
        url: str,
        devices: Sequence[SimulatedDevice],
        *,
        concurrency: int = 16,
        failure_rate: float = 0.0,
        wave_failures: Mapping[str, float] | None = None,
        installed_version: int = 0,
        root: bytes | None = None,
        rng_seed: int | None = None,
        clock: Clock | None = None,
    ) -> None:
        base = _check_url(url)
        if not 1 <= concurrency <= 1024:
            raise InputError("--concurrency must be 1..1024")
        rates = dict(wave_failures or {})
        for rate in (failure_rate, *rates.values()):
            if not 0.0 <= rate <= 1.0:
                raise InputError("--failure-rate must be between 0 and 1")
        self.result = SimulationResult(len(devices))
        self.clock = clock
        self.failure_rate = failure_rate
        self._shares = {w: Fraction(r).limit_denominator(1_000_000) for w, r in rates.items()}
        self._attempts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._http = _Http(base, self.result, self._lock)
        if root is None:
            status, root, _ = self._http.request("root", "/metadata/1.root.json")
            if status != 200:
                raise InputError(f"cannot fetch the trusted root from {base}/metadata/1.root.json")
        rng = random.Random(rng_seed)  # noqa: S311 - simulated failures, not secrets
        self._players = {
            d.uuid: _Device(
                d,
                root,
                installed_version,
                self._http,
                random.Random(rng.getrandbits(64)),  # noqa: S311
                self,
            )
            for d in devices
        }
        self._pool = ThreadPoolExecutor(max_workers=concurrency)

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown()

    def fails(self, wave: str, rng: random.Random) -> bool:
        """Whether this install of ``wave`` fails (called once per install)."""
        share = self._shares.get(wave)
        if share is None:
            return rng.random() < self.failure_rate
        with self._lock:
            self._attempts[wave] += 1
            n = self._attempts[wave]
        return math.ceil(n * share) > math.ceil((n - 1) * share)

    def installed(self, uuid: str) -> int:
        """The version device ``uuid`` runs now."""
        return self._players[uuid].installed

    def poll(self, devices: Sequence[SimulatedDevice] | None = None) -> None:
        """One round: each of ``devices`` (default: all) polls once.

        Raises:
            InputError: A device that is not in this fleet.
        """
        if devices is None:
            players = list(self._players.values())
        else:
            unknown = [d.uuid for d in devices if d.uuid not in self._players]
            if unknown:
                raise InputError(f"device {unknown[0]} is not in this fleet")
            players = [self._players[d.uuid] for d in devices]
        list(self._pool.map(_Device.poll, players))


def simulate(
    url: str,
    devices: Sequence[SimulatedDevice],
    *,
    concurrency: int = 16,
    failure_rate: float = 0.0,
    duration: float | None = None,
    poll_interval: float = 1.0,
    installed_version: int = 0,
    root: bytes | None = None,
    rng_seed: int | None = None,
) -> SimulationResult:
    """Play ``devices`` against the server at ``url`` (loopback only).

    Without ``duration`` each device polls once (and installs if allowed);
    with it, every device polls once per round, a round every
    ``poll_interval`` seconds (or back to back when a round takes longer),
    until ``duration`` seconds have passed. ``root`` is the trusted root every
    device starts with; by default ``/metadata/1.root.json`` of the server
    (trust on first use, fine for a load test).
    """
    if duration is not None and duration <= 0:
        raise InputError("--duration must be positive")
    fleet = Fleet(
        url,
        devices,
        concurrency=concurrency,
        failure_rate=failure_rate,
        installed_version=installed_version,
        root=root,
        rng_seed=rng_seed,
    )
    started = time.monotonic()
    deadline = None if duration is None else started + duration
    # Rounds: every device polls once per round; the next round starts after
    # poll_interval, until the deadline (one round without a duration).
    with fleet:
        for _ in range(MAX_ROUNDS):
            round_started = time.monotonic()
            fleet.poll()
            if deadline is None:
                break
            pause = poll_interval - (time.monotonic() - round_started)
            if time.monotonic() + max(pause, 0) >= deadline:
                break
            time.sleep(max(pause, 0))
    fleet.result.seconds = time.monotonic() - started
    return fleet.result


def result_json(result: SimulationResult) -> bytes:
    return (json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n").encode()
