"""``tufwaves waves``: create, sign, list and show waves; roll them out."""

from __future__ import annotations

import argparse
from pathlib import Path

from tufwaves.cli._ceremony import add_ceremony_commands
from tufwaves.cli._common import add_json_flag, emit_json, example_epilog
from tufwaves.keys import load_key_ref, load_public_key
from tufwaves.metadata import Policy, expiry, wave_role
from tufwaves.repository import Repository
from tufwaves.waves import (
    WaveSummary,
    init_wave,
    list_waves,
    sign_ceremony,
    wave_summary,
)

STATUSES = ("pending", "active", "cancelled", "complete")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    waves = sub.add_parser("waves", help="create, sign and roll out waves")
    wsub = waves.add_subparsers(dest="waves_command", required=True)

    init = wsub.add_parser(
        "init",
        help="create a wave (offline ceremony)",
        description=(
            "Build the wave role (artifacts with length, sha256 and sha512, "
            "custom hardwareIds/tags/version, rollout keys and policy) and the "
            "new targets that delegates to it; sign with every --key given. "
            "With fewer keys than the targets threshold the wave is pending "
            "until 'waves sign' or 'waves ceremony' adds the rest."
        ),
        epilog=example_epilog(
            "tufwaves waves init spring-fix 42 production --repo repo "
            "--artifact fw-42.img --hardware-id imx8mm --key alice.key --key bob.key"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    init.add_argument("wave", metavar="WAVE")
    init.add_argument("version", metavar="VERSION", help="integer, above every earlier one of TAG")
    init.add_argument("tag", metavar="TAG")
    init.add_argument("--repo", required=True, type=Path)
    init.add_argument("--artifact", action="append", default=[], type=Path, metavar="FILE")
    init.add_argument("--hardware-id", action="append", default=[], metavar="HW")
    init.add_argument(
        "--targets-file",
        type=Path,
        metavar="JSON",
        help="TUF targets JSON of artifacts hosted elsewhere",
    )
    init.add_argument(
        "--rollout-key",
        action="append",
        default=[],
        metavar="PUB",
        help="online key that may sign ripples (default: the repository's)",
    )
    init.add_argument("--rollout-threshold", type=int, default=1, metavar="N")
    init.add_argument(
        "--max-ripple-size",
        type=int,
        default=None,
        metavar="N",
        help="policy: most devices one ripple may name (default: no limit)",
    )
    init.add_argument(
        "--no-online-complete",
        action="store_true",
        help="policy: completing the wave needs an offline ceremony",
    )
    group = init.add_mutually_exclusive_group()
    group.add_argument("--expires-days", type=int, default=None, metavar="N", help="default 365")
    group.add_argument("--expires-at", default=None, metavar="RFC3339")
    init.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="KEY",
        help="offline targets key file or URI that signs now",
    )
    init.add_argument("--dry-run", action="store_true", help="print what would be signed")
    add_json_flag(init)
    init.set_defaults(func=_init)

    sign = wsub.add_parser(
        "sign",
        help="add one offline signature to a pending wave",
        epilog=example_epilog("tufwaves waves sign spring-fix --repo repo --key carol.key"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sign.add_argument("wave", metavar="WAVE")
    sign.add_argument("--repo", required=True, type=Path)
    sign.add_argument("--key", required=True)
    sign.set_defaults(func=_sign)

    cer = wsub.add_parser("ceremony", help="air-gapped signing: export, sign, import")
    add_ceremony_commands(
        cer,
        noun="wave",
        ceremony_id=lambda a: wave_role(a.wave),
        id_arg="wave",
        example_id="waves ceremony",
    )

    lst = wsub.add_parser(
        "list",
        help="list waves",
        epilog=example_epilog("tufwaves waves list --repo repo --status active --json"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lst.add_argument("--repo", required=True, type=Path)
    lst.add_argument("--tag")
    lst.add_argument("--status", choices=STATUSES)
    add_json_flag(lst)
    lst.set_defaults(func=_list)

    show = wsub.add_parser(
        "show",
        help="show a wave: artifacts, signatures, rollout history",
        epilog=example_epilog("tufwaves waves show spring-fix --repo repo"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("wave", metavar="WAVE")
    show.add_argument("--repo", required=True, type=Path)
    add_json_flag(show)
    show.set_defaults(func=_show)


def _init(args: argparse.Namespace) -> int:
    repo = Repository.open(args.repo)
    rollout_keys = [load_public_key(Path(p))[1] for p in args.rollout_key]
    policy = Policy(
        max_ripple_size=args.max_ripple_size,
        online_complete=not args.no_online_complete,
    )
    ceremony = init_wave(
        repo,
        args.wave,
        args.version,
        args.tag,
        artifacts=args.artifact,
        hardware_ids=args.hardware_id,
        targets_file=args.targets_file,
        rollout_keys=rollout_keys,
        rollout_threshold=args.rollout_threshold,
        policy=policy,
        expires=expiry(days=args.expires_days, at=args.expires_at),
        keys=[load_key_ref(k) for k in args.key],
        dry_run=args.dry_run,
    )
    if args.dry_run:
        if args.json:
            emit_json({"dry_run": True, "roles": [r.to_dict() for r in ceremony.roles]})
        else:
            print("dry run: nothing was written. Would sign:\n")
            print(ceremony.summary())
        return 0
    if args.json:
        emit_json(wave_summary(repo, args.wave).to_dict())
    elif ceremony.complete:
        print(f"wave {args.wave} published")
    else:
        print(f"wave {args.wave} is pending:")
        for line in ceremony.status_lines():
            print(f"  {line}")
    return 0


def _sign(args: argparse.Namespace) -> int:
    repo = Repository.open(args.repo)
    ceremony = sign_ceremony(repo, wave_role(args.wave), load_key_ref(args.key))
    if ceremony.complete:
        print(f"wave {args.wave} published")
    else:
        print("\n".join(ceremony.status_lines()))
    return 0


def _list(args: argparse.Namespace) -> int:
    repo = Repository.open(args.repo)
    waves = list_waves(repo, tag=args.tag, status=args.status)
    if args.json:
        emit_json({"waves": [w.to_dict() for w in waves]})
        return 0
    if not waves:
        print("no waves")
        return 0
    print(f"{'WAVE':24} {'TAG':16} {'VERSION':>10} {'STATUS':10} {'RIPPLES':>7}  EXPIRES")
    for w in waves:
        print(
            f"{w.name:24} {w.tag:16} {w.version:>10} {w.status:10} {w.ripples:>7}  "
            f"{w.expires:%Y-%m-%dT%H:%M:%SZ}"
        )
    return 0


def print_summary(repo: Repository, w: WaveSummary) -> None:
    print(f"wave {w.name}: tag {w.tag}, version {w.version}, {w.status}")
    print(f"expires {w.expires:%Y-%m-%dT%H:%M:%SZ}")
    names = ", ".join(repo.key_name(k) for k in w.rollout_keyids)
    print(f"rollout keys: {w.rollout_threshold} of [{names}]")
    print(
        f"policy: max ripple size {w.policy.max_ripple_size or 'unlimited'}; "
        f"online complete {'allowed' if w.policy.online_complete else 'needs an offline ceremony'}"
    )
    for t in w.artifacts:
        print(f"artifact {t.path} ({t.length} bytes, sha256 {t.hashes.get('sha256', '?')})")
    for line in w.signatures:
        print(line)


def _show(args: argparse.Namespace) -> int:
    repo = Repository.open(args.repo)
    w = wave_summary(repo, args.wave)
    if args.json:
        emit_json(w.to_dict())
    else:
        print_summary(repo, w)
    return 0
