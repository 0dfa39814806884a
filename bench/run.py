"""The benchmark orchestrator: ``python -m bench [--devices N ...] [--runs R]
[--quick] [--json FILE]``.

For every fleet size it generates a fleet CSV once, then, for every run, a
new repository with one wave, and measures in fresh worker processes
(:mod:`bench._worker`): inventory import, dry-run selections, the big ripple's
commit, per-device bundles, cold and warm device decisions, snapshot size,
and the flat python-tuf baseline (:mod:`bench._baseline`). Each figure is the
median over the runs. Tables go to stdout; progress goes to stderr only when
it is a terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEVICES = (10**4, 10**5, 10**6, 10**7)
QUICK_DEVICES = (2_000, 20_000)
BACKENDS = ("sqlite", "postgres")
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PG_DSN_ENV = "TUFWAVES_BENCH_POSTGRES"
NGCLIENT_TARGETS_CAP = 5_000_000
LEAVE_OUT = 5  # the big ripple takes every eligible device but this many
SELECT_NAMES = (
    "--limit 10",
    "--group eu --limit 10",
    "--group eu --limit 10%",
    "--group eu --limit 50%",
)
SNAPSHOT_GROWTH_MAX = 100  # bytes: one more role entry, whatever the fleet size

Metrics = dict[str, Any]


@dataclass(frozen=True)
class Options:
    devices: tuple[int, ...]
    runs: int
    quick: bool
    json: Path | None
    workdir: Path | None
    keep: bool
    samples: int  # bundles timed per run
    decisions: int  # distinct devices in the warm decision loop
    cold: int  # cold-decision processes per run
    select_repeats: int
    baseline_max: int  # largest flat role (UUIDs) the baseline signs and verifies
    backends: tuple[str, ...] = ("sqlite",)
    pg_dsn: str = DEFAULT_PG_DSN  # the server; each run gets a throwaway schema on it


# -- plumbing -----------------------------------------------------------------


def _progress(message: str) -> None:
    if sys.stderr.isatty():
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class WorkerError(RuntimeError):
    pass


def _worker(task: str, env: dict[str, str], **params: Any) -> Metrics:
    """Run one task in a fresh interpreter; its result plus peak RSS in MB."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench._worker", task, json.dumps(params, default=str)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise WorkerError(f"worker task {task} failed (exit {proc.returncode}):\n{tail}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    result: Metrics = out["result"]
    result["rss_mb"] = out["maxrss_kb"] / 1024
    return result


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": None,
        "memory_gb": None,
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gb"] = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return info


# -- one run ------------------------------------------------------------------


def run_once(
    n: int,
    run: int,
    base: Path,
    csv: Path,
    opt: Options,
    env: dict[str, str],
    backend: str = "sqlite",
    baselines: bool = True,
) -> Metrics:
    """One run on ``backend``; PostgreSQL gets a new schema, dropped afterwards."""
    if backend != "postgres":
        return _run_once(n, run, base, csv, opt, env, backend, None, baselines)
    schema = _worker("pg-schema", env, dsn=opt.pg_dsn)
    if schema.get("error"):
        raise WorkerError(f"PostgreSQL at {opt.pg_dsn} is not usable: {schema['error']}")
    try:
        m = _run_once(n, run, base, csv, opt, env, backend, schema["dsn"], baselines)
    finally:
        _worker("pg-drop", env, dsn=opt.pg_dsn, schema=schema["schema"])
    m["server_version"] = schema.get("server_version")
    return m


def _run_once(
    n: int,
    run: int,
    base: Path,
    csv: Path,
    opt: Options,
    env: dict[str, str],
    backend: str,
    dsn: str | None,
    baselines: bool,
) -> Metrics:
    work = base / f"run{run}-{backend}"
    repo = work / "repo"
    work.mkdir(parents=True)
    m: Metrics = {"devices": n, "backend": backend}
    label = f"{n:,} devices, {backend}, run {run + 1}/{opt.runs}"

    _progress(f"{label}: repository and wave")
    setup = _worker("setup", env, work=work, repo=repo, dsn=dsn)
    m["snapshot_after_wave"] = setup["snapshot_bytes"]

    _progress(f"{label}: import")
    imp = _worker("import", env, repo=repo, csv=csv)
    m["import_seconds"] = imp["seconds"]
    m["import_rate"] = imp["rows"] / imp["seconds"]
    m["import_rss_mb"] = imp["rss_mb"]

    _progress(f"{label}: earlier ripples (10 canaries, group lab)")
    pre = _worker("prelude", env, repo=repo)
    m["canary_commit_seconds"] = pre["canaries"]["seconds"]
    m["lab_commit_seconds"] = pre["lab"]["seconds"]
    m["lab_devices"] = pre["lab"]["devices"]
    m["lab_encoding"] = pre["lab"]["encoding"]
    eligible = pre["eligible_after"]

    _progress(f"{label}: dry-run selections")
    sel = _worker("select", env, repo=repo, repeats=opt.select_repeats)
    for name, r in sel.items():
        if isinstance(r, dict):
            m[f"select {name}"] = r["seconds"]
            m[f"select {name} devices"] = r["devices"]

    _progress(f"{label}: big ripple of {eligible - LEAVE_OUT:,} devices")
    commit = _worker("commit", env, repo=repo, limit=max(1, eligible - LEAVE_OUT))
    m["commit_seconds"] = commit["seconds"]
    m["commit_devices"] = commit["devices"]
    m["commit_encoding"] = commit["encoding"]
    m["commit_rss_mb"] = commit["rss_mb"]
    m["snapshot_before"] = commit["snapshot_before"]
    m["snapshot_after"] = commit["snapshot_after"]

    _progress(f"{label}: bundles")
    bundles, identities = work / "bundles.jsonl", work / "identities.csv"
    b = _worker(
        "bundles",
        env,
        repo=repo,
        samples=opt.samples,
        decisions=opt.decisions,
        bundles=bundles,
        identities=identities,
    )
    m["bundle_build_seconds"] = b["build_seconds"]
    m["bundle_build_p95_seconds"] = b["build_p95_seconds"]
    m["bundle_served_seconds"] = b["served_seconds"]
    m["bundle_served_p95_seconds"] = b["served_p95_seconds"]
    m["bundle_bytes"] = b["bundle_bytes"]
    m["evidence_bytes"] = b["evidence_bytes"]
    m["bundles_per_second"] = b["bundles_per_second"]
    written = b["written"]

    _progress(f"{label}: decisions")
    root = work / "root.json"
    cold = [
        _worker(
            "decide-cold",
            env,
            root=root,
            bundles=bundles,
            identities=identities,
            index=(i * 7919) % written,
        )
        for i in range(opt.cold)
    ]
    m["cold_decision_seconds"] = statistics.median(c["seconds"] for c in cold)
    m["cold_decision_allowed"] = all(c["allowed"] for c in cold)
    m["cold_decision_reasons"] = sorted({c["reason"] for c in cold})
    m["cold_decision_rss_mb"] = max(c["rss_mb"] for c in cold)
    m["cold_decision_lazy_imports"] = cold[0].get("lazy_imports", [])
    warm = _worker("decide-warm", env, root=root, bundles=bundles, identities=identities)
    m["warm_decisions"] = warm["decisions"]
    m["warm_per_second"] = warm["per_second"]
    m["warm_reasons"] = warm["reasons"]

    member = identities.read_text().split(",", 1)[0]
    if baselines:  # the baselines do not depend on the inventory backend
        m.update(run_baseline(n, work, repo, member, m["commit_devices"], opt, env, label))
        m.update(run_bins(work, repo, member, opt, env, label))
    if not opt.keep:
        shutil.rmtree(work, ignore_errors=True)
    return m


def run_baseline(
    n: int,
    work: Path,
    repo: Path,
    member: str,
    uuids: int,
    opt: Options,
    env: dict[str, str],
    label: str,
) -> Metrics:
    m: Metrics = {}
    if uuids > opt.baseline_max:
        m["baseline_skipped"] = (
            f"not run: {uuids:,} UUIDs in one role is beyond --baseline-max "
            f"{opt.baseline_max:,} (memory and time; see the smaller fleets' trend)"
        )
        return m
    _progress(f"{label}: baseline (flat python-tuf role of {uuids:,} UUIDs)")
    out = work / "baseline"
    sign = _worker("baseline-sign", env, repo=repo, work=work, out=out)
    m["baseline_sign_seconds"] = sign["sign_seconds"]
    m["baseline_flat_bytes"] = sign["flat_bytes"]
    m["baseline_sign_rss_mb"] = sign["rss_mb"]
    big = sign["flat_bytes"] > 50_000_000
    repeats = 1 if big else opt.cold
    warm = 1 if big else 3

    default = _worker("baseline-decide", env, dir=out, uuid=member, targets_max_length=None)
    m["baseline_default_error"] = default["error"]
    cap = None
    runs = [default]
    if default["error"] is not None:
        cap = sign["flat_bytes"] + 1_000_000
        m["baseline_raised_cap"] = cap
        runs = []
    while len(runs) < repeats - 1:
        runs.append(_worker("baseline-decide", env, dir=out, uuid=member, targets_max_length=cap))
    runs.append(
        _worker("baseline-decide", env, dir=out, uuid=member, targets_max_length=cap, warm=warm)
    )
    errors = [r["error"] for r in runs if r["error"]]
    if errors:
        m["baseline_error"] = errors[0]
        return m
    assert all(r["member"] for r in runs), "the baseline did not find its member"
    m["baseline_cold_seconds"] = statistics.median(r["seconds"] for r in runs)
    m["baseline_warm_seconds"] = runs[-1]["warm_seconds"]
    m["baseline_bytes"] = runs[0]["downloaded"]
    m["baseline_files"] = runs[0]["fetched"]
    m["baseline_decide_rss_mb"] = max(r["rss_mb"] for r in runs)
    m["baseline_cap"] = cap
    return m


def run_bins(
    work: Path, repo: Path, member: str, opt: Options, env: dict[str, str], label: str
) -> Metrics:
    """The succinct hashed-bin baseline (TAP 15) for the big ripple."""
    _progress(f"{label}: baseline (succinct hashed bins)")
    out = work / "bins"
    sign = _worker("bins-sign", env, repo=repo, work=work, out=out, uuid=member)
    plan = sign["plan"]
    m: Metrics = {
        "bins_k": plan["k"],
        "bins_entry_bytes": plan["entry_bytes"],
        "bins_snapshot_bytes": plan["snapshot_bytes"][str(plan["k"])],
        "bins_expected_bytes": plan["expected"][str(plan["k"])],
        "bins_partition_seconds": plan["partition_seconds"],
        "bins_sample": plan["sample_bins"],
        "bins_sample_sign_seconds": plan["sample_sign_seconds"],
        "bins_sign_seconds": plan["sign_seconds_estimate"],
        "bins_device_entries": plan["bin_sizes"]["device_entries"],
        "bins_max_entries": plan["bin_sizes"]["max_entries"],
        "bins_sign_rss_mb": sign["rss_mb"],
    }
    runs = [_worker("bins-decide", env, dir=out) for _ in range(opt.cold)]
    errors = [r["error"] for r in runs if r["error"]]
    if errors:
        m["bins_error"] = errors[0]
        return m
    assert all(r["member"] for r in runs), "the hashed-bin baseline did not find its member"
    m["bins_cold_seconds"] = statistics.median(r["seconds"] for r in runs)
    m["bins_bytes"] = runs[0]["downloaded"]
    m["bins_files"] = runs[0]["fetched"]
    return m


def median_metrics(runs: Sequence[Metrics]) -> Metrics:
    """Per key: the median of numbers, else the first run's value."""
    out: Metrics = {}
    for key in runs[0]:
        values = [r[key] for r in runs if key in r]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            out[key] = statistics.median(values)
        else:
            out[key] = values[0]
    return out


# -- formatting ---------------------------------------------------------------


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    if n < 10_000:
        return f"{n:,.0f} B"
    if n < 10_000_000:
        return f"{n / 1e3:,.1f} kB"
    return f"{n / 1e6:,.1f} MB"


def fmt_mb(mb: float) -> str:
    return f"{mb:,.0f} MB"


def status(ok: bool) -> str:
    return "MET" if ok else "MISSED"


@dataclass
class Target:
    name: str
    devices: int | None  # the fleet size it is stated for (None: every size)
    measured: str = "not measured"
    verdict: str = "NOT MEASURED"


def targets_for(fleets: dict[int, Metrics]) -> list[Target]:
    """The issue's targets, judged on the fleet sizes that ran."""
    out: list[Target] = []

    def at(size: int) -> Metrics | None:
        return fleets.get(size)

    t = Target("ripple commit <= 10 s at 10^6", 10**6)
    if (f := at(10**6)) is not None:
        t.measured = fmt_seconds(f["commit_seconds"])
        t.verdict = status(f["commit_seconds"] <= 10)
    out.append(t)
    t = Target("ripple commit <= 120 s and peak RSS <= 4 GB at 10^7", 10**7)
    if (f := at(10**7)) is not None:
        t.measured = f"{fmt_seconds(f['commit_seconds'])}, {fmt_mb(f['commit_rss_mb'])}"
        t.verdict = status(f["commit_seconds"] <= 120 and f["commit_rss_mb"] <= 4096)
    out.append(t)
    t = Target("--limit 10 selection <= 100 ms at 10^7 (with and without --group)", 10**7)
    if (f := at(10**7)) is not None:
        worst = max(f["select --limit 10"], f["select --group eu --limit 10"])
        t.measured = fmt_seconds(worst)
        t.verdict = status(worst <= 0.1)
    out.append(t)
    t = Target("bundle build <= 5 ms at 10^6", 10**6)
    if (f := at(10**6)) is not None:
        t.measured = fmt_seconds(f["bundle_build_seconds"])
        t.verdict = status(f["bundle_build_seconds"] <= 0.005)
    out.append(t)
    t = Target("membership evidence <= 2 KB at 10^7", 10**7)
    if (f := at(10**7)) is not None:
        t.measured = fmt_bytes(f["evidence_bytes"])
        t.verdict = status(f["evidence_bytes"] <= 2048)
    out.append(t)
    if fleets:
        worst_cold = max(f["cold_decision_seconds"] for f in fleets.values())
        out.append(
            Target(
                "cold decision <= 20 ms (every fleet size)",
                None,
                f"worst {fmt_seconds(worst_cold)}",
                status(worst_cold <= 0.020),
            )
        )
        growth = max(f["snapshot_after"] - f["snapshot_before"] for f in fleets.values())
        afters = [f["snapshot_after"] for f in fleets.values()]
        out.append(
            Target(
                "snapshot.json does not grow with devices",
                None,
                f"+{growth:.0f} B per ripple; {min(afters):,.0f}..{max(afters):,.0f} B "
                f"after the big ripple over {len(afters)} fleet size(s)",
                status(growth <= SNAPSHOT_GROWTH_MAX and max(afters) - min(afters) <= 16),
            )
        )
    t = Target("bytes per device >= 100x fewer than the flat baseline at 10^6", 10**6)
    if (f := at(10**6)) is not None and f.get("baseline_bytes"):
        ratio = f["baseline_bytes"] / f["bundle_bytes"]
        t.measured = f"{ratio:,.0f}x"
        t.verdict = status(ratio >= 100)
    out.append(t)
    t = Target("cold decision >= 10x faster than the flat baseline at 10^6", 10**6)
    if (f := at(10**6)) is not None and f.get("baseline_cold_seconds"):
        ratio = f["baseline_cold_seconds"] / f["cold_decision_seconds"]
        t.measured = f"{ratio:,.1f}x"
        t.verdict = status(ratio >= 10)
    out.append(t)
    return out


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  " + "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  " + "  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return lines


def fleet_table(n: int, f: Metrics, runs: int) -> list[str]:
    def target(size: int, text: str, ok: bool) -> tuple[str, str]:
        return (text, status(ok)) if n == size else ("", "")

    rows: list[list[str]] = []

    def row(what: str, value: str, tgt: tuple[str, str] = ("", "")) -> None:
        rows.append([what, value, *tgt])

    row(
        "inventory import (import_file)",
        f"{f['import_rate']:,.0f} devices/s ({fmt_seconds(f['import_seconds'])}, "
        f"RSS {fmt_mb(f['import_rss_mb'])})",
    )
    row(
        "ripple 1: --limit 10 (list), commit",
        fmt_seconds(f["canary_commit_seconds"]),
    )
    row(
        f"ripple 2: --group lab ({f['lab_devices']:,.0f}, {f['lab_encoding']}), commit",
        fmt_seconds(f["lab_commit_seconds"]),
    )
    for name in SELECT_NAMES:
        secs = f[f"select {name}"]
        tgt = ("", "")
        if name.endswith("--limit 10"):
            tgt = target(10**7, "<= 100 ms", secs <= 0.1)
        row(
            f"selection dry-run {name} ({f[f'select {name} devices']:,.0f})",
            fmt_seconds(secs),
            tgt,
        )
    commit_tgt = target(10**6, "<= 10 s", f["commit_seconds"] <= 10)
    if n == 10**7:
        commit_tgt = target(
            10**7, "<= 120 s, <= 4 GB", f["commit_seconds"] <= 120 and f["commit_rss_mb"] <= 4096
        )
    row(
        f"ripple 3 commit ({f['commit_devices']:,.0f} devices, {f['commit_encoding']})",
        f"{fmt_seconds(f['commit_seconds'])}, peak RSS {fmt_mb(f['commit_rss_mb'])}",
        commit_tgt,
    )
    growth = f["snapshot_after"] - f["snapshot_before"]
    row(
        "snapshot.json before -> after ripple 3",
        f"{f['snapshot_before']:,.0f} -> {f['snapshot_after']:,.0f} B (+{growth:.0f})",
        ("no growth with devices", status(growth <= SNAPSHOT_GROWTH_MAX)),
    )
    row(
        "bundle build (median, warm)",
        f"{fmt_seconds(f['bundle_build_seconds'])} (p95 "
        f"{fmt_seconds(f['bundle_build_p95_seconds'])}; {f['bundles_per_second']:,.0f}/s)",
        target(10**6, "<= 5 ms", f["bundle_build_seconds"] <= 0.005),
    )
    row(
        "bundle, server path (one BundleSource per state)",
        f"{fmt_seconds(f['bundle_served_seconds'])} (p95 "
        f"{fmt_seconds(f['bundle_served_p95_seconds'])})",
    )
    row("bundle bytes (per device download)", fmt_bytes(f["bundle_bytes"]))
    row(
        "membership evidence bytes (JSON)",
        fmt_bytes(f["evidence_bytes"]),
        target(10**7, "<= 2 KB", f["evidence_bytes"] <= 2048),
    )
    cold_ok = f["cold_decision_seconds"] <= 0.020
    row(
        "cold decision (fresh process)",
        f"{fmt_seconds(f['cold_decision_seconds'])} "
        f"({'allowed' if f['cold_decision_allowed'] else 'NOT ALLOWED'})",
        ("<= 20 ms", status(cold_ok)),
    )
    warm_reasons = ", ".join(f"{k} {v}" for k, v in f["warm_reasons"].items())
    row(
        f"warm decisions ({f['warm_decisions']:,.0f} devices, one Verifier)",
        f"{f['warm_per_second']:,.0f}/s ({fmt_seconds(1 / f['warm_per_second'])} each; "
        f"{warm_reasons})",
    )
    # the baseline
    if "baseline_skipped" in f:
        row("baseline (flat python-tuf role)", f["baseline_skipped"])
    elif "baseline_sign_seconds" in f:
        row(
            "baseline: sign flat role (build, sign, serialise)",
            f"{fmt_seconds(f['baseline_sign_seconds'])}, {fmt_bytes(f['baseline_flat_bytes'])}, "
            f"RSS {fmt_mb(f['baseline_sign_rss_mb'])}",
        )
        default_error = f.get("baseline_default_error")
        row(
            "baseline: ngclient, default UpdaterConfig",
            f"fails: {default_error}" if default_error else "ok",
        )
        if "baseline_error" in f:
            row("baseline: ngclient with the cap raised", f"fails: {f['baseline_error']}")
        elif f.get("baseline_cold_seconds") is not None:
            cap = f.get("baseline_cap")
            how = f" (targets_max_length={cap:,.0f})" if cap else ""
            row(
                f"baseline: bytes per device{how}",
                f"{fmt_bytes(f['baseline_bytes'])} in {len(f['baseline_files'])} files",
            )
            row(
                "baseline: cold decision (Updater+refresh+lookup+check)",
                f"{fmt_seconds(f['baseline_cold_seconds'])}, peak RSS "
                f"{fmt_mb(f['baseline_decide_rss_mb'])}",
            )
            row("baseline: warm decision", fmt_seconds(f["baseline_warm_seconds"]))
            bytes_ratio = f["baseline_bytes"] / f["bundle_bytes"]
            time_ratio = f["baseline_cold_seconds"] / f["cold_decision_seconds"]
            row(
                "ratio baseline/tufwaves: bytes per device",
                f"{bytes_ratio:,.1f}x fewer with tufwaves",
                target(10**6, ">= 100x", bytes_ratio >= 100),
            )
            row(
                "ratio baseline/tufwaves: cold decision time",
                f"{time_ratio:,.1f}x faster with tufwaves",
                target(10**6, ">= 10x", time_ratio >= 10),
            )
    if "bins_k" in f:
        row(
            f"hashed bins (TAP 15): k chosen = {f['bins_k']:.0f} ({2 ** int(f['bins_k']):,} bins)",
            f"{f['bins_device_entries']:,.0f} entries in the device's bin (max "
            f"{f['bins_max_entries']:,.0f}), {f['bins_entry_bytes']:.0f} B each; snapshot "
            f"{fmt_bytes(f['bins_snapshot_bytes'])}",
        )
        row(
            "hashed bins: sign (partition + every bin, extrapolated)",
            f"{fmt_seconds(f['bins_sign_seconds'])} (signed {f['bins_sample']:.0f} bins in "
            f"{fmt_seconds(f['bins_sample_sign_seconds'])}; partition "
            f"{fmt_seconds(f['bins_partition_seconds'])})",
        )
        if "bins_error" in f:
            row("hashed bins: ngclient", f"fails: {f['bins_error']}")
        else:
            bins_ratio = f["bins_bytes"] / f["bundle_bytes"]
            row(
                "hashed bins: bytes per device (ngclient)",
                f"{fmt_bytes(f['bins_bytes'])} in {len(f['bins_files'])} files "
                f"(expected {fmt_bytes(f['bins_expected_bytes'])})",
            )
            row("hashed bins: cold decision (ngclient)", fmt_seconds(f["bins_cold_seconds"]))
            row(
                "ratio hashed bins/tufwaves: bytes per device",
                f"{bins_ratio:,.1f}x fewer with tufwaves",
                target(n, ">= 10x", bins_ratio >= 10) if n >= 10**6 else ("", ""),
            )
    title = (
        f"== fleet of {n:,} devices ({f.get('backend', 'sqlite')}): "
        f"{f['commit_devices']:,.0f} in the big ripple "
        f"(median of {runs} run{'s' if runs != 1 else ''}) =="
    )
    return [title, *_table(rows, ["measurement", "value", "target", "status"]), ""]


def side_by_side(n: int, by_backend: dict[str, Metrics]) -> list[str]:
    """The inventory-dependent figures of one fleet, one column per backend."""
    names = list(by_backend)

    def cells(get: Any) -> list[str]:
        out = []
        for b in names:
            try:
                out.append(get(by_backend[b]))
            except KeyError:
                out.append("-")
        return out

    rows: list[list[str]] = [
        [
            "inventory import",
            *cells(
                lambda f: f"{f['import_rate']:,.0f} devices/s ({fmt_seconds(f['import_seconds'])})"
            ),
        ],
    ]
    for name in SELECT_NAMES:
        rows.append([f"selection {name}", *cells(lambda f, k=name: fmt_seconds(f[f"select {k}"]))])
    rows += [
        [
            "ripple 2 commit (group lab)",
            *cells(lambda f: fmt_seconds(f["lab_commit_seconds"])),
        ],
        [
            "ripple 3 commit, peak RSS",
            *cells(lambda f: f"{fmt_seconds(f['commit_seconds'])}, {fmt_mb(f['commit_rss_mb'])}"),
        ],
        [
            "bundle build (median / p95)",
            *cells(
                lambda f: (
                    f"{fmt_seconds(f['bundle_build_seconds'])} / "
                    f"{fmt_seconds(f['bundle_build_p95_seconds'])}"
                )
            ),
        ],
        [
            "bundle, server path (median / p95)",
            *cells(
                lambda f: (
                    f"{fmt_seconds(f['bundle_served_seconds'])} / "
                    f"{fmt_seconds(f['bundle_served_p95_seconds'])}"
                )
            ),
        ],
        ["bundle bytes", *cells(lambda f: fmt_bytes(f["bundle_bytes"]))],
        ["cold decision", *cells(lambda f: fmt_seconds(f["cold_decision_seconds"]))],
    ]
    title = f"== fleet of {n:,} devices: backends side by side =="
    return [title, *_table(rows, ["measurement", *names]), ""]


def backend_targets(fleets: dict[int, dict[str, Metrics]]) -> list[Target]:
    """The PostgreSQL issue's throughput targets, per backend, at 10^7."""
    out: list[Target] = []
    size = 10**7
    for backend in BACKENDS:
        f = fleets.get(size, {}).get(backend)
        floor = 200_000 if backend == "postgres" else 150_000
        checks: list[tuple[str, Any, Any]] = [
            (
                f"{backend}: import >= {floor:,} devices/s at 10^7",
                lambda f: f"{f['import_rate']:,.0f} devices/s",
                lambda f, floor=floor: f["import_rate"] >= floor,
            ),
            (
                f"{backend}: --group eu --limit 50% <= 10 s at 10^7",
                lambda f: fmt_seconds(f["select --group eu --limit 50%"]),
                lambda f: f["select --group eu --limit 50%"] <= 10,
            ),
            (
                f"{backend}: ripple commit <= 30 s, peak RSS <= 2 GB at 10^7",
                lambda f: f"{fmt_seconds(f['commit_seconds'])}, {fmt_mb(f['commit_rss_mb'])}",
                lambda f: f["commit_seconds"] <= 30 and f["commit_rss_mb"] <= 2048,
            ),
            (
                f"{backend}: bundle build <= 2 ms at 10^7 (as the server builds it)",
                lambda f: (
                    f"{fmt_seconds(f['bundle_served_seconds'])} "
                    f"(one-off build_bundle {fmt_seconds(f['bundle_build_seconds'])})"
                ),
                lambda f: f["bundle_served_seconds"] <= 0.002,
            ),
        ]
        for name, measured, ok in checks:
            t = Target(name, size)
            if f is not None:
                t.measured = measured(f)
                t.verdict = status(ok(f))
            out.append(t)
    for n in sorted(fleets):
        for f in fleets[n].values():
            if "bins_bytes" in f and n >= 10**6:
                ratio = f["bins_bytes"] / f["bundle_bytes"]
                out.append(
                    Target(
                        f"bytes per device >= 10x fewer than hashed bins (best k) at {n:,}",
                        n,
                        f"{ratio:,.1f}x (k={f['bins_k']:.0f})",
                        status(ratio >= 10),
                    )
                )
    return out


# -- main ---------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark tufwaves rollouts, bundles and device decisions against a "
        "flat python-tuf role verified by ngclient.",
        epilog="example: python -m bench --devices 10000 1000000 --runs 1 --json bench.json",
    )
    parser.add_argument(
        "--devices",
        nargs="+",
        type=lambda s: int(float(s)),
        metavar="N",
        help="fleet sizes (default: 10^4 10^5 10^6 10^7; 1e6 is accepted)",
    )
    parser.add_argument("--runs", type=int, help="median of R runs (default 3; --quick: 1)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke mode for CI: fleets of 2,000 and 20,000, one run, fewer samples",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every figure here")
    parser.add_argument(
        "--workdir", type=Path, help="where repositories and fleets go (default: a temp dir)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--decisions",
        type=int,
        help="distinct devices in the warm decision loop (default 10,000; --quick: 300)",
    )
    parser.add_argument(
        "--baseline-max",
        type=int,
        default=10**7,
        metavar="N",
        help="largest flat baseline role, in UUIDs (default 10^7)",
    )
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgres", "both"),
        default="sqlite",
        help="inventory backend(s), run on the same fleet (default sqlite); PostgreSQL "
        "gets a throwaway schema per run, dropped afterwards",
    )
    parser.add_argument(
        "--pg-dsn",
        metavar="DSN",
        help=f"PostgreSQL server (default: ${PG_DSN_ENV} or {DEFAULT_PG_DSN}); "
        "no password in it (use PGPASSWORD or ~/.pgpass)",
    )
    a = parser.parse_args(argv)
    if a.runs is not None and a.runs < 1:
        parser.error("--runs must be at least 1")
    devices = tuple(a.devices or (QUICK_DEVICES if a.quick else DEFAULT_DEVICES))
    if any(d < 100 for d in devices):
        parser.error("fleets need at least 100 devices")
    return Options(
        devices=devices,
        runs=a.runs or (1 if a.quick else 3),
        quick=a.quick,
        json=a.json,
        workdir=a.workdir,
        keep=a.keep,
        samples=50 if a.quick else 200,
        decisions=a.decisions or (300 if a.quick else 10_000),
        cold=3 if a.quick else 5,
        select_repeats=3 if a.quick else 5,
        baseline_max=a.baseline_max,
        backends=BACKENDS if a.backend == "both" else (a.backend,),
        pg_dsn=a.pg_dsn or os.environ.get(PG_DSN_ENV) or DEFAULT_PG_DSN,
    )


