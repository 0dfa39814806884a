"""``python -m bench server``: the update server under load, on 127.0.0.1.

Builds a repository with one wave whose ripple selects the whole fleet (a
Merkle ripple), starts ``tufwaves serve --workers 2`` and measures with a
bounded load generator (wrk for a fixed time per measurement when installed,
else a thread pool; one persistent HTTP/1.1 connection per client):

* bundles/s and p50/p99 of ``GET /v1/devices/UUID/bundle`` for random members,
  against the same server sending a static file of the bundle's size
  (``/targets/``, Starlette's FileResponse) and, when installed, nginx
  sending that file;
* 304 polls/s (``If-None-Match`` with the bundle's ETag) and bytes per poll
  (status line and headers; the body is empty);
* reports/s of pre-signed ``installed`` reports from distinct devices, and
  how many acknowledged reports the inventory holds afterwards (zero lost);
* RSS of each worker after the load.

See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HARDWARE, TAG, WAVE, VERSION = "hw1", "prod", "bench", 42


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _setup(work: Path, devices: int, reporters: int) -> tuple[Path, list[str], Any, str]:
    """Repository, fleet (keys for the first ``reporters``), one whole-fleet ripple."""
    from tufwaves.server.keys import generate_key, load_key_ref, write_key_pair
    from tufwaves.server.metadata import expiry
    from tufwaves.server.rollout import Selector, open_inventory, rollout
    from tufwaves.server.roots import create_repository
    from tufwaves.server.waves import init_wave
    from tufwaves.simulator import identities

    keys = work / "keys"
    secret = os.environ["TUFWAVES_KEY_PASSPHRASE"].encode()
    for name in ("root", "release"):
        write_key_pair(name, keys, generate_key("ed25519"), secret)
    repo, _ = create_repository(
        work / "repo",
        root_keys=[load_key_ref(str(keys / "root.key"))],
        root_threshold=1,
        targets_keys=[load_key_ref(str(keys / "release.key"))],
        targets_threshold=1,
    )
    artifact = work / "firmware.bin"
    artifact.write_bytes(random.Random(7).randbytes(64 * 1024))
    init_wave(
        repo,
        WAVE,
        VERSION,
        TAG,
        artifacts=[artifact],
        hardware_ids=[HARDWARE],
        expires=expiry(),
        keys=[load_key_ref(str(keys / "release.key"))],
    )
    fleet = identities(devices, "bench-server", HARDWARE, TAG)
    csv = work / "fleet.csv"
    with csv.open("w", encoding="ascii") as f:
        f.write("uuid,hardware_id,tag,groups,installed_version,public_key\n")
        for i, d in enumerate(fleet):
            key = d.public_key if i < reporters else ""
            f.write(f"{d.uuid},{HARDWARE},{TAG},,41,{key}\n")
    with open_inventory(repo) as inv:
        inv.import_file(csv)
        result = rollout(repo, inv, WAVE, Selector(limit=devices, seed="bench"))
        encoding = inv.ripples(WAVE)[-1].encoding
    assert len(result.uuids) == devices
    return repo.path, [d.uuid for d in fleet], fleet[:reporters], encoding


class _Load:
    """``count`` requests over ``threads`` persistent connections; timings and bytes."""

    def __init__(self, port: int, threads: int) -> None:
        self.port = port
        self.threads = threads

    def run(
        self, count: int, make: Callable[[int], tuple[str, str, bytes | None, dict[str, str]]]
    ) -> dict[str, Any]:
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        sizes: list[int] = []
        head_sizes: list[int] = []
        lock = threading.Lock()
        next_i = iter(range(count))

        def worker() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            mine: list[tuple[float, int, int, int]] = []
            while True:
                with lock:
                    i = next(next_i, None)
                if i is None:
                    break
                method, path, body, headers = make(i)
                started = time.perf_counter()
                conn.request(method, path, body=body, headers=headers)
                r = conn.getresponse()
                data = r.read()
                elapsed = time.perf_counter() - started
                head = len(f"HTTP/1.1 {r.status} {r.reason}\r\n") + sum(
                    len(k) + len(v) + 4 for k, v in r.getheaders()
                )
                mine.append((elapsed, r.status, len(data), head + 2))
            conn.close()
            with lock:
                for elapsed, status, size, head in mine:
                    latencies.append(elapsed)
                    statuses[status] = statuses.get(status, 0) + 1
                    sizes.append(size)
                    head_sizes.append(head)

        started = time.perf_counter()
        pool = [threading.Thread(target=worker) for _ in range(self.threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join(timeout=600)
        seconds = time.perf_counter() - started
        ordered = sorted(latencies)
        return {
            "requests": count,
            "seconds": round(seconds, 3),
            "per_second": round(count / seconds, 1),
            "p50_ms": round(ordered[len(ordered) // 2] * 1000, 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "socket_errors": 0,
            "response_bytes_mean": int((sum(head_sizes) + sum(sizes)) / max(len(sizes), 1)),
        }


_WRK_LUA = r"""
local threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function(args)
  items, sent, statuses = {}, 0, {}
  local field = "([^\t]*)\t"
  for line in io.lines(os.getenv("TUFWAVES_WRK_REQUESTS")) do
    local method, path, hname, hvalue, body = line:match("^" .. field:rep(4) .. "(.*)$")
    local headers = {}
    if hname ~= "" then headers[hname] = hvalue end
    items[#items + 1] = wrk.format(method, path, headers, body ~= "" and body or nil)
  end
  local acks = os.getenv("TUFWAVES_WRK_ACKS")
  acked = acks and io.open(acks, "w") or nil
  if acked then acked:setvbuf("line") end
end
request = function()
  sent = sent + 1
  return items[((sent - 1) % #items) + 1]
end
response = function(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  if acked and status == 201 then
    acked:write((body:match('"device":"([^"]+)"') or "?"), "\n")
  end
end
done = function(summary, latency, requests)
  local parts = {}
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("statuses")) do
      parts[#parts + 1] = string.format('"%s":%d', code, n)
    end
  end
  local e = summary.errors
  io.write(string.format(
    'TUFWAVES-WRK {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p99_us":%d,'
    .. '"errors":%d,"statuses":{%s}}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50),
    latency:percentile(99), e.connect + e.read + e.write + e.timeout, table.concat(parts, ",")))
end
"""


class _Wrk:
    """The same measurements with wrk (one thread, C connections) for ``seconds``
    each: wrk cycles through the ``count`` requests given (wrk cannot stop after
    a number of requests). Statuses are counted in the Lua script (one wrk
    thread, so they are exact); latencies are wrk's. With ``acks``, the device
    of every 201 answer is written there, so acknowledged reports are known
    exactly."""

    def __init__(self, port: int, connections: int, work: Path, seconds: float) -> None:
        self.port = port
        self.connections = connections
        self.work = work
        self.seconds = seconds
        self.script = work / "load.lua"
        self.script.write_text(_WRK_LUA)

    def run(
        self,
        count: int,
        make: Callable[[int], tuple[str, str, bytes | None, dict[str, str]]],
        acks: Path | None = None,
        seconds: float | None = None,
    ) -> dict[str, Any]:
        listing = self.work / "requests.tsv"
        with listing.open("w", encoding="ascii") as f:
            for i in range(count):
                method, path, body, headers = make(i)
                (name, value), *rest = list(headers.items()) or [("", "")]
                text = (body or b"").decode("ascii")
                if rest or any(c in text + path + value for c in "\t\n"):
                    raise ValueError("one header, no tabs or newlines in a wrk request")
                f.write(f"{method}\t{path}\t{name}\t{value}\t{text}\n")
        env = {**os.environ, "TUFWAVES_WRK_REQUESTS": str(listing)}
        if acks is not None:
            env["TUFWAVES_WRK_ACKS"] = str(acks)
        duration = self.seconds if seconds is None else seconds
        done = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{self.connections}",
                f"-d{max(1, round(duration))}s",
                "--latency",
                "-s",
                str(self.script),
                f"http://127.0.0.1:{self.port}",
            ],
            capture_output=True,
            text=True,
            timeout=duration + 120,
            check=True,
            env=env,
        )
        line = next(x for x in done.stdout.splitlines() if x.startswith("TUFWAVES-WRK "))
        r = json.loads(line.removeprefix("TUFWAVES-WRK "))
        seconds_run = r["duration_us"] / 1e6
        return {
            "requests": r["requests"],
            "seconds": round(seconds_run, 3),
            "per_second": round(r["requests"] / seconds_run, 1),
            "p50_ms": round(r["p50_us"] / 1000, 2),
            "p99_ms": round(r["p99_us"] / 1000, 2),
            "statuses": dict(sorted(r["statuses"].items())),
            "socket_errors": r["errors"],
            "response_bytes_mean": int(r["bytes"] / max(r["requests"], 1)),
        }


def _workers(pid: int) -> list[int]:
    found = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(int(child))
        except FileNotFoundError:
            continue
    return found


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _serve(repo: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from tufwaves.cli import run; run()",
            "serve",
            "--repo",
            str(repo),
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    if not _listening(proc, port, 60):
        raise RuntimeError("tufwaves serve did not listen")
    return proc


def _listening(proc: subprocess.Popen[bytes], port: int, seconds: float) -> bool:
    """Whether ``proc`` listens on ``port`` within ``seconds``; killed if not."""
    for _ in range(int(seconds / 0.05)):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            return True
        except ConnectionRefusedError:
            time.sleep(0.05)
    proc.kill()
    return False


def _nginx(root: Path, port: int, work: Path) -> subprocess.Popen[bytes] | None:
    """nginx (Debian package) serving ``root`` on ``port``, when installed; else None."""
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if binary is None:
        return None
    conf = work / "nginx.conf"
    conf.write_text(
        f"""daemon off; worker_processes 2; pid {work / "nginx.pid"};
error_log {work / "nginx-error.log"};
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {work}; proxy_temp_path {work}; fastcgi_temp_path {work};
  uwsgi_temp_path {work}; scgi_temp_path {work};
  server {{ listen 127.0.0.1:{port}; root {root}; keepalive_requests 1000000; }}
}}
"""
    )
    proc = subprocess.Popen(
        [binary, "-c", str(conf), "-p", str(work)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return proc if _listening(proc, port, 10) else None


def measure(
    devices: int,
    requests: int,
    reports: int,
    threads: int,
    work: Path,
    client: str = "auto",
    seconds: float = 10.0,
) -> dict[str, Any]:
    from tufwaves.device.report import sign_report
    from tufwaves.server.repository import Repository
    from tufwaves.server.rollout import open_inventory

    t0 = time.perf_counter()
    repo_path, uuids, reporters, encoding = _setup(work, devices, reports)
    setup_seconds = time.perf_counter() - t0
    rng = random.Random(1)
    port = _free_port()
    proc = _serve(repo_path, port, 2)
    out: dict[str, Any] = {
        "devices": devices,
        "ripple_encoding": encoding,
        "setup_seconds": round(setup_seconds, 1),
        "threads": threads,
        "workers": 2,
    }
    use_wrk = client == "wrk" or (client == "auto" and shutil.which("wrk") is not None)
    out["client"] = "wrk" if use_wrk else "python"
    try:
        load: _Load | _Wrk = _Wrk(port, threads, work, seconds) if use_wrk else _Load(port, threads)
        if use_wrk:
            out["seconds_per_measurement"] = seconds
        sample = [rng.choice(uuids) for _ in range(requests)]
        warm = ("GET", f"/v1/devices/{sample[0]}/bundle", None, {})
        if isinstance(load, _Wrk):
            load.run(1, lambda i: warm, seconds=1)
        else:
            load.run(min(200, requests), lambda i: warm)
        out["bundle"] = load.run(
            requests, lambda i: ("GET", f"/v1/devices/{sample[i]}/bundle", None, {})
        )
        probe = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        probe.request("GET", f"/v1/devices/{sample[0]}/bundle")
        size = len(probe.getresponse().read())
        probe.close()
        out["bundle_bytes"] = size
        repo = Repository.open(repo_path)
        static = repo.targets_dir / "bench-static.bin"
        static.write_bytes(os.urandom(size))
        out["static_file"] = load.run(
            requests, lambda i: ("GET", "/targets/bench-static.bin", None, {})
        )
        nginx_port = _free_port()
        nginx = _nginx(repo.targets_dir, nginx_port, work)
        if nginx is not None:
            try:
                other = (
                    _Wrk(nginx_port, threads, work, seconds)
                    if use_wrk
                    else _Load(nginx_port, threads)
                )
                out["nginx_static_file"] = other.run(
                    requests, lambda i: ("GET", "/bench-static.bin", None, {})
                )
            finally:
                os.killpg(nginx.pid, signal.SIGTERM)
                nginx.wait(timeout=60)
        etags: dict[str, str] = {}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for uuid in sample[:100]:
            conn.request("GET", f"/v1/devices/{uuid}/bundle")
            r = conn.getresponse()
            r.read()
            etags[uuid] = r.getheader("ETag") or ""
        conn.close()
        polled = list(etags)
        out["poll_304"] = load.run(
            requests,
            lambda i: (
                "GET",
                f"/v1/devices/{polled[i % len(polled)]}/bundle",
                None,
                {"If-None-Match": etags[polled[i % len(polled)]]},
            ),
        )
        counter = int(time.time() * 1000)
        bodies = [
            (
                d.uuid,
                sign_report(
                    d.signer(),
                    device=d.uuid,
                    wave=WAVE,
                    version=VERSION,
                    status="installed",
                    installed_version=VERSION,
                    counter=counter,
                ).to_bytes(),
            )
            for d in reporters
        ]
        json_type = {"Content-Type": "application/json"}
        acks = work / "acknowledged.txt"
        acks.write_text("")

        def report(i: int) -> tuple[str, str, bytes, dict[str, str]]:
            return ("POST", f"/v1/devices/{bodies[i][0]}/reports", bodies[i][1], json_type)

        if isinstance(load, _Wrk):
            out["reports"] = load.run(len(bodies), report, acks=acks)
        else:
            out["reports"] = load.run(len(bodies), report)
        out["rss_mb_per_worker"] = [_rss_mb(pid) for pid in _workers(proc.pid)]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    with open_inventory(Repository.open(repo_path), read_only=True) as inv:
        stored = {uuid for uuid, _ in bodies if inv.device_reports(uuid)}
        twice = sum(1 for uuid, _ in bodies if len(inv.device_reports(uuid)) > 1)
    acked = out["reports"]["statuses"].get("201", 0)
    out["reports"]["acknowledged"] = acked
    out["reports"]["stored"] = len(stored)
    out["reports"]["stored_twice"] = twice
    if use_wrk:
        # Exactly the devices whose report was acknowledged (from the 201 bodies).
        out["reports"]["lost"] = len(set(acks.read_text().split()) - stored)
    else:
        out["reports"]["lost"] = acked - len(stored)
    return out


def _table(r: dict[str, Any]) -> str:
    rows = [
        ("bundle", r["bundle"]),
        ("static file, same size", r["static_file"]),
        *([("nginx, same file", r["nginx_static_file"])] if "nginx_static_file" in r else []),
        ("304 poll", r["poll_304"]),
        ("signed report", r["reports"]),
    ]
    lines = [
        f"fleet {r['devices']:,} devices, one {r['ripple_encoding']} ripple of all of them; "
        f"2 workers, {r['threads']} keep-alive connections",
        f"client: {r['client']}; bundle body {r['bundle_bytes']:,} B",
        "| request | per second | p50 ms | p99 ms | response bytes | statuses |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in rows:
        lines.append(
            f"| {name} | {m['per_second']:,} | {m['p50_ms']} | {m['p99_ms']} | "
            f"{m['response_bytes_mean']:,} | "
            f"{m['statuses']} |"
        )
    rep = r["reports"]
    lines.append(
        f"reports: {rep['acknowledged']:,} acknowledged, {rep['stored']:,} stored, "
        f"{rep['stored_twice']} stored twice, {rep['lost']} lost; "
        f"RSS per worker after the load: {r['rss_mb_per_worker']} MB"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench server", description=__doc__.split("\n")[0])
    p.add_argument("--devices", type=float, default=1e5, help="fleet size (default 10^5)")
    p.add_argument("--requests", type=int, default=3000, help="requests per measurement")
    p.add_argument("--reports", type=int, default=2000, help="distinct reporting devices")
    p.add_argument("--threads", type=int, default=16, help="client threads (default 16)")
    p.add_argument(
        "--client",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="load generator: wrk (Debian package) when installed, else Python threads",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=10.0,
        help="with wrk: seconds per measurement (wrk cycles through the requests)",
    )
    p.add_argument("--json", type=Path, help="write every figure as JSON")
    p.add_argument("--workdir", type=Path, help="work here (default: a temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args(argv)
    devices = int(args.devices)
    if not 1 <= args.reports <= devices or args.requests < 1 or not 1 <= args.threads <= 256:
        p.error("need 1 <= --reports <= --devices, --requests >= 1, 1 <= --threads <= 256")
    os.environ.setdefault("TUFWAVES_KEY_PASSPHRASE", secrets.token_hex(16))
    work = Path(tempfile.mkdtemp(prefix="tufwaves-bench-server-", dir=args.workdir))
    try:
        result = measure(
            devices, args.requests, args.reports, args.threads, work, args.client, args.seconds
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
    }
    print(_table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return 1 if result["reports"]["lost"] else 0
