"""``tufwaves simulate``: play a fleet of simulated devices against a running server."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from tufwaves.cli._common import example_epilog, info, positive_seconds
from tufwaves.errors import InputError
from tufwaves.simulator import identities, result_json, simulate, write_fleet

__all__ = ["register"]


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a probability") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 1")
    return value


def _version(text: str) -> int:
    if not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a version")
    return int(text)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "simulate",
        help="play N simulated devices against a running tufwaves serve (load test)",
        description=textwrap.fill(
            break_on_hyphens=False,
            text="Play N simulated devices against a tufwaves server on loopback. Each "
            "device keeps its own trust state, fetches its bundle, decides with the real "
            "verifier, downloads its artifact and checks length and hashes, installs it "
            "(or fails with probability --failure-rate) and sends signed reports. Device "
            "UUIDs and ed25519 keys derive from --seed: first write the fleet file with "
            "--write-fleet and import it (it carries the public keys), roll out, then "
            "simulate with the same --seed. The keys are for load tests only.",
        ),
        epilog=example_epilog(
            "tufwaves simulate --devices 1000 --write-fleet sim.csv",
            "tufwaves fleet import sim.csv --repo repo",
            "tufwaves simulate --url http://127.0.0.1:8080 --devices 1000 --concurrency 32 "
            "--failure-rate 0.02 --json sim.json",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--url", metavar="URL", help="the server, on loopback (e.g. http://127.0.0.1:8080)"
    )
    p.add_argument(
        "--devices", type=_positive_int, required=True, metavar="N", help="how many devices"
    )
    p.add_argument(
        "--seed",
        default="tufwaves-simulate",
        metavar="S",
        help="derives the devices' UUIDs and keys (default tufwaves-simulate)",
    )
    p.add_argument(
        "--write-fleet",
        type=Path,
        metavar="FILE",
        help="write the fleet CSV (with public keys) of these devices and exit",
    )
    p.add_argument(
        "--hardware-id", default="hw1", metavar="HW", help="the devices' hardware id (hw1)"
    )
    p.add_argument("--tag", default="prod", metavar="T", help="the devices' tag (prod)")
    p.add_argument(
        "--installed-version",
        type=_version,
        default=0,
        metavar="V",
        help="the version every device starts with (0)",
    )
    p.add_argument(
        "--concurrency",
        type=_positive_int,
        default=16,
        metavar="C",
        help="devices working at the same time (threads, default 16)",
    )
    p.add_argument(
        "--failure-rate",
        type=_rate,
        default=0.0,
        metavar="P",
        help="probability that an install fails after download (0..1, default 0)",
    )
    p.add_argument(
        "--duration",
        type=positive_seconds,
        metavar="S",
        help="keep polling for S seconds (default: one round per device)",
    )
    p.add_argument(
        "--poll-interval",
        type=positive_seconds,
        default=1.0,
        metavar="S",
        help="seconds between polling rounds with --duration (default 1)",
    )
    p.add_argument(
        "--root",
        type=Path,
        metavar="FILE",
        help="the root.json devices trust (default: the server's 1.root.json)",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the summary as JSON")
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    devices = identities(args.devices, args.seed, args.hardware_id, args.tag)
    if args.write_fleet is not None:
        write_fleet(args.write_fleet, devices, args.installed_version)
        info(
            f"wrote {len(devices):,} devices with their public keys to {args.write_fleet}; "
            "import it with 'tufwaves fleet import'"
        )
        return 0
    if args.url is None:
        raise InputError("give --url (the server) or --write-fleet FILE")
    root = None
    if args.root is not None:
        try:
            root = args.root.read_bytes()
        except OSError as e:
            raise InputError(f"cannot read {args.root}: {e.strerror or e}") from None
    result = simulate(
        args.url,
        devices,
        concurrency=args.concurrency,
        failure_rate=args.failure_rate,
        duration=args.duration,
        poll_interval=args.poll_interval,
        installed_version=args.installed_version,
        root=root,
    )
    if args.json is not None:
        args.json.write_bytes(result_json(result))
    sys.stdout.write(result.summary() + "\n")
    return 0
