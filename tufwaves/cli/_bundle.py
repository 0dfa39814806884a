"""``tufwaves device bundle``: write one device's bundle (server side)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tufwaves._files import atomic_write
from tufwaves.cli._common import add_json_flag, add_repo, emit_json, example_epilog, info
from tufwaves.errors import InputError, StorageError
from tufwaves.server.bundler import build_bundle
from tufwaves.server.repository import Repository
from tufwaves.server.rollout import open_inventory


def add_bundle_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bundle = commands.add_parser(
        "bundle",
        help="write everything one device needs to decide, in one file",
        description=(
            "Write the exact bytes of every metadata file on the device's path "
            "(root versions after --since-root, timestamp, snapshot, targets, the "
            "waves of its tag and hardware with their rollout roles and the ripples "
            "that concern it) and its Merkle evidence, as specified in specs/bundle.md."
        ),
        epilog=example_epilog(
            "tufwaves device bundle 3f2a...-... --repo repo --out device.bundle --since-root 1"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bundle.add_argument("uuid", metavar="UUID", help="the device's UUID")
    add_repo(bundle)
    bundle.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="FILE",
        help="the bundle file to write (its folder must exist)",
    )
    bundle.add_argument(
        "--since-root",
        type=int,
        default=1,
        metavar="N",
        help="the root version the device already trusts (default 1)",
    )
    bundle.add_argument(
        "--wave",
        action="append",
        default=None,
        metavar="WAVE",
        help="only these waves (default: every wave matching the device)",
    )
    bundle.add_argument("--force", action="store_true", help="overwrite FILE")
    add_json_flag(bundle)
    bundle.set_defaults(func=_bundle)


def _bundle(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.force:
        raise InputError(f"{args.out} exists; pass --force to overwrite it")
    if not args.out.parent.is_dir():
        raise StorageError(
            f"cannot write {args.out}: folder {args.out.parent} does not exist "
            "(it is never created; create it first)"
        )
    repo = Repository.open(args.repo)
    with open_inventory(repo, read_only=True) as inv:
        bundle = build_bundle(repo, inv, args.uuid, since_root=args.since_root, waves=args.wave)
    data = bundle.to_bytes()
    try:
        atomic_write(args.out, data)
    except OSError as e:
        raise StorageError(f"cannot write {args.out}: {e.strerror or e}") from None
    summary = {
        "device": bundle.device,
        "out": str(args.out),
        "bytes": len(data),
        "files": [f"{f.version}.{f.role}" for f in bundle.files],
        "evidence": [e.role for e in bundle.evidence],
    }
    if args.json:
        emit_json(summary)
    else:
        print(args.out)
        info(f"{len(data):,} bytes: " + ", ".join(summary["files"]))  # type: ignore[arg-type]
    return 0
