"""`tufwaves fleet` commands: the device inventory of a repository."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tufwaves.cli import _common
from tufwaves.device.report import check_public_key
from tufwaves.errors import InputError
from tufwaves.server.inventory import Device, Inventory, canonical_uuid
from tufwaves.server.repository import Repository
from tufwaves.server.rollout import open_inventory

__all__ = ["register"]

_FORMATS = """file formats:
  CSV (.csv), header exactly: uuid,hardware_id,tag,groups,installed_version
    or with a sixth column: uuid,hardware_id,tag,groups,installed_version,public_key
    groups separated by ';' (may be empty); installed_version empty = unknown;
    public_key: the device's ed25519 key as 64 hex digits (empty = keep the stored one)
  JSON lines (.jsonl, .ndjson), one object per line:
    {"uuid": "...", "hardware_id": "...", "tag": "...", "groups": ["..."],
     "installed_version": 42, "public_key": "<64 hex>"}
    (groups, installed_version and public_key may be left out)
  A bad line imports nothing from the file; the error names the line."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fleet = sub.add_parser(
        "fleet",
        help="the device inventory: import, report, set-key, list, show",
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
        "set-key",
        help="set or rotate a device's public key for signed reports",
        description="Set (or rotate) the ed25519 public key that verifies a device's "
        "signed install reports (specs/reports.md). FILE holds a PEM public key "
        "(SubjectPublicKeyInfo), a securesystemslib key JSON, or the raw key as 64 hex "
        "digits. Reports signed with the old key are refused from now on; the report "
        "counter carries on across keys.",
        epilog=_common.example_epilog(
            "tufwaves fleet set-key 123e4567-e89b-12d3-a456-426614174000 "
            "--public-key device.pub --repo ./repo"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("uuid", metavar="UUID", help="the device's UUID")
    key = p.add_mutually_exclusive_group(required=True)
    key.add_argument(
        "--public-key",
        type=Path,
        metavar="FILE",
        help="the device's ed25519 public key (PEM, key JSON or 64 hex digits)",
    )
    key.add_argument(
        "--remove",
        action="store_true",
        help="remove the device's key: its reports are refused until a new one is set",
    )
    _add_repo(p)
    _common.add_json_flag(p)
    p.set_defaults(func=cmd_set_key)

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


def read_public_key(path: Path) -> str:
    """An ed25519 public key file as 64 lowercase hex digits."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None
    text = data.decode("utf-8", "replace").strip()
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as e:
            raise InputError(f"{path} is not a PEM public key ({e})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise InputError(f"{path} is not an ed25519 public key")
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return raw.hex()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
            if obj.get("keytype") != "ed25519":
                raise InputError(f"{path} is not an ed25519 key (keytype {obj.get('keytype')!r})")
            text = str(obj["keyval"]["public"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise InputError(f"{path} is not a securesystemslib key JSON") from None
    return check_public_key(text.lower())


def cmd_set_key(args: argparse.Namespace) -> int:
    key = None if args.remove else read_public_key(args.public_key)
    with _open(args.repo) as inventory, inventory.transaction():
        uuid = canonical_uuid(args.uuid)
        inventory.set_public_key(uuid, key)
        inventory.audit("fleet set-key", [], {"uuid": uuid, "public_key": key})
    if args.json:
        _common.emit_json({"uuid": uuid, "public_key": key})
    elif key is None:
        _common.info(f"{uuid} has no public key now; its reports are refused")
    else:
        _common.info(f"{uuid} signs its reports with ed25519 key {key}")
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
        public_key = inventory.public_key(device.uuid)
        reports = inventory.device_reports(device.uuid, limit=5)
    data: dict[str, Any] = device.to_dict() | {
        "selections": [{"wave": wave, "ripple": ripple} for wave, ripple in selections],
        "public_key": public_key,
        "recent_reports": [r.to_dict() for r in reports],
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
        f"public key:        {public_key or '(none: reports are refused)'}",
        "selected by:       "
        + (
            ", ".join(f"wave {wave} ripple {ripple}" for wave, ripple in selections)
            or "(no ripple)"
        ),
    ]
    lines += [
        f"report:            #{r.counter} wave {r.wave} {r.status}"
        + (f" ({r.code})" if r.code else "")
        + f" at {r.to_dict()['received']}"
        for r in reports
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
