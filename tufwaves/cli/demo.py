"""``tufwaves demo``: the whole workflow on throwaway keys, or ``--simulate``."""

from __future__ import annotations

import argparse
import tempfile
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tufwaves.cli._common import emit_json, example_epilog
from tufwaves.demo import run_demo
from tufwaves.demo.simulation import MIN_DEVICES, run_simulation
from tufwaves.errors import InputError, RefusedError

__all__ = ["register"]

DEFAULT_PICTURE = Path("tufwaves-simulation.svg")


def _fill(*paragraphs: str) -> str:
    return "\n\n".join(textwrap.fill(p, break_on_hyphens=False) for p in paragraphs)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser(
        "demo",
        help="run the end-to-end demo, or a simulated planned rollout, with throwaway keys",
        description=_fill(
            "Generate keys, create a repository with a 2-of-3 offline targets "
            "threshold, create a wave, collect the second signature through the "
            "export/sign/import ceremony, publish, and walk targets -> wave with "
            "python-tuf's own ngclient; then import a generated fleet, roll out "
            "to 10 canaries, 10% of group eu and a 5% fraction, write bundles for "
            "a member and a non-member under DIR/bundles and decide them with the "
            "device verifier, complete the wave and print the history. Leaves the "
            "repository in DIR/repo.",
            "With --simulate: run the update server, the rollout controller and a "
            "simulated fleet in-process on a compressed clock (10 simulated minutes "
            "per tick; each device polls every 30 minutes). Two waves are signed with "
            "a plan of three stages (canary 5%, half 50%, everyone 100%; success and "
            "abort gates, soak 1h): wave-a, healthy, goes through every stage to "
            "complete; in wave-b a fifth of the installs fail and the controller "
            "cancels it at its canary's abort gate. Prints the timeline as it happens "
            "(stage starts, gate figures, decisions), writes the picture (SVG) of "
            "allowed, installed and failed devices per wave over time with the stage "
            "starts, and leaves keys, fleet and repository in DIR (default: a new "
            "temporary directory). Exit code 1 if a wave did not end as planned.",
        ),
        epilog=example_epilog(
            "tufwaves demo --dir /tmp/tufwaves-demo",
            "tufwaves demo --simulate --devices 200 --picture rollout.svg",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--dir",
        type=Path,
        metavar="DIR",
        help="folder for keys, repository, bundles (required without --simulate)",
    )
    demo.add_argument(
        "--devices",
        type=int,
        metavar="N",
        help=f"fleet size (default 1000; with --simulate 200, at least {MIN_DEVICES})",
    )
    demo.add_argument(
        "--simulate",
        action="store_true",
        help="simulate two planned waves with the controller on a compressed clock",
    )
    demo.add_argument(
        "--picture",
        type=Path,
        metavar="PATH",
        help=f"with --simulate: where to write the SVG (default ./{DEFAULT_PICTURE})",
    )
    demo.add_argument("--force", action="store_true", help="with --simulate: overwrite the picture")
    demo.add_argument(
        "--json",
        action="store_true",
        help="with --simulate: print the summary and timeline as one JSON object",
    )
    demo.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    if args.simulate:
        return _simulate(args)
    for flag, given in (
        ("--picture", args.picture),
        ("--force", args.force),
        ("--json", args.json),
    ):
        if given:
            raise InputError(f"{flag} goes with --simulate")
    if args.dir is None:
        raise InputError("the demo needs --dir DIR (a new or empty folder)")
    devices = 1000 if args.devices is None else args.devices
    if devices < 100:
        raise InputError("--devices must be at least 100 for the demo's ripples")
    result = run_demo(args.dir, devices=devices)
    print(f"\ndone: repository in {result.repo} (metadata/, targets/)")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    picture: Path = args.picture or DEFAULT_PICTURE
    if picture.exists() and not args.force:
        raise InputError(f"{picture} exists; give --force to overwrite it, or another --picture")
    if not picture.parent.is_dir() or picture.is_dir():
        raise InputError(f"--picture {picture}: not a file in an existing folder")
    directory = args.dir or Path(tempfile.mkdtemp(prefix="tufwaves-simulation-"))
    devices = 200 if args.devices is None else args.devices
    result = run_simulation(
        directory,
        devices=devices,
        picture=picture,
        say=(lambda _line: None) if args.json else print,
    )
    if args.json:
        emit_json(result.to_dict())
    else:
        print()
        for name, wave in result.waves.items():
            print(f"{name}: {_ending(wave)}")
        print(f"picture: {result.picture}")
        print(f"repository: {result.repo} (keys and fleet in {result.directory})")
    if not result.as_planned:
        raise RefusedError(
            "the simulation did not end as planned: "
            + "; ".join(
                f"{name} is {w['status']}, expected {w['expected']}"
                for name, w in result.waves.items()
                if w["status"] != w["expected"]
            )
        )
    return 0


def _ending(wave: Mapping[str, Any]) -> str:
    stages = " -> ".join(str(s) for s in wave["stages_started"])
    return (
        f"{wave['status']} in stage {wave['stage']} ({wave['stage_name']}) after {stages}; "
        f"{wave['allowed']} allowed, {wave['installed']} installed, {wave['failed']} failed"
    )
