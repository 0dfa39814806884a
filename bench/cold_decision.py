"""Time and peak memory of one cold decision, for a Merkle ripple of N devices.

``python -m bench.cold_decision 1000000 10000000`` builds, per N, a wave whose
ripple is a Merkle commitment to N devices (no inventory, no repository: the
test simulator signs the metadata), writes one member's bundle, then runs
fresh processes (median of 5) that time ``Verifier.from_trusted_root`` plus the first
``decide`` and reports its peak RSS (``VmHWM``: ``ru_maxrss`` survives
``exec``) and the peak of Python allocations inside the decision
(``tracemalloc``, a second fresh process).
Also measures the largest vectors (``specs/vectors/caps``) the same way.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CHILD = """
import json, sys, time, tracemalloc
from datetime import datetime
from pathlib import Path
from tufwaves.verify import DeviceIdentity, Verifier
root, bundle, uuid, at, trace = sys.argv[1:6]
root_b, bundle_b = Path(root).read_bytes(), Path(bundle).read_bytes()
device = DeviceIdentity(uuid, "hw-a", "main", 1)
when = datetime.fromisoformat(at)
def hwm():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
before = hwm()
if trace == "1":
    tracemalloc.start()
started = time.perf_counter()
decision = Verifier.from_trusted_root(root_b).decide(bundle_b, device, when)
seconds = time.perf_counter() - started
peak = tracemalloc.get_traced_memory()[1] if trace == "1" else None
print(json.dumps({"reason": decision.reason.value, "seconds": seconds,
    "hwm_kb": hwm(), "hwm_before_kb": before, "traced_peak_bytes": peak,
    "bundle_bytes": len(bundle_b)}))
"""


def _measure(root: Path, bundle: Path, uuid: str, at: str, runs: int = 5) -> dict[str, object]:
    """Median time and peak RSS over ``runs`` fresh processes, then one traced run."""
    results = []
    for trace in ["0"] * runs + ["1"]:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(root), str(bundle), uuid, at, trace],
            capture_output=True,
            check=True,
            cwd=ROOT,
        )
        results.append(json.loads(proc.stdout))
    timed = sorted(results[:-1], key=lambda r: float(r["seconds"]))
    out: dict[str, object] = dict(timed[len(timed) // 2])
    out["hwm_kb"] = max(int(r["hwm_kb"]) for r in timed)
    out["traced_peak_bytes"] = results[-1]["traced_peak_bytes"]
    return out


def fleet(n: int, work: Path) -> dict[str, object]:
    """Build and measure the bundle of one member of an N-device Merkle ripple.

    The tree itself is not built (10^7 leaves take minutes): the commitment's
    root is the one implied by a random path of the length that the member's
    index and N imply, which costs the device exactly what a real proof does.
    """
    sys.path.insert(0, str(ROOT))
    import hashlib
    import uuid as uuid_mod

    from tests.simulator import NOW, Simulator
    from tufwaves.device import merkle
    from tufwaves.device.bundle import Bundle
    from tufwaves.device.membership import MerkleEvidence

    index = n // 3
    member = str(uuid_mod.UUID(int=(index * ((2**128 - 1) // n))))
    leaf = uuid_mod.UUID(member).bytes
    for length in range(65):
        path = tuple(hashlib.sha256(b"%d" % i).digest() for i in range(length))
        root = merkle.root_from_path(index, n, leaf, path)
        if root is not None:
            break
    assert root is not None
    sim = Simulator()
    sim.add_wave("w1", 10)
    k = sim.add_ripple("w1", {"encoding": "merkle-sha256", "size": n, "root": root.hex()})
    b = sim.bundle(member)
    b = Bundle(b.device, b.files, (MerkleEvidence(f"ripple.w1.{k}", index, path),))
    (work / "root.json").write_bytes(sim.trusted_root())
    (work / "bundle.json").write_bytes(b.to_bytes())
    result = _measure(work / "root.json", work / "bundle.json", member, NOW.isoformat())
    result.update({"devices": n, "proof_hashes": len(path)})
    return result


def vector(name: str, work: Path) -> dict[str, object]:
    """Measure the first step of vector ``name`` (``specs/vectors/NAME.json``)."""
    import base64

    from tufwaves.cli.vectors import bundle_bytes

    case = json.loads((ROOT / "specs" / "vectors" / f"{name}.json").read_bytes())
    step = case["steps"][0]
    (work / "root.json").write_bytes(base64.b64decode(case["trusted_root"]))
    (work / "bundle.json").write_bytes(bundle_bytes(step["bundle"]))
    at = step["at"].replace("Z", "+00:00")
    result = _measure(work / "root.json", work / "bundle.json", step["device"]["uuid"], at)
    result["vector"] = name
    return result


def main(argv: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for n in argv or ["1000000"]:
            print(json.dumps(fleet(int(float(n)), work)), flush=True)
        for name in ("caps/bundle-bytes-at", "caps/ripple-file-at", "caps/all-counts-at"):
            print(json.dumps(vector(name, work)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
