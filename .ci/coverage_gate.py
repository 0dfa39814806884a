"""The coverage gate of .ci/run: branch coverage per side, from `coverage json`.

Device side (what firmware embeds): at least 98% of branches.
Whole package: at least 90% (statements and branches, as `coverage report`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DEVICE = ("tufwaves/device/", "tufwaves/verify.py", "tufwaves/_files.py", "tufwaves/errors.py")
GATES = {"device side branches": 98.0, "whole package": 90.0}


def main(path: str) -> int:
    files = json.loads(Path(path).read_text())["files"]
    covered = total = 0
    print(f"{'module':46} {'cover':>7} {'branches':>10}")
    for name, data in sorted(files.items()):
        s = data["summary"]
        print(f"{name:46} {s['percent_covered']:6.1f}% {s['covered_branches']:>5}/{s['num_branches']}")
        if name.startswith(DEVICE):
            covered += s["covered_branches"]
            total += s["num_branches"]
    whole = json.loads(Path(path).read_text())["totals"]["percent_covered"]
    found = {
        "device side branches": 100.0 * covered / total if total else 100.0,
        "whole package": whole,
    }
    failed = False
    for gate, minimum in GATES.items():
        ok = found[gate] >= minimum
        failed |= not ok
        print(f"{gate}: {found[gate]:.1f}% (gate {minimum:.0f}%) {'ok' if ok else 'FAILED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
