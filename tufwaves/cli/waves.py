"""``tufwaves waves``: create, sign, list and show waves; roll them out."""

from __future__ import annotations

import argparse
import re
import sys
from decimal import Decimal
from pathlib import Path

from tufwaves.cli._audit import add_audit_command
from tufwaves.cli._ceremony import add_ceremony_commands, print_ceremony
from tufwaves.cli._common import (
    add_expires_days,
    add_json_flag,
    add_repo,
    emit_json,
    example_epilog,
    info,
    plural,
)
from tufwaves.device.membership import parse_uuid_list
from tufwaves.errors import InputError
from tufwaves.server.controller import Decision, advance
from tufwaves.server.gates import GateEvaluation
from tufwaves.server.inventory import RippleRecord
from tufwaves.server.keys import load_key_ref, load_public_key
from tufwaves.server.metadata import Policy, expiry, parse_version
from tufwaves.server.plan import load_plan_file
from tufwaves.server.repository import Repository
from tufwaves.server.review import Keyring, review
from tufwaves.server.rollout import (
    RolloutResult,
    Selector,
    cancel,
    complete,
    has_inventory,
    open_inventory,
    pause,
    resume,
    ripple_members,
    rollout,
    sign_stage,
    wave_status,
)
from tufwaves.server.waves import (
    WaveSummary,
    ceremony_for_wave,
    fold_into_production,
    init_wave,
    list_waves,
    sign_ceremony,
    wave_summary,
)