def main(argv: Sequence[str] | None = None) -> int:
    opt = parse_args(argv)
    info = machine()
    env = dict(os.environ)
    env.setdefault("TUFWAVES_KEY_PASSPHRASE", secrets.token_urlsafe(16))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    header = [
        "tufwaves benchmark",
        f"machine: {info['cpu_count']} CPUs (os.cpu_count()), {info['cpu_model'] or '?'}, "
        f"{info['memory_gb'] or '?'} GB RAM",
        f"platform: {info['platform']}, Python {info['python']}",
        f"fleets: {', '.join(f'{d:,}' for d in opt.devices)}; runs: {opt.runs} (median); "
        f"warm decisions over {opt.decisions:,} devices; {opt.cold} cold processes per run",
        "",
    ]
    print("\n".join(header), flush=True)
    if "postgres" in opt.backends:
        try:
            probe = _worker("pg-schema", env, dsn=opt.pg_dsn)
            if not probe.get("error"):
                _worker("pg-drop", env, dsn=opt.pg_dsn, schema=probe["schema"])
        except WorkerError as e:
            probe = {"error": str(e)}
        if probe.get("error"):
            message = f"PostgreSQL at {opt.pg_dsn} is unreachable: {probe['error']}"
            if not opt.quick:
                print(f"error: {message}", file=sys.stderr)
                return 1
            print(f"{message}; --quick skips the PostgreSQL backend\n", flush=True)
            opt = replace(opt, backends=tuple(b for b in opt.backends if b != "postgres"))
            if not opt.backends:
                opt = replace(opt, backends=("sqlite",))
        else:
            print(f"PostgreSQL {probe.get('server_version')} at {opt.pg_dsn}\n", flush=True)
    base = Path(tempfile.mkdtemp(prefix="tufwaves-bench-", dir=opt.workdir))
    started = time.perf_counter()
    fleets: dict[int, Metrics] = {}  # the first backend's (it also runs the baselines)
    per_backend: dict[int, dict[str, Metrics]] = {}
    all_runs: dict[int, dict[str, list[Metrics]]] = {}
    fleet_gen: dict[int, Metrics] = {}
    try:
        for n in opt.devices:
            where = base / f"fleet-{n}"
            where.mkdir()
            csv = where / "fleet.csv"
            _progress(f"{n:,} devices: generating the fleet CSV")
            fleet_gen[n] = _worker("fleet", env, path=csv, devices=n, seed=n)
            all_runs[n] = {b: [] for b in opt.backends}
            for r in range(opt.runs):
                for i, backend in enumerate(opt.backends):
                    all_runs[n][backend].append(
                        run_once(n, r, where, csv, opt, env, backend, baselines=i == 0)
                    )
            per_backend[n] = {b: median_metrics(runs) for b, runs in all_runs[n].items()}
            fleets[n] = per_backend[n][opt.backends[0]]
            for backend in opt.backends:
                print("\n".join(fleet_table(n, per_backend[n][backend], opt.runs)), flush=True)
            if len(opt.backends) > 1:
                print("\n".join(side_by_side(n, per_backend[n])), flush=True)
            if not opt.keep:
                csv.unlink()
    except WorkerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if not opt.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"work directory kept: {base}", file=sys.stderr)
    targets = targets_for(fleets) + backend_targets(per_backend)
    rows = [[t.name, t.measured, t.verdict] for t in targets]
    print("== targets ==")
    print("\n".join(_table(rows, ["target", "measured", "status"])))
    print(f"\ntotal time: {fmt_seconds(time.perf_counter() - started)}")
    if opt.json is not None:
        data = {
            "machine": info,
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opt).items()},
            "fleets": {
                str(n): {
                    "fleet": fleet_gen[n],
                    "median": per_backend[n],
                    "runs": all_runs[n],
                }
                for n in fleets
            },
            "targets": [asdict(t) for t in targets],
        }
        opt.json.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return 0
