"""`tufwaves device` commands: what a device (or its test bench) runs.

``device verify`` decides, from a bundle and the device's identity, whether
the device may install an update now. Exit status 0 means allowed, 1 denied
(the reason code and a sentence are printed), 2 a usage error, 3 a file that
cannot be read or a state directory that cannot be used.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from tufwaves.cli._bundle import add_bundle_command
from tufwaves.cli._common import add_json_flag, emit_json, example_epilog
from tufwaves.device.bundle import LIMITS
from tufwaves.device.profile import MAX_VERSION, is_version_text
from tufwaves.errors import StorageError
from tufwaves.verify import Decision, DeviceIdentity, Verifier

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``device`` group and its sub-commands to ``sub``."""
    parser = sub.add_parser(
        "device",
        help="device-side commands: decide whether a device may install",
        description=(
            "Device-side commands: write one device's bundle (server side) and "
            "verify a bundle for one device."
        ),
        epilog=example_epilog(
            "tufwaves device bundle UUID --repo repo --out device.bundle",
            "tufwaves device verify --trusted-root root.json --bundle device.bundle "
            "--uuid UUID --hardware-id imx8mm --tag production --installed-version 41",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="device_command", required=True)
    _register_verify(commands)
    add_bundle_command(commands)


def _installed_version(text: str) -> int:
    if not is_version_text(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a release version (a decimal integer from 0 to "
            f"{MAX_VERSION}, no leading zeros)"
        )
    return int(text)


def _rfc3339(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an RFC 3339 time such as 2030-01-31T12:00:00Z"
        ) from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a time zone, e.g. a trailing Z")
    return value


def _register_verify(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    p = commands.add_parser(
        "verify",
        help="decide whether this device may install an update from a bundle",
        description=(
            "Verify a bundle (TUF metadata plus this device's membership evidence) "
            "and decide whether the device may install an update now. Exit status: "
            "0 allowed, 1 denied, 2 usage error, 3 I/O error. With --state-dir the "
            "device's trust state (root, last verified versions) is read from and "
            "saved to DIR whenever the metadata verified completely; provision a new "
            "DIR with the trusted root as DIR/root.json."
        ),
        epilog=example_epilog(
            "tufwaves device verify --state-dir /var/lib/ota/trust --bundle bundle.json \\",
            "    --uuid 3f1c2d4e-0000-4000-8000-000000000001 --hardware-id imx8 "
            "--tag main --installed-version 41",
            "tufwaves device verify --trusted-root root.json --bundle bundle.json "
            "--uuid 3f1c2d4e-0000-4000-8000-000000000001 \\",
            "    --hardware-id imx8 --tag main --installed-version 41 "
            "--at 2030-01-01T00:00:00Z --json",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    trust = p.add_mutually_exclusive_group(required=True)
    trust.add_argument(
        "--trusted-root",
        metavar="FILE",
        type=Path,
        help="the device's trusted root.json (state kept for this run only)",
    )
    trust.add_argument(
        "--state-dir",
        metavar="DIR",
        type=Path,
        help="the device's trust state directory (read, then updated)",
    )
    p.add_argument(
        "--bundle", metavar="FILE", type=Path, required=True, help="the bundle to verify"
    )
    p.add_argument("--uuid", required=True, help="the device's UUID")
    p.add_argument("--hardware-id", metavar="HW", required=True, help="the device's hardware id")
    p.add_argument("--tag", metavar="T", required=True, help="the tag the device follows")
    p.add_argument(
        "--installed-version",
        metavar="V",
        type=_installed_version,
        required=True,
        help="release version the device runs now (decimal integer)",
    )
    p.add_argument(
        "--at",
        metavar="RFC3339",
        type=_rfc3339,
        help="reference time for expiry (default: now)",
    )
    add_json_flag(p)
    p.set_defaults(func=_verify)


def _read(path: Path, limit: int, what: str) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(limit + 1)
    except OSError as e:
        raise StorageError(f"cannot read {what} {path}: {e.strerror or e}") from e


def _verify(args: argparse.Namespace) -> int:
    device = DeviceIdentity(args.uuid, args.hardware_id, args.tag, args.installed_version)
    if args.state_dir is not None:
        verifier = Verifier.from_state_dir(args.state_dir)
    else:
        root = _read(args.trusted_root, LIMITS.root_bytes, "trusted root")
        verifier = Verifier.from_trusted_root(root)
    bundle = _read(args.bundle, LIMITS.bundle_bytes, "bundle")
    decision = verifier.decide(bundle, device, args.at)
    if args.json:
        emit_json(decision.to_dict())
    else:
        _print(decision)
    return 0 if decision.allowed else 1


def _print(decision: Decision) -> None:
    out = sys.stdout
    if not decision.allowed or decision.artifact is None:
        out.write(f"denied: {decision.reason.value}: {decision.message}\n")
        return
    a = decision.artifact
    out.write(f"allowed: {decision.reason.value}: {decision.message}\n")
    out.write(f"artifact: {a.name}\n")
    out.write(f"length: {a.length}\n")
    for algorithm, digest in sorted(a.hashes.items()):
        out.write(f"{algorithm}: {digest}\n")
    out.write(f"version: {a.custom.get('version', '')}\n")
    out.write(f"wave: {decision.wave or '-'}\n")
    out.write(f"ripple: {decision.ripple if decision.ripple is not None else '-'}\n")
