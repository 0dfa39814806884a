"""One measurement in a fresh process: ``python -m bench._worker TASK PARAMS_JSON``.

Prints one JSON object on stdout: ``{"result": {...}, "maxrss_kb": N,
"hwm_kb": N}``, where ``maxrss_kb`` is ``resource.getrusage(RUSAGE_SELF)
.ru_maxrss`` (kilobytes on Linux) of this process and ``hwm_kb`` the
``VmHWM`` of ``/proc/self/status`` (the same peak, for the process image
after ``exec``; absent where there is no ``/proc``). Errors go to stderr with
a non-zero exit status.
"""

from __future__ import annotations

import json
import os
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WAVE = "bench"
TAG = "production"
HARDWARE = "imx8mm"
WAVE_VERSION = 42
ARTIFACT = "firmware-42.img"
BIG_RIPPLE = 3  # ripple 1: 10 canaries, ripple 2: group "lab", ripple 3: the big one

Params = dict[str, Any]


# -- the fleet ----------------------------------------------------------------


def task_fleet(p: Params) -> Params:
    """Write the fleet CSV: random v4 UUIDs; 95% one hardware id and tag."""
    path, devices = Path(p["path"]), int(p["devices"])
    rng = random.Random(p.get("seed", 1))
    started = time.perf_counter()
    eligible = 0
    with path.open("w", encoding="ascii") as f:
        f.write("uuid,hardware_id,tag,groups,installed_version\n")
        chunk: list[str] = []
        for i in range(devices):
            x = rng.getrandbits(128)
            x = (x & ~(0xF000 << 64) & ~(0xC000 << 48)) | (0x4000 << 64) | (0x8000 << 48)
            h = f"{x:032x}"
            hw, tag = HARDWARE, TAG
            if i % 40 == 0:
                hw = "rpi4"
            elif i % 40 == 20:
                tag = "staging"
            else:
                eligible += 1
            groups = ("eu" if i % 2 else "us") + (";lab" if i % 50 == 1 else "")
            version = 40 if i % 10 == 3 else 41
            chunk.append(
                f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]},{hw},{tag},{groups},{version}\n"
            )
            if len(chunk) >= 50_000:
                f.write("".join(chunk))
                chunk.clear()
        f.write("".join(chunk))
    return {
        "devices": devices,
        "eligible": eligible,
        "bytes": path.stat().st_size,
        "seconds": time.perf_counter() - started,
    }


# -- repository and wave ------------------------------------------------------


def task_setup(p: Params) -> Params:
    """Keys, a repository (root and targets 1-of-1) and the published wave."""
    from tufwaves.server.keys import generate_key, load_key_ref, write_key_pair
    from tufwaves.server.metadata import expiry
    from tufwaves.server.roots import create_repository
    from tufwaves.server.waves import init_wave

    work, repo_path = Path(p["work"]), Path(p["repo"])
    keys = work / "keys"
    secret = os.environ["TUFWAVES_KEY_PASSPHRASE"].encode()
    for name in ("root", "release"):
        write_key_pair(name, keys, generate_key("ed25519"), secret)
    started = time.perf_counter()
    repo, _ = create_repository(
        repo_path,
        root_keys=[load_key_ref(str(keys / "root.key"))],
        root_threshold=1,
        targets_keys=[load_key_ref(str(keys / "release.key"))],
        targets_threshold=1,
    )
    if p.get("dsn"):  # the PostgreSQL inventory in the orchestrator's throwaway schema
        from tufwaves.server.inventory_migration import use_inventory

        use_inventory(repo, str(p["dsn"]))
    artifact = work / ARTIFACT
    artifact.write_bytes(random.Random(7).randbytes(64 * 1024))
    init_wave(
        repo,
        WAVE,
        WAVE_VERSION,
        TAG,
        artifacts=[artifact],
        hardware_ids=[HARDWARE],
        expires=expiry(),
        keys=[load_key_ref(str(keys / "release.key"))],
    )
    state = repo.state()
    snapshot = repo.role_bytes("snapshot", state.snapshot.signed.version)
    (work / "root.json").write_bytes(repo.role_bytes("root", 1))
    return {"seconds": time.perf_counter() - started, "snapshot_bytes": len(snapshot)}


def _repo(p: Params) -> Any:
    from tufwaves.server.repository import Repository

    return Repository.open(p["repo"])


