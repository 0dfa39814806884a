"""``tufwaves demo``: the whole workflow on throwaway keys."""

from __future__ import annotations

import argparse
from pathlib import Path

from tufwaves.cli._common import example_epilog
from tufwaves.demo import run_demo
from tufwaves.errors import InputError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser(
        "demo",
        help="run the end-to-end demo with throwaway keys",
        description=(
            "Generate keys, create a repository with a 2-of-3 offline targets "
            "threshold, create a wave, collect the second signature through the "
            "export/sign/import ceremony, publish, and walk targets -> wave with "
            "python-tuf's own ngclient; then import a generated fleet, roll out "
            "to 10 canaries, 10% of group eu and a 5% fraction, write bundles for "
            "a member and a non-member under DIR/bundles and decide them with the "
            "device verifier, complete the wave and print the history. Leaves the "
            "repository in DIR/repo."
        ),
        epilog=example_epilog("tufwaves demo --dir /tmp/tufwaves-demo"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--dir",
        required=True,
        type=Path,
        metavar="DIR",
        help="folder for keys, repository, bundles",
    )
    demo.add_argument(
        "--devices", type=int, default=1000, metavar="N", help="fleet size (default 1000)"
    )
    demo.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    if args.devices < 100:
        raise InputError("--devices must be at least 100 for the demo's ripples")
    result = run_demo(args.dir, devices=args.devices)
    print(f"\ndone: repository in {result.repo} (metadata/, targets/)")
    return 0
