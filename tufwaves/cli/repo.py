"""``tufwaves repo``: create a repository, finish its ceremony, refresh, show."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tufwaves.cli._ceremony import add_ceremony_commands, print_ceremony
from tufwaves.cli._common import (
    add_expires_days,
    add_json_flag,
    add_repo,
    emit_json,
    example_epilog,
)
from tufwaves.cli._rotation import register as register_rotation
from tufwaves.errors import InputError
from tufwaves.server.inventory.backend import describe
from tufwaves.server.inventory.dsn import INVENTORY_ENV
from tufwaves.server.inventory_migration import (
    check_new_inventory,
    migrate_inventory,
    use_inventory,
)
from tufwaves.server.keys import ONLINE_PASSPHRASE_ENV, PASSPHRASE_ENV, load_key_ref
from tufwaves.server.metadata import expiry, now
from tufwaves.server.repository import Repository
from tufwaves.server.roots import (
    ONLINE_ROLES,
    create_repository,
    repository_ceremony,
    rotate_root,
)
from tufwaves.server.staging import load_ceremony, pending_ids
from tufwaves.server.waves import sign_ceremony

KEY_HELP = "a private key file or URI (signs now) or a .pub file (signs later)"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    repo = sub.add_parser(
        "repo",
        help="create and maintain a repository",
        description=(
            "Create a repository, finish its first signing ceremony, rotate root, "
            "refresh snapshot and timestamp, and show what is published."
        ),
        epilog=example_epilog(
            "tufwaves repo init repo --root-key root.key --targets-key t1.key",
            "tufwaves repo show --repo repo",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rsub = repo.add_subparsers(dest="repo_command", required=True)

    init = rsub.add_parser(
        "init",
        help="create a repository",
        description=(
            "Create root (offline root keys), targets (offline targets keys), "
            "snapshot and timestamp (online keys) and a default online rollout "
            "key. Online keys are generated into REPO/keys, encrypted with the "
            f"passphrase from {ONLINE_PASSPHRASE_ENV} (else {PASSPHRASE_ENV}) or a "
            "prompt, unless --online-key names existing ones. With fewer signing "
            "keys than a threshold the first root and targets wait in a ceremony ('repo sign', "
            "'repo ceremony ...')."
        ),
        epilog=example_epilog(
            "tufwaves repo init repo --root-key root1.key --targets-key t1.key "
            "--targets-key t2.pub --targets-key t3.pub --targets-threshold 2"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    init.add_argument("repo", type=Path, metavar="REPO", help="the new repository directory")
    init.add_argument("--root-key", action="append", required=True, metavar="KEY", help=KEY_HELP)
    init.add_argument(
        "--root-threshold", type=int, default=1, metavar="N", help="root signatures needed"
    )
    init.add_argument("--targets-key", action="append", required=True, metavar="KEY", help=KEY_HELP)
    init.add_argument(
        "--targets-threshold", type=int, default=1, metavar="N", help="targets signatures needed"
    )
    init.add_argument(
        "--online-key",
        action="append",
        default=[],
        metavar="ROLE=PUB",
        help=f"use an existing key for one of {', '.join(ONLINE_ROLES)} (its .key beside it)",
    )
    add_expires_days(init, "root and targets")
    init.add_argument(
        "--inventory",
        default=os.environ.get(INVENTORY_ENV) or None,
        metavar="DSN",
        help="keep the fleet inventory in PostgreSQL: postgresql://USER@HOST:PORT/DB "
        f"without a password (PGPASSWORD or ~/.pgpass give it); default ${INVENTORY_ENV}, "
        "else the SQLite file REPO/inventory.sqlite",
    )
    add_json_flag(init)
    init.set_defaults(func=_init)

    migrate = rsub.add_parser(
        "migrate-inventory",
        help="move the fleet inventory from SQLite to PostgreSQL",
        description="Copy every device, group, wave, ripple, selection and audit "
        "entry from REPO/inventory.sqlite into an empty PostgreSQL inventory, "
        "check row counts and a digest of every row, then switch the repository "
        "to it. Interrupted, the repository stays on SQLite; run it again.",
        epilog=example_epilog(
            "tufwaves repo migrate-inventory --repo repo --to postgresql://tufwaves@db/fleet"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_repo(migrate)
    migrate.add_argument(
        "--to", required=True, metavar="DSN", help="postgresql://USER@HOST:PORT/DB (no password)"
    )
    add_json_flag(migrate)
    migrate.set_defaults(func=_migrate)

    sign = rsub.add_parser(
        "sign",
        help="add a signature to the pending repository ceremony",
        description=(
            "Sign the pending repository ceremony (first root and targets, or a "
            "root rotation) with KEY; publish it when every threshold is met."
        ),
        epilog=example_epilog("tufwaves repo sign --repo repo --key t2.key"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_repo(sign)
    sign.add_argument("--key", required=True, help="private key file or URI that signs now")
    sign.set_defaults(func=_sign)

    cer = rsub.add_parser(
        "ceremony",
        help="air-gapped signing of the first root/targets",
        description=(
            "Move the pending repository ceremony to air-gapped signers: export it "
            "to a file, sign the file offline, import it back (or discard it)."
        ),
        epilog=example_epilog("tufwaves repo ceremony export ceremony.json --repo repo"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_ceremony_commands(
        cer,
        noun="repository ceremony",
        ceremony_id=lambda a: repository_ceremony(Repository.open(a.repo)),
        id_arg=None,
        example_id="repo ceremony",
    )

    rot = rsub.add_parser(
        "rotate-root",
        help="start root version N+1: new root keys and/or threshold, fresh expiry",
        description=(
            "Build the next root version (other roles keep their keys) and sign it "
            "with every --key given. It is published once a threshold of the new "
            "root keys and a threshold of the current root keys have signed "
            "('tufwaves repo sign', 'tufwaves repo ceremony ...'); devices follow "
            "the rotation one version at a time."
        ),
        epilog=example_epilog(
            "tufwaves repo rotate-root --repo repo --root-key r2.key --root-key r3.pub "
            "--root-threshold 2 --key root.key --key r2.key"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_repo(rot)
    rot.add_argument(
        "--root-key",
        action="append",
        default=[],
        metavar="KEY",
        help="the new root key set (default: keep the current keys); " + KEY_HELP,
    )
    rot.add_argument(
        "--root-threshold",
        type=int,
        default=None,
        metavar="N",
        help="root signatures needed from the new root (default: unchanged)",
    )
    add_expires_days(rot, "the new root")
    rot.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="KEY",
        help="a current or new root key that signs now",
    )
    add_json_flag(rot)
    rot.set_defaults(func=_rotate)
    register_rotation(rsub)

    refresh = rsub.add_parser(
        "refresh",
        help="re-sign snapshot and timestamp with fresh expiry (run from cron)",
        description=(
            "Re-sign snapshot (expires in 7 days) and timestamp (1 day) with the "
            "online keys; run it every hour from cron. Needs only the online keys: "
            f"their passphrase comes from {ONLINE_PASSPHRASE_ENV} (else "
            f"{PASSPHRASE_ENV}), or none if their .pub names a private-key URI."
        ),
        epilog=example_epilog("tufwaves repo refresh --repo repo"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_repo(refresh)
    refresh.set_defaults(func=_refresh)

    show = rsub.add_parser(
        "show",
        help="published versions, expiry of every role, pending ceremonies",
        description=(
            "Show the published root, timestamp, snapshot and role versions, the "
            "expiry of every role, and the signatures every pending ceremony still "
            "waits for."
        ),
        epilog=example_epilog("tufwaves repo show --repo repo --json"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_repo(show)
    add_json_flag(show)
    show.set_defaults(func=_show)


def _init(args: argparse.Namespace) -> int:
    if args.inventory:  # checked, and reachable, before anything is created
        check_new_inventory(args.inventory)
    online: dict[str, Path] = {}
    for item in args.online_key:
        role, sep, path = item.partition("=")
        if not sep or role not in ONLINE_ROLES:
            raise InputError(f"--online-key {item!r}: use ROLE=PUB with ROLE one of {ONLINE_ROLES}")
        online[role] = Path(path)
    repo, ceremony = create_repository(
        args.repo,
        root_keys=[load_key_ref(k) for k in args.root_key],
        root_threshold=args.root_threshold,
        targets_keys=[load_key_ref(k) for k in args.targets_key],
        targets_threshold=args.targets_threshold,
        online_keys=online or None,
        expires=expiry(days=args.expires_days),
    )
    if args.inventory:
        use_inventory(repo, args.inventory)
    published = repo.is_published()
    if args.json:
        emit_json(
            {
                "repo": str(repo.path),
                "published": published,
                "signatures": ceremony.status_lines(),
            }
        )
        return 0
    print(f"created {repo.path}")
    print_ceremony(
        ceremony,
        "root and targets met their thresholds: published",
        "waiting for signatures ('tufwaves repo sign' or 'repo ceremony'):",
    )
    return 0


def _rotate(args: argparse.Namespace) -> int:
    repo = Repository.open(args.repo)
    ceremony = rotate_root(
        repo,
        root_keys=[load_key_ref(k) for k in args.root_key],
        root_threshold=args.root_threshold,
        expires=expiry(days=args.expires_days),
        keys=[load_key_ref(k) for k in args.key],
    )
    if args.json:
        emit_json(
            {
                "ceremony": ceremony.id,
                "published": ceremony.complete,
                "signatures": ceremony.status_lines(),
            }
        )
    else:
        print_ceremony(
            ceremony,
            f"{ceremony.id.replace('.', ' version ')} published",
            f"{ceremony.id} is pending:",
        )
    return 0


def _sign(args: argparse.Namespace) -> int:
    repo = Repository.open(args.repo)
    ceremony = sign_ceremony(repo, repository_ceremony(repo), load_key_ref(args.key))
    print(f"{ceremony.id}: published" if ceremony.complete else "\n".join(ceremony.status_lines()))
    return 0


def _refresh(args: argparse.Namespace) -> int:
    state = Repository.open(args.repo).refresh()
    print(
        f"snapshot {state.snapshot.signed.version} and timestamp "
        f"{state.timestamp.signed.version} published"
    )
    return 0


def _show(args: argparse.Namespace) -> int:
    repo = Repository.open(args.repo)
    pending = {cid: load_ceremony(repo, cid).status_lines() for cid in pending_ids(repo)}
    doc: dict[str, object] = {
        "repo": str(repo.path),
        "inventory": describe(repo.inventory_path, repo.config),
        "pending": pending,
    }
    if repo.is_published():
        state = repo.state()
        doc.update(
            root=state.root_version,
            timestamp=state.timestamp.signed.version,
            snapshot=state.snapshot.signed.version,
            roles={r: state.version_of(r) for r in state.roles()},
        )
        expires = repo.expiries(state)
        delegated = [r for r in expires if r not in ("root", "targets", "snapshot", "timestamp")]
        first = min(delegated, key=lambda r: (expires[r], r), default=None)
        doc.update(
            expires={r: f"{t:%Y-%m-%dT%H:%M:%SZ}" for r, t in expires.items()},
            earliest_delegated_expiry=(
                {"role": first, "expires": f"{expires[first]:%Y-%m-%dT%H:%M:%SZ}"}
                if first
                else None
            ),
            expired=sorted(r for r, t in expires.items() if t <= now()),
        )
    if args.json:
        emit_json(doc)
        return 0
    for key, value in doc.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k}: {v}")
        elif isinstance(value, list):
            print(f"{key}: {', '.join(value) or 'none'}")
        else:
            print(f"{key}: {value}")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    repo = Repository.open(args.repo)
    result = migrate_inventory(
        repo, args.to, progress=None if args.json else lambda line: print(line, file=sys.stderr)
    )
    if args.json:
        emit_json(result.to_dict())
        return 0
    rows = ", ".join(f"{n:,} {table}" for table, n in result.counts.items())
    print(f"copied {rows}")
    print(f"digest {result.digest} matches")
    print(f"{repo.path} now uses the PostgreSQL inventory {result.to}")
    print(f"{repo.inventory_path} is no longer used (kept as it was)")
    return 0
