"""``tufwaves controller``: the rollout controller as its own process."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from datetime import UTC, datetime

from tufwaves.cli._common import add_json_flag, add_repo, example_epilog, info, positive_seconds
from tufwaves.server.controller import ControllerLoop, Decision
from tufwaves.server.keys import load_key_ref
from tufwaves.server.repository import Repository

DEFAULT_INTERVAL = 60.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ctl = sub.add_parser(
        "controller",
        help="run the rollout controller: advance, complete or abort planned waves",
        description=textwrap.fill(
            "Evaluate every active wave with a signed plan every --interval "
            "seconds and take each decision, as 'waves advance' does: sign the "
            "next stage, complete, or pause/cancel on an abort gate "
            "(specs/gates.md). Decisions are taken under the repository lock, "
            "once, even with several controllers or server replicas, and are "
            "recorded in the audit log as 'controller'. The online rollout key "
            "signs unless --key is given; its passphrase comes from "
            "TUFWAVES_ONLINE_KEY_PASSPHRASE or TUFWAVES_KEY_PASSPHRASE. "
            "'tufwaves serve --controller' runs the same loop inside the update "
            "server. Prints one line per decision that acts "
            "(with --json: one JSON object per pass, one per line); runs until "
            "interrupted, or one pass with --once.",
            break_on_hyphens=False,
        ),
        epilog=example_epilog(
            "tufwaves controller --repo repo --interval 30",
            "tufwaves controller --repo repo --once --json",
        )
        + "\n\nexit codes:\n  0  done (--once: every decision was taken or has to wait)\n"
        "  1  --once: the rollout rules refused an action, or a wave could not be decided\n"
        "  2  bad input\n  3  I/O, key or lock error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_repo(ctl)
    ctl.add_argument(
        "--interval",
        type=positive_seconds,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between passes (default {DEFAULT_INTERVAL:g})",
    )
    ctl.add_argument("--once", action="store_true", help="one pass, then exit")
    ctl.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="KEY",
        help="rollout key (default: the repository's online rollout key)",
    )
    add_json_flag(ctl)
    ctl.set_defaults(func=_controller)


def _line(decision: Decision) -> str:
    ev = decision.evaluation
    if decision.refused is not None:
        return f"wave {decision.wave}: {ev.action} refused: {decision.refused}"
    if ev.action == "advance":
        return (
            f"wave {decision.wave}: signed stage {ev.next_stage} (ripple {decision.ripple}, "
            f"{decision.devices} devices)"
        )
    return f"wave {decision.wave}: {ev.action} ({ev.reason or 'gates passed'})"


def _controller(args: argparse.Namespace) -> int:
    keys = [load_key_ref(k) for k in args.key]
    failures: list[str] = []

    def on_pass(decisions: list[Decision]) -> None:
        if args.json:
            record = {
                "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "decisions": [d.to_dict() for d in decisions],
                "errors": list(failures),
            }
            sys.stdout.write(json.dumps(record, sort_keys=True) + "\n")
            sys.stdout.flush()
            return
        for d in decisions:
            if d.acted or d.refused is not None:
                print(_line(d), flush=True)

    def on_error(wave: str, error: Exception) -> None:
        failures.append(f"wave {wave}: {error}" if wave else str(error))
        info(f"tufwaves: controller: {failures[-1]}")

    Repository.open(args.repo)  # a bad --repo fails now, not in every pass
    loop = ControllerLoop(
        args.repo, interval=args.interval, keys=keys, on_pass=on_pass, on_error=on_error
    )
    if args.once:
        decisions = loop.run_once()
        refused = any(d.refused is not None for d in decisions)
        return 1 if refused or failures else 0
    info(f"tufwaves controller: watching {args.repo} every {args.interval:g} s (Ctrl-C stops)")
    try:
        loop.run()
    except KeyboardInterrupt:
        info("tufwaves controller: stopped")
    return 0
