"""Ceremony sub-commands shared by ``waves ceremony`` and ``repo ceremony``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from tufwaves._files import atomic_write
from tufwaves.cli._common import add_repo, info
from tufwaves.errors import InputError, RefusedError
from tufwaves.server.ceremony import Ceremony
from tufwaves.server.keys import load_key_ref
from tufwaves.server.repository import Repository
from tufwaves.server.review import KEYRING_ENV, load_keyring, review, ring_name
from tufwaves.server.staging import load_ceremony
from tufwaves.server.waves import discard_ceremony, import_ceremony


def add_ceremony_commands(
    parent: argparse.ArgumentParser,
    *,
    noun: str,
    ceremony_id: Callable[[argparse.Namespace], str],
    id_arg: str | None,
    example_id: str,
) -> None:
    csub = parent.add_subparsers(dest="ceremony_command", required=True)
    exp = csub.add_parser(
        "export",
        help=f"write the pending {noun} to a file for air-gapped signers",
        description=(
            f"Write the pending {noun} (what must be signed and the signatures so "
            "far) to FILE, for signers on an air-gapped machine ('sign' there, "
            "'import' here)."
        ),
        epilog=f"example:\n  tufwaves {example_id} export {'WAVE ' if id_arg else ''}"
        "ceremony.json --repo repo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if id_arg:
        exp.add_argument(
            id_arg, metavar=id_arg.upper(), help=f"the {id_arg} whose ceremony to export"
        )
    exp.add_argument("file", type=Path, metavar="FILE", help="the ceremony file to write")
    add_repo(exp)
    exp.add_argument("--force", action="store_true", help="overwrite FILE")
    exp.set_defaults(func=lambda a: _export(a, ceremony_id(a)))

    sign = csub.add_parser(
        "sign",
        help="add one signature to a ceremony file (no repository needed)",
        description=(
            "Print exactly what is being signed, computed from the signed metadata "
            "alone: every key each role authorises, by key id and fingerprint, named "
            "only from your --keyring (never from the file), and what changes against "
            "the published version. Ask for confirmation (unless --yes), sign every "
            "role of the file that KEY may sign, and write the file back."
        ),
        epilog=f"example:\n  tufwaves {example_id} sign ceremony.json --key alice.key "
        "--keyring keys/ --keyring root.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sign.add_argument("file", type=Path, metavar="FILE", help="the ceremony file (updated)")
    sign.add_argument("--key", required=True, help="private key file or URI")
    sign.add_argument(
        "--keyring",
        action="append",
        type=Path,
        default=[],
        metavar="PATH",
        help="public keys you trust, to name the keys the ceremony authorises: a .pub file, "
        "a folder of them, or your copy of the current root (repeatable; default: "
        f"${KEYRING_ENV}, paths separated by '{os.pathsep}'); other keys show as UNKNOWN",
    )
    sign.add_argument(
        "--yes",
        action="store_true",
        help="do not ask for confirmation (refused when the ceremony authorises a key "
        "your keyring does not know, unless --allow-unknown-keys)",
    )
    sign.add_argument(
        "--allow-unknown-keys",
        action="store_true",
        help="with --yes: sign even though the ceremony authorises keys unknown to your keyring",
    )
    sign.set_defaults(func=_sign_file)

    drop = csub.add_parser(
        "discard",
        help=f"drop the pending {noun} and its staged files (nothing was published)",
        description=(
            f"Drop the pending {noun} and its staged files. Nothing of it was "
            "published, so nothing changes for devices."
        ),
        epilog=f"example:\n  tufwaves {example_id} discard {'WAVE ' if id_arg else ''}--repo repo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if id_arg:
        drop.add_argument(
            id_arg, metavar=id_arg.upper(), help=f"the {id_arg} whose ceremony to drop"
        )
    add_repo(drop)
    drop.set_defaults(func=lambda a: _discard(a, ceremony_id(a)))

    imp = csub.add_parser(
        "import",
        help="merge the signatures of a ceremony file; publish when complete",
        description=(
            "Check and merge the signatures of a signed ceremony file into the "
            "pending ceremony; publish when every role meets its threshold."
        ),
        epilog=f"example:\n  tufwaves {example_id} import ceremony.json --repo repo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    imp.add_argument("file", type=Path, metavar="FILE", help="the signed ceremony file")
    add_repo(imp)
    imp.set_defaults(func=_import)


def print_ceremony(ceremony: Ceremony, published: str, pending: str) -> None:
    """Say ``published`` if the ceremony published, else ``pending`` and who must sign."""
    if ceremony.complete:
        print(published)
        return
    print(pending)
    done = []
    for status, line in zip(ceremony.status(), ceremony.status_lines(), strict=True):
        if status.complete:
            done.append(line)
        else:
            print(f"  {line}")
    if done:
        print("already met: " + "; ".join(done))


def _export(args: argparse.Namespace, cid: str) -> int:
    repo = Repository.open(args.repo)
    ceremony = load_ceremony(repo, cid)
    if args.file.exists() and not args.force:
        raise InputError(f"{args.file} exists; pass --force to overwrite it")
    atomic_write(args.file, ceremony.to_bytes())
    info(f"wrote {args.file}")
    for line in ceremony.status_lines():
        info(line)
    return 0


def _discard(args: argparse.Namespace, cid: str) -> int:
    discard_ceremony(Repository.open(args.repo), cid)
    print(f"discarded ceremony {cid}; nothing of it was published")
    return 0


def _sign_file(args: argparse.Namespace) -> int:
    ceremony = Ceremony.read(args.file)
    ref = load_key_ref(args.key)
    if ref.signer is None:
        raise InputError(f"--key {args.key} is a public key; pass the .key file or a URI")
    ring = load_keyring(args.keyring, os.environ)
    summary = review(ceremony, ring)
    print(summary.text())
    print(f"\nSigning as {ref.name} ({ref.key.keyid[:16]}...)")
    if args.yes and (summary.unknown or summary.mismatched) and not args.allow_unknown_keys:
        raise RefusedError(
            "not signed: the ceremony authorises keys your keyring does not know (marked "
            "UNKNOWN above); add their .pub files or your root with --keyring, or pass "
            "--allow-unknown-keys if you know whose keys they are"
        )
    if not args.yes:
        if not sys.stdin.isatty():
            raise InputError("no terminal to confirm at; check the summary and pass --yes")
        if input("Sign? [y/N] ").strip().lower() not in {"y", "yes"}:
            raise RefusedError("not signed: you did not confirm")
    roles = ceremony.sign(ref.key.keyid, ref.signer)
    atomic_write(args.file, ceremony.to_bytes())
    print(f"signed {', '.join(roles)}; now import the file with 'import'")
    for line in ceremony.status_lines(lambda keyid: ring_name(keyid, ceremony, ring)):
        print(line)
    return 0


def _import(args: argparse.Namespace) -> int:
    repo = Repository.open(args.repo)
    ceremony, added = import_ceremony(repo, args.file)
    for role, keyid in added:
        print(f"added signature by {ceremony.name_of(keyid)} on {role}")
    print_ceremony(
        ceremony, f"{ceremony.id}: every role met its threshold; published", f"{ceremony.id}:"
    )
    return 0