STATUSES = ("pending", "active", "paused", "cancelled", "complete")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    waves = sub.add_parser(
        "waves",
        help="create, sign and roll out waves",
        description=(
            "A wave is one release (artifacts, tag, version) signed offline; "
            "ripples signed by its online rollout keys let devices install it."
        ),
        epilog=example_epilog(
            "tufwaves waves init spring-fix 42 production --repo repo --artifact fw.img "
            "--hardware-id imx8mm --key alice.key",
            "tufwaves waves rollout spring-fix --repo repo --limit 10 --print-uuids",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
            "--artifact fw-42.img --hardware-id imx8mm --key alice.key --key bob.key",
            "tufwaves waves init spring-fix 42 production --repo repo "
            "--artifact fw-42.img --hardware-id imx8mm --plan plan.json --key alice.key",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    init.add_argument("wave", metavar="WAVE", help="the new wave's name")
    init.add_argument("version", metavar="VERSION", help="integer, above every earlier one of TAG")
    init.add_argument("tag", metavar="TAG", help="the tag (release channel) the wave is for")
    add_repo(init)
    init.add_argument(
        "--artifact",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="an artifact to publish (repeat for several)",
    )
    init.add_argument(
        "--hardware-id",
        action="append",
        default=[],
        metavar="HW",
        help="a hardware id the wave is for (repeat for several)",
    )
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
    init.add_argument(
        "--rollout-threshold",
        type=int,
        default=1,
        metavar="N",
        help="rollout signatures every ripple needs (default 1)",
    )
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
    init.add_argument(
        "--max-fraction",
        metavar="P",
        default=None,
        help="policy: largest fraction ripple, e.g. 0.05 or 5%% (default 100%%, "
        "or 0 = no fraction ripples with --no-online-complete; below 100%% then)",
    )
    init.add_argument(
        "--plan",
        type=Path,
        metavar="PLAN.json",
        default=None,
        help="policy: a signed rollout plan (stages with sizes, not_before, soak, gates, "
        "timeout; specs/rollout.md 'Plans'); eligible is counted from the inventory "
        "unless PLAN.json gives it",
    )
    group = init.add_mutually_exclusive_group()
    add_expires_days(group, "the wave")
    group.add_argument(
        "--expires-at", default=None, metavar="RFC3339", help="the wave expires at this time"
    )
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
        description=(
            "Sign the pending wave (its role and the new targets) with KEY; "
            "publish it when the targets threshold is met."
        ),
        epilog=example_epilog("tufwaves waves sign spring-fix --repo repo --key carol.key"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sign.add_argument("wave", metavar="WAVE", help="the pending wave")
    add_repo(sign)
    sign.add_argument("--key", required=True, help="offline targets key file or URI")
    sign.set_defaults(func=_sign)

    cer = wsub.add_parser(
        "ceremony",
        help="air-gapped signing: export, sign, import, discard",
        description=(
            "Move a pending wave's ceremony to air-gapped signers: export it to a "
            "file, sign the file offline, import it back (or discard it)."
        ),
        epilog=example_epilog(
            "tufwaves waves ceremony export spring-fix ceremony.json --repo repo",
            "tufwaves waves ceremony sign ceremony.json --key carol.key",
            "tufwaves waves ceremony import ceremony.json --repo repo",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_ceremony_commands(
        cer,
        noun="wave",
        ceremony_id=lambda a: ceremony_for_wave(Repository.open(a.repo), a.wave),
        id_arg="wave",
        example_id="waves ceremony",
    )

    lst = wsub.add_parser(
        "list",
        help="list waves",
        description="List the waves of the repository: tag, version, status, ripples, expiry.",
        epilog=example_epilog("tufwaves waves list --repo repo --status active --json"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_repo(lst)
    lst.add_argument("--tag", metavar="T", help="only waves of this tag")
    lst.add_argument("--status", choices=STATUSES, help="only waves in this state")
    add_json_flag(lst)
    lst.set_defaults(func=_list)

    show = wsub.add_parser(
        "show",
        help="show a wave: artifacts, signatures, rollout history",
        description=(
            "Show a wave: policy, artifacts, signatures and ripple history; with "
            "--members --ripple K, the UUIDs ripple K names."
        ),
        epilog=example_epilog("tufwaves waves show spring-fix --repo repo"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("wave", metavar="WAVE", help="the wave")
    add_repo(show)
    show.add_argument(
        "--members",
        action="store_true",
        help="print the UUIDs of --ripple K (recomputed for fraction ripples); "
        "--ripple without --members is refused",
    )
    show.add_argument(
        "--ripple", type=int, metavar="K", help="the ripple whose members --members prints"
    )
    add_json_flag(show)
    show.set_defaults(func=_show)

    roll = wsub.add_parser(
        "rollout",
        help="sign a ripple: let more devices install the wave",
        description=(
            "Choose devices and publish ripple K of the wave, signed by its rollout "
            "keys. Candidates match the tag and a hardware id of the wave, do not "
            "run its version or newer, and no earlier ripple of the wave selected "
            "them. --group restricts to a group; --limit N or N% picks at random "
            "(N% of the eligible candidates); --uuids alone requires every listed "
            "device to be eligible; --uuids with --limit picks within the list. A "
            "whole-group rollout signs the group's eligible members now; run it "
            "again to add devices that joined since. --fraction P signs a "
            "deterministic fraction of every device of the tag and hardware. On a "
            "wave with a signed plan the ripple belongs to the current stage and "
            "is capped to what is left of its cap, in its group; --stage N alone "
            "signs the ripple that brings the wave to stage N's cap (the current "
            "or the next stage, once its not_before and soak have passed)."
        ),
        epilog=example_epilog(
            "tufwaves waves rollout spring-fix --repo repo --limit 10 --print-uuids",
            "tufwaves waves rollout spring-fix --repo repo --group eu --limit 10% --seed s1 "
            "--dry-run",
            "tufwaves waves rollout spring-fix --repo repo --uuids @canaries.txt",
            "tufwaves waves rollout spring-fix --repo repo --stage 2",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    roll.add_argument("wave", metavar="WAVE", help="the active wave")
    add_repo(roll)
    roll.add_argument("--group", metavar="G", help="only devices of this group")
    roll.add_argument(
        "--limit", metavar="N|N%", help="at most N devices, or N%% of the eligible ones"
    )
    roll.add_argument(
        "--uuids",
        metavar="a,b,...|@FILE|@-",
        help="separators , ; | whitespace or newlines; @- reads stdin",
    )
    roll.add_argument("--fraction", metavar="P", help="e.g. 0.05 or 5%%")
    roll.add_argument(
        "--stage",
        type=int,
        metavar="N",
        default=None,
        help="planned wave: the plan stage of the ripple; alone, fill stage N to its cap",
    )
    roll.add_argument("--seed", metavar="S", help="reproducible selection (default: CSPRNG)")
    roll.add_argument("--dry-run", action="store_true", help="show the selection; change nothing")
    roll.add_argument(
        "--print-uuids",
        action="store_true",
        help="print the selected UUIDs, one per line, and nothing else on stdout "
        "(with --json: as the list 'uuids' of the JSON object)",
    )
    roll.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="KEY",
        help="rollout key (default: the repository's online rollout key)",
    )
    add_json_flag(roll)
    roll.set_defaults(func=_rollout)

    for verb, text, fn in (
        ("cancel", "sign the rollout cancelled: no more devices install the wave", _cancel),
        ("complete", "sign the rollout complete: every matching device may install", _complete),
        ("pause", "sign the rollout paused: no device installs the wave until resumed", _pause),
        ("resume", "sign a paused rollout active again", _resume),
    ):
        p = wsub.add_parser(
            verb,
            help=text,
            description=text[0].upper() + text[1:] + ".",
            epilog=example_epilog(f"tufwaves waves {verb} spring-fix --repo repo"),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument(
            "wave", metavar="WAVE", help="the paused wave" if verb == "resume" else "the wave"
        )
        add_repo(p)
        p.add_argument(
            "--key",
            action="append",
            default=[],
            metavar="KEY",
            help=(
                "rollout key (or, with --offline, offline targets key)"
                if verb == "complete"
                else "rollout key (default: the repository's online rollout key)"
            ),
        )
        if verb == "complete":
            p.add_argument(
                "--offline",
                action="store_true",
                help="fold the wave into production targets in an offline ceremony",
            )
        add_json_flag(p)
        p.set_defaults(func=fn)

    adv = wsub.add_parser(
        "advance",
        help="evaluate a planned wave's gates; sign its next stage, complete, pause or cancel",
        description=(
            "Evaluate the current stage of a wave with a signed plan from the "
            "device-signed reports in the inventory (only stored reports, whose "
            "signatures were verified, from devices the stage's ripples offered; "
            "a device silent past the stage's timeout counts as failed), print "
            "the figures, every threshold and the decision, and take it: sign "
            "the next stage's ripple when its success gate, not_before and soak "
            "pass; complete the wave when its last stage covers the fleet and "
            "passed; pause or cancel it (as the plan says) when the current "
            "stage's abort gate tripped. The decision is taken under the "
            "repository lock, once, and recorded in the audit log with its "
            "figures. Otherwise it refuses with the reason (exit 1). "
            "specs/gates.md defines every rule."
        ),
        epilog=example_epilog(
            "tufwaves waves advance spring-fix --repo repo --dry-run",
            "tufwaves waves advance spring-fix --repo repo --json",
        )
        + "\n\nexit codes:\n  0  the decision was taken (with --dry-run: would act)\n"
        "  1  nothing to do now (wait or none: the reasons are printed), or the rollout\n"
        "     rules refused the action\n"
        "  2  bad input (no such wave, or it has no plan)\n  3  I/O, key or lock error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    adv.add_argument("wave", metavar="WAVE", help="the planned wave")
    add_repo(adv)
    adv.add_argument("--dry-run", action="store_true", help="evaluate only; sign nothing")
    adv.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="KEY",
        help="rollout key (default: the repository's online rollout key)",
    )
    add_json_flag(adv)
    adv.set_defaults(func=_advance)

    status = wsub.add_parser(
        "status",
        help="per group: total, eligible, selected and updated devices",
        description=(
            "Per group (and devices in no group, and in total): devices, eligible "
            "ones, ones a ripple selected (fraction ripples included), updated ones."
        ),
        epilog=example_epilog("tufwaves waves status spring-fix --repo repo --json"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("wave", metavar="WAVE", help="the wave")
    add_repo(status)
    add_json_flag(status)
    status.set_defaults(func=_status)

    add_audit_command(wsub)


def _init(args: argparse.Namespace) -> int:
    repo = Repository.open(args.repo)
    rollout_keys = [load_public_key(Path(p))[1] for p in args.rollout_key]
    policy = Policy(
        max_ripple_size=args.max_ripple_size,
        online_complete=not args.no_online_complete,
        max_fraction_ppm=_parse_fraction(args.max_fraction, "--max-fraction"),
    )
    ceremony = init_wave(
        repo,
        args.wave,
        parse_version(args.version),
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
        plan=None if args.plan is None else load_plan_file(args.plan),
    )
    if args.dry_run:
        if args.json:
            emit_json({"dry_run": True, "roles": [r.to_dict() for r in ceremony.roles]})
        else:
            print("dry run: nothing was written. Would sign:\n")
            ring = Keyring.load([repo.metadata_dir / "root.json", repo.keys_dir])
            print(review(ceremony, ring).text())
        return 0
    if args.json:
        emit_json(wave_summary(repo, args.wave).to_dict())
    else:
        print_ceremony(ceremony, f"wave {args.wave} published", f"wave {args.wave} is pending:")
        _print_salt(repo, args.wave, ceremony.complete)
    return 0


def _print_salt(repo: Repository, wave: str, published: bool) -> None:
    """Once the wave is published, the fraction salt its signatures produced."""
    if published:
        salt = wave_summary(repo, wave).fraction_salt
        print(f"fraction salt: {salt} (derived from the offline signatures)")


def _sign(args: argparse.Namespace) -> int:
    repo = Repository.open(args.repo)
    ceremony = sign_ceremony(repo, ceremony_for_wave(repo, args.wave), load_key_ref(args.key))
    if ceremony.complete:
        print(f"wave {args.wave} published")
        _print_salt(repo, args.wave, True)
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
    online = "allowed" if w.policy.online_complete else "needs an offline ceremony"
    print(
        f"policy: max ripple size {w.policy.max_ripple_size or 'unlimited'}; "
        f"online complete {online}; fraction ripples up to {w.policy.fraction_cap / 10_000:g}%"
    )
    if w.fraction_salt is None:
        print(
            "fraction salt: not derived yet (it is derived from the offline signatures "
            "once they meet the threshold; no one can choose it)"
        )
    elif w.policy.fraction_salt is not None:
        print(f"fraction salt: {w.fraction_salt} (carried from an earlier version)")
    else:
        print(f"fraction salt: {w.fraction_salt} (derived from the offline signatures)")
    for t in w.artifacts:
        print(f"artifact {t.path} ({t.length} bytes, sha256 {t.hashes.get('sha256', '?')})")
    for line in w.signatures:
        print(line)


def _history(repo: Repository, wave: str) -> list[RippleRecord]:
    if not has_inventory(repo):
        return []
    with open_inventory(repo, read_only=True) as inv:
        return inv.ripples(wave)


def _show(args: argparse.Namespace) -> int:
    if args.ripple is not None and not args.members:
        raise InputError(
            f"--ripple {args.ripple} only chooses whose members --members prints; "
            f"add --members to list them (waves show prints every ripple's history)"
        )
    repo = Repository.open(args.repo)
    if args.members:
        return _members(repo, args)
    w = wave_summary(repo, args.wave)
    history = _history(repo, args.wave) if w.status != "pending" else []
    if args.json:
        emit_json({**w.to_dict(), "history": [r.to_dict() for r in history]})
        return 0
    print_summary(repo, w)
    if history:
        print_history(history)
    return 0


def print_history(history: list[RippleRecord]) -> None:
    print(f"\n{'RIPPLE':>6}  {'TIME':20}  {'DEVICES':>9}  {'ENCODING':14}  SELECTOR")
    for r in history:
        selector = ", ".join(f"{k}={v}" for k, v in r.selector_data.items())
        print(
            f"{r.index:>6}  {r.created:%Y-%m-%dT%H:%M:%SZ}  {r.size_label:>9}  "
            f"{r.encoding:14}  {selector}"
        )


def _members(repo: Repository, args: argparse.Namespace) -> int:
    if args.ripple is None:
        raise InputError("--members needs --ripple K")
    with open_inventory(repo, read_only=True) as inv:
        uuids = ripple_members(repo, inv, args.wave, args.ripple)
        if args.json:
            emit_json({"wave": args.wave, "ripple": args.ripple, "members": uuids})
        else:
            sys.stdout.write("".join(f"{u}\n" for u in uuids))
    return 0


_LIMIT_RE = re.compile(r"([0-9]{1,12})(%?)")
_FRACTION_RE = re.compile(r"([0-9]{1,7}(?:\.[0-9]{1,8})?|\.[0-9]{1,8})(%?)")


def _parse_limit(text: str | None) -> tuple[int | None, int | None]:
    if text is None:
        return None, None
    match = _LIMIT_RE.fullmatch(text)
    if not match:
        raise InputError(f"--limit {text!r}: use a whole number N or a percentage N%")
    number = int(match[1])
    return (None, number) if match[2] else (number, None)


def _parse_fraction(text: str | None, option: str = "--fraction") -> int | None:
    """A fraction (0.05) or percentage (5%) as parts per million, exactly."""
    if text is None:
        return None
    match = _FRACTION_RE.fullmatch(text)
    if not match:
        raise InputError(f"{option} {text!r}: use a number like 0.05 or 5%")
    value = Decimal(match[1]) / (100 if match[2] else 1)
    if value > 1:
        raise InputError(f"{option} {text!r} is above 100%")
    ppm = value * 1_000_000
    if ppm != ppm.to_integral_value():
        raise InputError(f"{option} {text!r} is finer than one part per million")
    return int(ppm)


def _parse_uuids(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    if text == "@-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as e:
            raise InputError(f"--uuids {text}: cannot read the file: {e.strerror}") from None
    return tuple(parse_uuid_list(text))


def _rollout(args: argparse.Namespace) -> int:
    repo = Repository.open(args.repo)
    limit, percent = _parse_limit(args.limit)
    keys = [load_key_ref(k) for k in args.key]
    chosen = (args.group, args.limit, args.uuids, args.fraction)
    if args.stage is not None and all(c is None for c in chosen):
        with open_inventory(repo, read_only=args.dry_run) as inv:
            result = sign_stage(
                repo, args.wave, args.stage, inv=inv, keys=keys, dry_run=args.dry_run
            )
        return _print_rollout(args, result)
    selector = Selector(
        group=args.group,
        limit=limit,
        percent=percent,
        uuids=_parse_uuids(args.uuids),
        seed=args.seed,
        fraction_ppm=_parse_fraction(args.fraction),
    )
    with open_inventory(repo, read_only=args.dry_run) as inv:
        result = rollout(
            repo,
            inv,
            args.wave,
            selector,
            keys=keys,
            dry_run=args.dry_run,
            progress=info if sys.stderr.isatty() else None,
            stage=args.stage,
        )
    return _print_rollout(args, result)


def _print_rollout(args: argparse.Namespace, result: RolloutResult) -> int:
    if args.json:  # with --print-uuids, the UUIDs join the JSON object
        extra = {"uuids": list(result.uuids)} if args.print_uuids else {}
        emit_json(result.to_dict() | extra)
    elif args.print_uuids:
        sys.stdout.write("".join(f"{u}\n" for u in result.uuids))
    else:
        what = "would sign" if result.dry_run else "signed and published"
        count = (
            f"fraction {result.membership['parts_per_million'] / 10_000:g}%"
            if result.encoding == "fraction"
            else plural(len(result.uuids), "device")
        )
        print(f"ripple {result.index} of wave {args.wave}: {what}, {count} ({result.encoding})")
    if args.print_uuids or args.json:
        info(
            f"ripple {result.index}: {plural(len(result.uuids), 'device')}"
            + (" (dry run: nothing signed)" if result.dry_run else " signed and published")
        )
    return 0


def _cancel(args: argparse.Namespace) -> int:
    repo = Repository.open(args.repo)
    with open_inventory(repo) as inv:
        discarded = cancel(repo, inv, args.wave, keys=[load_key_ref(k) for k in args.key])
    _done(args, "cancelled", "signed and published; devices will refuse it", discarded=discarded)
    for cid in discarded:
        info(f"discarded the pending ceremony {cid}: a cancelled wave never reaches production")
    return 0


def _pause(args: argparse.Namespace) -> int:
    repo = Repository.open(args.repo)
    with open_inventory(repo) as inv:
        pause(repo, inv, args.wave, keys=[load_key_ref(k) for k in args.key])
    _done(args, "paused", "signed and published; no device installs it until resumed")
    return 0


def _resume(args: argparse.Namespace) -> int:
    repo = Repository.open(args.repo)
    with open_inventory(repo) as inv:
        resume(repo, inv, args.wave, keys=[load_key_ref(k) for k in args.key])
    _done(args, "active", "resumed: its ripples' devices may install again")
    return 0


def _done(args: argparse.Namespace, status: str, sentence: str, **extra: object) -> None:
    if args.json:
        emit_json({"wave": args.wave, "status": status, **extra})
    else:
        print(f"wave {args.wave} {status}: {sentence}")


def _complete(args: argparse.Namespace) -> int:
    repo = Repository.open(args.repo)
    keys = [load_key_ref(k) for k in args.key]
    if args.offline:
        ceremony = fold_into_production(repo, args.wave, keys=keys)
        if ceremony.complete:
            _done(args, "complete", "folded into production targets and marked complete")
        elif args.json:
            emit_json(
                {
                    "wave": args.wave,
                    "status": "pending",
                    "ceremony": ceremony.id,
                    "signatures": ceremony.status_lines(),
                }
            )
        else:
            print(
                f"production ceremony {ceremony.id} is pending ('waves ceremony' / 'waves sign'):"
            )
            for line in ceremony.status_lines():
                print(f"  {line}")
        return 0
    with open_inventory(repo) as inv:
        complete(repo, inv, args.wave, keys=keys)
    _done(args, "complete", "every device of its tag and hardware may install")
    return 0


def _status(args: argparse.Namespace) -> int:
    repo = Repository.open(args.repo)
    with open_inventory(repo, read_only=True) as inv:
        wave, rows = wave_status(repo, inv, args.wave)
    if args.json:
        emit_json({"wave": args.wave, "status": wave.status, "groups": [r.to_dict() for r in rows]})
        return 0
    print(f"wave {args.wave}: {wave.status}, {plural(wave.ripple_count, 'ripple')}")
    print(f"{'GROUP':24} {'TOTAL':>10} {'ELIGIBLE':>10} {'SELECTED':>10} {'UPDATED':>10}")
    for r in rows:
        label = r.group if r.kind == "group" else f"({r.kind})"
        print(f"{label:24} {r.total:>10,} {r.eligible:>10,} {r.selected:>10,} {r.updated:>10,}")
    return 0


def _advance(args: argparse.Namespace) -> int:
    repo = Repository.open(args.repo)
    keys = [load_key_ref(k) for k in args.key]
    with open_inventory(repo, read_only=args.dry_run) as inv:
        decision = advance(repo, inv, args.wave, keys=keys, dry_run=args.dry_run)
    return print_decision(decision, as_json=args.json)


def print_decision(decision: Decision, *, as_json: bool) -> int:
    """Print a controller decision (``waves advance``); its exit code (0 acts, 1 not)."""
    ev = decision.evaluation
    acts = decision.acted or (decision.dry_run and ev.acts)
    problem = None
    if decision.refused is not None:
        problem = f"wave {decision.wave}: {ev.action} refused: {decision.refused}"
    elif not acts:
        why = "; ".join(r.message for r in ev.reasons) or ev.action
        problem = f"wave {decision.wave} not advanced ({ev.action}): {why}"
    if as_json:
        extra = {} if problem is None else {"error": problem, "exit_code": 1}
        emit_json(decision.to_dict() | extra)
    else:
        print_evaluation(ev)
        print(f"decision: {_decision_line(decision)}")
    if problem is not None:
        info(f"tufwaves: {problem}")
        return 1
    return 0


def print_evaluation(ev: GateEvaluation) -> None:
    """The figures and checks of an evaluation, for people."""
    print(
        f"wave {ev.wave}: {ev.state}, stage {ev.stage} ({ev.stage_name}) of {ev.stages}, "
        f"at {ev.at:%Y-%m-%dT%H:%M:%SZ}"
    )
    f = ev.figures
    print(
        f"  stage {f.stage} devices: {f.offered:,} offered, {f.reported:,} reported "
        f"({f.installed:,} installed, {f.failed:,} failed, {f.timed_out:,} timed out), "
        f"{f.in_progress:,} in progress, {f.silent:,} silent, {f.ignored:,} other reports ignored"
    )
    if f.codes:
        print(f"  failure codes: {', '.join(f.codes)}")
    for c in ev.checks:
        print(f"  {'pass' if c.passed else 'FAIL'}  {c.name} (stage {c.stage}): {c.message}")


def _decision_line(decision: Decision) -> str:
    ev = decision.evaluation
    what = {
        "advance": f"sign stage {ev.next_stage} (ripple {decision.ripple})",
        "complete": "complete the wave",
        "pause": "pause the wave (abort gate)",
        "cancel": "cancel the wave (abort gate)",
    }
    if ev.action not in what:
        return f"{ev.action}: " + ("; ".join(f"{r.code}: {r.message}" for r in ev.reasons))
    if decision.dry_run:
        return f"would {what[ev.action]} (dry run: nothing signed)"
    if decision.refused is not None:
        return f"{what[ev.action]}: refused: {decision.refused}"
    done = what[ev.action]
    if ev.action == "advance":
        done += f", {plural(decision.devices or 0, 'device')}"
    return f"{done}: signed and published (audit entry {decision.audit_id})"
