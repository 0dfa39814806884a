"""``tufwaves repo rotate-online-keys`` and ``repo rotate-targets-keys``."""

from __future__ import annotations

import argparse

from tufwaves.cli._ceremony import print_ceremony
from tufwaves.cli._common import (
    add_expires_days,
    add_json_flag,
    add_repo,
    emit_json,
    example_epilog,
)
from tufwaves.server.ceremony import Ceremony
from tufwaves.server.keys import ONLINE_PASSPHRASE_ENV, PASSPHRASE_ENV, load_key_ref
from tufwaves.server.metadata import expiry
from tufwaves.server.repository import Repository
from tufwaves.server.rotation import (
    ROTATABLE_ONLINE_ROLES,
    rotate_online_keys,
    rotate_targets_keys,
)

KEY_HELP = "a private key file or URI (signs now) or a .pub file (signs later)"


def register(rsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the rotation commands to ``tufwaves repo``."""
    online = rsub.add_parser(
        "rotate-online-keys",
        help="replace the online snapshot, timestamp and rollout keys (e.g. after a leak)",
        description=(
            "Generate new online keys into REPO/keys (passphrase from "
            f"{ONLINE_PASSPHRASE_ENV}, else {PASSPHRASE_ENV}) and start the ceremony "
            "that revokes the old ones: root version N+1 naming the new snapshot and "
            "timestamp keys (a threshold of the current and of the new root keys), and "
            "the next version of every wave whose rollout role the old online rollout "
            "key signs, delegating it to the new key (the targets keys sign). When it "
            "is complete ('tufwaves repo sign', 'tufwaves repo ceremony ...') it is "
            "published with every such wave's rollout and ripple roles re-signed by the "
            "new rollout key, and snapshot and timestamp signed by the new keys. "
            "Devices then drop the timestamp and snapshot they trusted and accept the "
            "genuine ones again (specs/rotation.md has the compromise runbook)."
        ),
        epilog=example_epilog(
            "tufwaves repo rotate-online-keys --repo repo --key keys/root.key "
            "--key keys/alice.key --key keys/bob.key",
            "tufwaves repo rotate-online-keys --repo repo --role rollout --key keys/alice.key",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_repo(online)
    online.add_argument(
        "--role",
        action="append",
        default=[],
        choices=ROTATABLE_ONLINE_ROLES,
        help="rotate only this online key (repeatable; default: all three)",
    )
    add_expires_days(online, "the new root")
    online.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="KEY",
        help="a root key or targets key that signs now",
    )
    add_json_flag(online)
    online.set_defaults(func=_rotate_online)

    targets = rsub.add_parser(
        "rotate-targets-keys",
        help="replace the offline targets keys and/or threshold",
        description=(
            "Start the ceremony root.N: root version N+1 naming the new targets keys "
            "(a threshold of the current and of the new root keys), the next targets "
            "delegating every wave to the new keys, and the next version of every wave "
            "role, signed by a threshold of the new targets keys. Targets keys left out "
            "are revoked. All of it is published together."
        ),
        epilog=example_epilog(
            "tufwaves repo rotate-targets-keys --repo repo --targets-key keys/dave.key "
            "--targets-key keys/bob.pub --targets-threshold 1 --key keys/root.key "
            "--key keys/dave.key"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_repo(targets)
    targets.add_argument(
        "--targets-key",
        action="append",
        required=True,
        metavar="KEY",
        help="the new targets key set (repeat for each); " + KEY_HELP,
    )
    targets.add_argument(
        "--targets-threshold",
        type=int,
        default=None,
        metavar="N",
        help="targets signatures needed (default: unchanged, at most the number of keys)",
    )
    add_expires_days(targets, "the new root")
    targets.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="KEY",
        help="a root key or new targets key that signs now",
    )
    add_json_flag(targets)
    targets.set_defaults(func=_rotate_targets)


def _report(args: argparse.Namespace, ceremony: Ceremony) -> int:
    if args.json:
        emit_json(
            {
                "ceremony": ceremony.id,
                "published": ceremony.complete,
                "roles": [r.name for r in ceremony.roles],
                "signatures": ceremony.status_lines(),
            }
        )
    else:
        print_ceremony(
            ceremony,
            f"{ceremony.id} published: the old keys are revoked",
            f"{ceremony.id} is pending:",
        )
    return 0


def _rotate_online(args: argparse.Namespace) -> int:
    repo = Repository.open(args.repo)
    ceremony = rotate_online_keys(
        repo,
        roles=args.role or ROTATABLE_ONLINE_ROLES,
        keys=[load_key_ref(k) for k in args.key],
        expires=expiry(days=args.expires_days),
    )
    return _report(args, ceremony)


def _rotate_targets(args: argparse.Namespace) -> int:
    repo = Repository.open(args.repo)
    ceremony = rotate_targets_keys(
        repo,
        targets_keys=[load_key_ref(k) for k in args.targets_key],
        targets_threshold=args.targets_threshold,
        keys=[load_key_ref(k) for k in args.key],
        expires=expiry(days=args.expires_days),
    )
    return _report(args, ceremony)