def _snapshot_bytes(repo: Any) -> int:
    return len(repo.role_bytes("snapshot", repo.state().snapshot.signed.version))


# -- PostgreSQL ---------------------------------------------------------------


def _with_schema(dsn: str, schema: str) -> str:
    separator = "&" if "?" in dsn else "?"
    return f"{dsn}{separator}options=-csearch_path%3D{schema}"


def task_pg_schema(p: Params) -> Params:
    """Create a throwaway schema on the server ``dsn``; its DSN, or why not."""
    import secrets

    try:
        import psycopg
    except ImportError as e:
        return {"error": f"psycopg is not installed ({e})"}
    try:
        with psycopg.connect(p["dsn"], autocommit=True, connect_timeout=5) as conn:
            schema = f"bench_{secrets.token_hex(8)}"
            conn.execute(f"CREATE SCHEMA {schema}")
            version = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error as e:
        return {"error": str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}
    return {
        "schema": schema,
        "dsn": _with_schema(p["dsn"], schema),
        "server_version": version[0] if version else None,
    }


def task_pg_drop(p: Params) -> Params:
    """Drop the throwaway schema ``schema`` (everything in it)."""
    import psycopg

    schema = str(p["schema"])
    assert schema.startswith("bench_") and schema.replace("_", "").isalnum(), schema
    with psycopg.connect(p["dsn"], autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return {"dropped": schema}


# -- inventory ----------------------------------------------------------------


def task_import(p: Params) -> Params:
    from tufwaves.server.rollout import open_inventory

    repo = _repo(p)
    with open_inventory(repo) as inv:
        started = time.perf_counter()
        result = inv.import_file(Path(p["csv"]))
        seconds = time.perf_counter() - started
    return {"rows": result.rows, "added": result.added, "seconds": seconds}


# -- rollouts -----------------------------------------------------------------


def _timed_rollout(repo: Any, inv: Any, selector: Any, *, dry_run: bool = False) -> Params:
    from tufwaves.server.rollout import rollout

    started = time.perf_counter()
    result = rollout(repo, inv, WAVE, selector, dry_run=dry_run)
    return {
        "seconds": time.perf_counter() - started,
        "devices": len(result.uuids),
        "encoding": result.encoding,
        "index": result.index,
    }


def task_prelude(p: Params) -> Params:
    """Earlier ripples: 10 canaries (a list), then the whole group "lab"."""
    from tufwaves.server.rollout import Selector, load_wave, open_inventory

    repo = _repo(p)
    with open_inventory(repo) as inv:
        canaries = _timed_rollout(repo, inv, Selector(limit=10, seed="bench-canaries"))
        lab = _timed_rollout(repo, inv, Selector(group="lab"))
        eligible = inv.count_eligible(load_wave(repo, WAVE).eligibility())
    return {"canaries": canaries, "lab": lab, "eligible_after": eligible}


SELECT_BUDGET = 20.0  # seconds per selection case; at least one repeat

SELECTIONS: dict[str, dict[str, Any]] = {
    "--limit 10": {"limit": 10},
    "--group eu --limit 10": {"group": "eu", "limit": 10},
    "--group eu --limit 10%": {"group": "eu", "percent": 10},
    "--group eu --limit 50%": {"group": "eu", "percent": 50},
}


def task_select(p: Params) -> Params:
    """Dry-run selections (nothing signed), after ripples 1 and 2 exist."""
    from tufwaves.server.rollout import Selector, open_inventory

    repo = _repo(p)
    repeats = int(p["repeats"])
    out: Params = {}
    with open_inventory(repo) as inv:
        for label, kwargs in SELECTIONS.items():
            times, devices = [], 0
            for i in range(repeats):
                sel = Selector(seed=f"bench-select-{i}", **kwargs)
                r = _timed_rollout(repo, inv, sel, dry_run=True)
                times.append(r["seconds"])
                devices = r["devices"]
                if sum(times) > SELECT_BUDGET:  # slow at 10^7: fewer repeats
                    break
            out[label] = {"seconds": statistics.median(times), "all": times, "devices": devices}
    return out


def task_commit(p: Params) -> Params:
    """The big ripple: selection, signed ripple, published snapshot/timestamp."""
    from tufwaves.server.rollout import Selector, open_inventory

    repo = _repo(p)
    before = _snapshot_bytes(repo)
    with open_inventory(repo) as inv:
        r = _timed_rollout(repo, inv, Selector(limit=int(p["limit"]), seed="bench-big"))
    assert r["index"] == BIG_RIPPLE, r
    r["snapshot_before"] = before
    r["snapshot_after"] = _snapshot_bytes(repo)
    return r


# -- bundles and decisions ----------------------------------------------------


def task_bundles(p: Params) -> Params:
    """Bundle build time over random members (warm), sizes; write bundles for
    the decision tasks (one bundle per line, identities beside)."""
    from tufwaves.server.bundler import BundleSource, build_bundle
    from tufwaves.server.rollout import open_inventory

    repo = _repo(p)
    rng = random.Random(11)
    with open_inventory(repo) as inv:
        members = list(inv.ripple_members(WAVE, BIG_RIPPLE))
        want = min(len(members), max(int(p["samples"]), int(p["decisions"])))
        chosen = rng.sample(members, want)
        del members
        build_bundle(repo, inv, chosen[-1])  # warm: imports, caches, first file reads
        times: list[float] = []
        sizes: list[int] = []
        evidence: list[int] = []
        with (
            Path(p["bundles"]).open("wb") as bundles,
            Path(p["identities"]).open("w", encoding="ascii") as identities,
        ):
            started_all = time.perf_counter()
            for i, uuid in enumerate(chosen):
                started = time.perf_counter()
                bundle = build_bundle(repo, inv, uuid)
                data = bundle.to_bytes()
                elapsed = time.perf_counter() - started
                if i < int(p["samples"]):
                    times.append(elapsed)
                    sizes.append(len(data))
                    evidence.append(
                        len(
                            json.dumps(
                                [e.to_dict() for e in bundle.evidence], separators=(",", ":")
                            )
                        )
                    )
                if i < int(p["decisions"]):
                    assert b"\n" not in data
                    bundles.write(data + b"\n")
                    device = inv.get(uuid)
                    assert device is not None
                    identities.write(
                        f"{uuid},{device.hardware_id},{device.tag},"
                        f"{device.installed_version or 0}\n"
                    )
            total = time.perf_counter() - started_all
        # What `tufwaves serve` does: one BundleSource per published state,
        # shared by every request (parsed waves, encodings, files, open trees).
        source = BundleSource(repo, repo.state())
        source.plan(inv, chosen[-1]).bundle().to_bytes()
        served: list[float] = []
        for uuid in chosen[: int(p["samples"])]:
            started = time.perf_counter()
            source.plan(inv, uuid).bundle().to_bytes()
            served.append(time.perf_counter() - started)
        source.close()
    return {
        "served_seconds": statistics.median(served),
        "served_p95_seconds": sorted(served)[int(0.95 * (len(served) - 1))],
        "build_seconds": statistics.median(times),
        "build_p95_seconds": sorted(times)[int(0.95 * (len(times) - 1))],
        "bundle_bytes": int(statistics.median(sizes)),
        "evidence_bytes": int(statistics.median(evidence)),
        "evidence_max_bytes": max(evidence),
        "samples": len(times),
        "written": min(len(chosen), int(p["decisions"])),
        "bundles_per_second": len(chosen) / total if total else 0.0,
    }


def _identity(line: str) -> Any:
    from tufwaves.verify import DeviceIdentity

    uuid, hw, tag, version = line.strip().split(",")
    return DeviceIdentity(uuid, hw, tag, int(version))


def task_decide_cold(p: Params) -> Params:
    """First decision of a fresh process (imports already done)."""
    from tufwaves.verify import Verifier

    root = Path(p["root"]).read_bytes()
    index = int(p["index"])
    with Path(p["bundles"]).open("rb") as f:
        for i, line in enumerate(f):
            if i == index:
                data = line.rstrip(b"\n")
                break
    with Path(p["identities"]).open(encoding="ascii") as f:
        identity = _identity(f.readlines()[index])
    modules = set(sys.modules)
    started = time.perf_counter()
    verifier = Verifier.from_trusted_root(root)
    decision = verifier.decide(data, identity)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "allowed": decision.allowed,
        "reason": decision.reason.value,
        "bundle_bytes": len(data),
        "lazy_imports": sorted(set(sys.modules) - modules),
    }


