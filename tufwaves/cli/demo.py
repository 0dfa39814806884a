"""``tufwaves demo``: the whole workflow on throwaway keys."""

from __future__ import annotations

import argparse
from pathlib import Path

from tufwaves.cli._common import example_epilog
from tufwaves.demo import run_demo


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser(
        "demo",
        help="run the end-to-end demo with throwaway keys",
        description=(
            "Generate keys, create a repository with a 2-of-3 offline targets "
            "threshold, create a wave, collect the second signature through the "
            "export/sign/import ceremony, publish, and walk targets -> wave with "
            "python-tuf's own ngclient. Leaves the repository in DIR/repo."
        ),
        epilog=example_epilog("tufwaves demo --dir /tmp/tufwaves-demo"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--dir", required=True, type=Path, metavar="DIR")
    demo.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    result = run_demo(args.dir)
    print(f"\ndone: repository in {result.repo} (metadata/, targets/)")
    return 0
