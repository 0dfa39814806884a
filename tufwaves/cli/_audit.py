"""``tufwaves waves audit``: check a wave's whole published history (``specs/audit.md``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tufwaves.audit import AuditReport, DirectorySource, HttpSource, Source, audit_wave
from tufwaves.cli._common import REPO_ENV, add_json_flag, emit_json, example_epilog, plural
from tufwaves.errors import InputError, StorageError

__all__ = ["add_audit_command"]


def add_audit_command(wsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``waves audit`` under the ``waves`` sub-parsers."""
    audit = wsub.add_parser(
        "audit",
        help="verify every published version of a wave's rollout and ripples",
        description=(
            "Walk every published version of the wave's roles (wave, rollout, ripples) "
            "from the published files alone (a repository directory, a copy of its "
            "metadata/, or a server's or mirror's base URL): verify each signature "
            "against the delegation in force, and check that the history kept the "
            "rules (versions, state transitions, cancel and complete final, ripples "
            "never changed or removed, accounting, stages, caps, policy limits, and "
            "the plan's times as far as the snapshots' signed expiry shows them). "
            "Prints one line per version, then 'no violations' or each violation "
            "(kind, role, version, message). Exit 0: no violations; 1: violations; "
            "2: no such wave or bad input; 3: the files cannot be read. "
            "specs/audit.md lists every check."
        ),
        epilog=example_epilog(
            "tufwaves waves audit spring-fix --repo repo",
            "tufwaves waves audit spring-fix --url https://updates.example.com/ --json",
            "tufwaves waves audit spring-fix --url http://127.0.0.1:8080/ "
            "--trusted-root 1.root.json",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    audit.add_argument("wave", metavar="WAVE", help="the wave")
    where = audit.add_mutually_exclusive_group()
    default = os.environ.get(REPO_ENV) or None
    where.add_argument(
        "--repo",
        type=Path,
        metavar="REPO",
        default=None if default is None else Path(default),
        help=f"a repository directory or a copy of its metadata/ (default: ${REPO_ENV}"
        + ("" if default is None else ", now " + default.replace("%", "%%"))
        + "; optional, since --url is the other source)",
    )
    where.add_argument(
        "--url",
        metavar="URL",
        help="base URL of a tufwaves server or static mirror (files under URL/metadata/)",
    )
    audit.add_argument(
        "--trusted-root",
        type=Path,
        metavar="ROOT",
        help="root metadata you trust (any version); default: trust the mirror's 1.root.json",
    )
    add_json_flag(audit)
    audit.set_defaults(func=_audit)


def _source(args: argparse.Namespace) -> Source:
    if args.url is not None:
        return HttpSource(args.url)
    if args.repo is None:
        raise InputError(f"give --repo REPO or --url URL (or set ${REPO_ENV})")
    return DirectorySource(args.repo)


def _audit(args: argparse.Namespace) -> int:
    trusted = None
    if args.trusted_root is not None:
        try:
            trusted = args.trusted_root.read_bytes()
        except OSError as e:
            raise StorageError(f"cannot read {args.trusted_root}: {e.strerror or e}") from None
    report = audit_wave(_source(args), args.wave, trusted_root=trusted)
    if args.json:
        emit_json(report.to_dict())
    else:
        print_report(report)
    return 0 if report.ok else 1


def print_report(report: AuditReport) -> None:
    """The timeline, then 'no violations' or one line per violation."""
    out = sys.stdout
    out.write(
        f"wave {report.wave} at {report.source}: {plural(len(report.timeline), 'version')}, "
        f"{plural(report.snapshots, 'snapshot')}, {plural(report.roots, 'root')}\n"
    )
    out.write(
        f"{'snap':>5} {'published (evidence)':<20} {'role':<28} {'v':>3} {'state':<9} "
        f"{'ripples':>7} {'stage':>5} {'size':>8}  signers  note\n"
    )
    for e in report.timeline:
        when = "-" if e.evidence is None else e.evidence.strftime("%Y-%m-%dT%H:%M:%SZ")
        out.write(
            f"{'-' if e.snapshot is None else e.snapshot:>5} {when:<20} {e.role:<28} "
            f"{e.version:>3} {e.state or '':<9} {_cell(e.ripples):>7} {_cell(e.stage):>5} "
            f"{_cell(e.size):>8}  {','.join(e.signers) or '-':<8} {e.note}\n"
        )
    if report.ok:
        out.write("no violations\n")
        return
    out.write(f"{plural(len(report.violations), 'violation')}:\n")
    for v in report.violations:
        version = "" if v.version is None else f" v{v.version}"
        out.write(f"  {v.kind}: {v.role}{version}: {v.message}\n")


def _cell(value: int | None) -> str:
    return "" if value is None else str(value)