def task_decide_warm(p: Params) -> Params:
    """Decisions per second with one Verifier over distinct devices' bundles."""
    from tufwaves.verify import Verifier

    root = Path(p["root"]).read_bytes()
    bundles = Path(p["bundles"]).read_bytes().splitlines()
    with Path(p["identities"]).open(encoding="ascii") as f:
        identities = [_identity(line) for line in f]
    verifier = Verifier.from_trusted_root(root)
    verifier.decide(bundles[0], identities[0])  # warm-up, not counted
    reasons: dict[str, int] = {}
    started = time.perf_counter()
    for data, identity in zip(bundles, identities, strict=True):
        decision = verifier.decide(data, identity)
        reasons[decision.reason.value] = reasons.get(decision.reason.value, 0) + 1
    seconds = time.perf_counter() - started
    return {
        "decisions": len(bundles),
        "seconds": seconds,
        "per_second": len(bundles) / seconds,
        "reasons": reasons,
    }


# -- baseline -----------------------------------------------------------------


def task_baseline_sign(p: Params) -> Params:
    """Sign the baseline repository whose flat role lists the big ripple."""
    from bench import _baseline
    from tufwaves.server.rollout import open_inventory

    repo = _repo(p)
    with open_inventory(repo) as inv:
        members = list(inv.ripple_members(WAVE, BIG_RIPPLE))
    artifact = (Path(p["work"]) / ARTIFACT).read_bytes()
    flat = _baseline.build(WAVE, artifact, ARTIFACT, HARDWARE, TAG, WAVE_VERSION, members)
    _baseline.write(flat, Path(p["out"]))
    return {
        "sign_seconds": flat.sign_seconds,
        "flat_bytes": flat.flat_bytes,
        "uuids": len(members),
    }


