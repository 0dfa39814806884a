"""`tufwaves fleet` commands: the device inventory of a repository."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from tufwaves.cli import _common
from tufwaves.errors import InputError
from tufwaves.server.inventory import Device, Inventory
from tufwaves.server.repository import Repository
from tufwaves.server.rollout import open_inventory

__all__ = ["register"]

_FORMATS = """file formats:
  CSV (.csv), header exactly: uuid,hardware_id,tag,groups,installed_version
    groups separated by ';' (may be empty); installed_version empty = unknown
  JSON lines (.jsonl, .ndjson), one object per line:
    {"uuid": "...", "hardware_id": "...", "tag": "...", "groups": ["..."],
     "installed_version": 42}   (groups and installed_version may be left out)
  A bad line imports nothing from the file; the error names the line."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fleet = sub.add_parser(
        "fleet",
        help="the device inventory: import, report, list, show",
        description="The fleet inventory of a repository (REPO/inventory.sqlite).",
        epilog=_common.example_epilog(
            "tufwaves fleet import devices.csv --repo ./repo",
            "tufwaves fleet list --group lab --repo ./repo",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = fleet.add_subparsers(dest="fleet_command", required=True)

    p = commands.add_parser(
        "import",
        help="add or update devices from a CSV or JSON-lines file",
        description="Add or update devices (idempotent; a device's groups are "
        "replaced by the file's). All or nothing: one bad line imports nothing.",
        epilog=_FORMATS
        + "\n\n"
        + _common.example_epilog("tufwaves fleet import devices.csv --repo ./repo"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", type=Path, metavar="FILE", help="a .csv or .jsonl device file")
    _add_repo(p)
    _common.add_json_flag(p)
    p.set_defaults(func=cmd_import)

    p = commands.add_parser(
        "report",
        help="record the version a device reports it runs",
        description="Record that a device runs a version (what an update server "
        "calls when a device reports back); sets its last-seen time to now.",
        epilog=_common.example_epilog(
            "tufwaves fleet report 123e4567-e89b-12d3-a456-426614174000 "
            "--installed-version 42 --repo ./repo"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("uuid", metavar="UUID", help="the device's UUID")
    p.add_argument(
        "--installed-version",
        required=True,
        type=_version,
        metavar="V",
        help="the version the device runs (a non-negative integer)",
    )
    _add_repo(p)
    _common.add_json_flag(p)
    p.set_defaults(func=cmd_report)

    p = commands.add_parser(
        "list",
        help="list devices in UUID order",
        description="List devices in UUID order, optionally one group or tag.",
        epilog=_common.example_epilog(
            "tufwaves fleet list --group lab --tag main --limit 20 --repo ./repo"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--group", metavar="G", help="only devices in this group")
    p.add_argument("--tag", metavar="T", help="only devices following this tag")
    p.add_argument("--limit", type=_count, metavar="N", help="at most N devices")
    _add_repo(p)
    _common.add_json_flag(p)
    p.set_defaults(func=cmd_list)

    p = commands.add_parser(
        "show",
        help="one device: groups, version, last seen, ripples that selected it",
        description="Show one device and every ripple of every wave that selected it.",
        epilog=_common.example_epilog(
            "tufwaves fleet show 123e4567-e89b-12d3-a456-426614174000 --repo ./repo"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("uuid", metavar="UUID", help="the device's UUID")
    _add_repo(p)
    _common.add_json_flag(p)
    p.set_defaults(func=cmd_show)


def _add_repo(parser: argparse.ArgumentParser) -> None:
    _common.add_repo(parser, "the repository directory (its inventory is REPO/inventory.sqlite)")


def _version(text: str) -> int:
    if not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a version (a non-negative integer without leading zeros)"
        )
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a non-negative integer")
    return int(text)


def _open(path: Path, *, read_only: bool = False) -> Inventory:
    """The inventory of the repository ``path`` (SQLite or the PostgreSQL it names);
    refuses what is not a repository."""
    return open_inventory(Repository.open(path), read_only=read_only)


def _time(device: Device) -> str:
    last_seen = device.to_dict()["last_seen"]
    return str(last_seen) if last_seen else "never"


def cmd_import(args: argparse.Namespace) -> int:
    path: Path = args.file
    if not path.is_file():
        raise InputError(f"{path} is not a file; give a .csv or .jsonl device file")
    started = time.monotonic()
    with (
        _open(args.repo) as inventory,
        _common.progress(f"importing {path}") as bar,
        inventory.transaction(),
    ):
        result = inventory.import_file(path, progress=bar.update)
        inventory.audit("fleet import", [], result.to_dict())
    seconds = time.monotonic() - started
    if args.json:
        _common.emit_json(result.to_dict() | {"seconds": round(seconds, 3)})
    else:
        _common.info(
            f"imported {_common.plural(result.rows, 'device')} from {path} "
            f"({result.added:,} new, {result.updated:,} updated, "
            f"{result.unchanged:,} unchanged) in {seconds:.1f} s"
        )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    with _open(args.repo) as inventory:
        device = inventory.report(args.uuid, args.installed_version)
    if args.json:
        _common.emit_json(device.to_dict())
    else:
        _common.info(
            f"{device.uuid} runs version {device.installed_version} (seen {_time(device)})"
        )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    out = sys.stdout
    with _open(args.repo, read_only=True) as inventory:
        devices = inventory.list_devices(group=args.group, tag=args.tag, limit=args.limit)
        if args.json:
            # Streamed: a fleet can be far larger than memory wants to hold.
            out.write('{\n  "devices": [')
            for n, device in enumerate(devices):
                out.write(("," if n else "") + "\n    " + json.dumps(device.to_dict()))
            out.write("\n  ]\n}\n")
            return 0
        count = 0
        for device in devices:
            version = "?" if device.installed_version is None else device.installed_version
            groups = ";".join(sorted(device.groups)) or "-"
            out.write(
                f"{device.uuid}  {device.hardware_id}  {device.tag}  v{version}  "
                f"{_time(device)}  {groups}\n"
            )
            count += 1
        empty = count == 0 and next(iter(inventory.list_devices(limit=1)), None) is None
    if empty:
        _common.info("the inventory holds no device; import some with 'tufwaves fleet import'")
    elif count == 0:
        given = [f"--{k} {v}" for k, v in (("group", args.group), ("tag", args.tag)) if v]
        _common.info(f"no device matches {' '.join(given) or 'the filter'}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with _open(args.repo, read_only=True) as inventory:
        device = inventory.get(args.uuid)
        if device is None:
            raise InputError(
                f"device {args.uuid} is not in the inventory of {args.repo}; "
                "import it with 'tufwaves fleet import FILE --repo REPO'"
            )
        selections = inventory.device_selections(device.uuid)
    data: dict[str, Any] = device.to_dict() | {
        "selections": [{"wave": wave, "ripple": ripple} for wave, ripple in selections]
    }
    if args.json:
        _common.emit_json(data)
        return 0
    version = "unknown" if device.installed_version is None else device.installed_version
    lines = [
        f"uuid:              {device.uuid}",
        f"hardware id:       {device.hardware_id}",
        f"tag:               {device.tag}",
        f"groups:            {', '.join(sorted(device.groups)) or '(none)'}",
        f"installed version: {version}",
        f"last seen:         {_time(device)}",
        "selected by:       "
        + (
            ", ".join(f"wave {wave} ripple {ripple}" for wave, ripple in selections)
            or "(no ripple)"
        ),
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