def task_baseline_decide(p: Params) -> Params:
    """Cold decision (the first one of this process), then ``warm`` more."""
    from bench import _baseline

    files, target = _baseline.read(Path(p["dir"]))
    cap = p.get("targets_max_length")
    cold = _baseline.decide(files, target, p["uuid"], cap)
    warm = [
        _baseline.decide(files, target, p["uuid"], cap).seconds
        for _ in range(int(p.get("warm", 0)) if cold.error is None else 0)
    ]
    return {
        "seconds": cold.seconds,
        "member": cold.member,
        "error": cold.error,
        "downloaded": cold.downloaded,
        "fetched": cold.fetched,
        "warm_seconds": statistics.median(warm) if warm else None,
    }


def task_bins_sign(p: Params) -> Params:
    """The hashed-bin baseline: choose k, sign a sample of bins, write what the
    device ``uuid`` downloads."""
    from dataclasses import asdict

    from bench import _bins
    from tufwaves.server.rollout import open_inventory

    repo = _repo(p)
    with open_inventory(repo) as inv:
        members = list(inv.ripple_members(WAVE, BIG_RIPPLE))
    artifact = (Path(p["work"]) / ARTIFACT).read_bytes()
    built = _bins.build(WAVE, artifact, ARTIFACT, members, p["uuid"])
    _bins.write(built, Path(p["out"]))
    plan = asdict(built.plan)
    plan["snapshot_bytes"] = {str(k): v for k, v in plan["snapshot_bytes"].items()}
    plan["expected"] = {str(k): v for k, v in plan["expected"].items()}
    return {"plan": plan, "uuids": len(members)}


def task_bins_decide(p: Params) -> Params:
    """Cold hashed-bin decision: the first of this process."""
    from bench import _bins

    out = Path(p["dir"])
    files = {f.name: f.read_bytes() for f in out.iterdir() if f.name.endswith(".json")}
    return _bins.decide(files, (out / "target-path").read_text())


TASKS: dict[str, Callable[[Params], Params]] = {
    "fleet": task_fleet,
    "pg-schema": task_pg_schema,
    "pg-drop": task_pg_drop,
    "setup": task_setup,
    "import": task_import,
    "prelude": task_prelude,
    "select": task_select,
    "commit": task_commit,
    "bundles": task_bundles,
    "decide-cold": task_decide_cold,
    "decide-warm": task_decide_warm,
    "baseline-sign": task_baseline_sign,
    "baseline-decide": task_baseline_decide,
    "bins-sign": task_bins_sign,
    "bins-decide": task_bins_decide,
}


def _hwm_kb() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in TASKS:
        print(f"usage: python -m bench._worker {{{','.join(TASKS)}}} PARAMS_JSON", file=sys.stderr)
        return 2
    result = TASKS[argv[0]](json.loads(argv[1]))
    print(
        json.dumps(
            {
                "result": result,
                "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "hwm_kb": _hwm_kb(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
