"""Shared pieces of the command line: output, progress, passphrases."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_EXPIRES_DAYS",
    "REPO_ENV",
    "Progress",
    "add_expires_days",
    "add_json_flag",
    "add_repo",
    "emit_json",
    "example_epilog",
    "info",
    "plural",
]


def example_epilog(*lines: str) -> str:
    """Format an ``--help`` epilog that shows examples."""
    return "example:\n" + "\n".join(f"  {line}" for line in lines)


MAX_EXPIRES_DAYS = 3650
"""The longest expiry ``--expires-days`` accepts (about ten years)."""


def _expires_days(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_EXPIRES_DAYS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of days from 1 to {MAX_EXPIRES_DAYS}"
        )
    return int(text)


def add_expires_days(
    parser: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup, what: str
) -> None:
    """``--expires-days N``: a whole number from 1 to MAX_EXPIRES_DAYS."""
    parser.add_argument(
        "--expires-days",
        type=_expires_days,
        default=None,
        metavar="N",
        help=f"{what} expires in N days, 1 to {MAX_EXPIRES_DAYS} (default 365)",
    )


REPO_ENV = "TUFWAVES_REPO"
"""The environment variable that gives ``--repo`` its default."""


def positive_seconds(text: str) -> float:
    """A duration option: seconds above 0 and at most a day (a decimal number)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0 and at most 86400 seconds")
    return value


def add_repo(parser: argparse.ArgumentParser, what: str = "the repository directory") -> None:
    """``--repo REPO``, required unless TUFWAVES_REPO is set (then its default)."""
    default = os.environ.get(REPO_ENV) or None
    parser.add_argument(
        "--repo",
        type=Path,
        metavar="REPO",
        default=None if default is None else Path(default),
        required=default is None,
        help=f"{what} (default: ${REPO_ENV}"
        + ("" if default is None else ", now " + default.replace("%", "%%"))
        + ")",
    )


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object for scripts")


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 device``, ``2,000 devices``: a count and its noun, agreed."""
    return f"{count:,} {noun if count == 1 else (nouns or noun + 's')}"


def info(message: str) -> None:
    """A line for people, on stderr (stdout stays clean for data)."""
    sys.stderr.write(message + "\n")


class Progress:
    """Progress on stderr when it is a terminal; silent otherwise."""

    def __init__(self, label: str, total: int | None = None) -> None:
        self.label = label
        self.total = total
        self.enabled = sys.stderr.isatty() and not os.environ.get("TUFWAVES_QUIET")
        self._last = -1

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        if self.total:
            pct = done * 100 // self.total
            if pct == self._last:
                return
            self._last = pct
            sys.stderr.write(f"\r{self.label}: {done:,}/{self.total:,} ({pct}%)")
        else:
            sys.stderr.write(f"\r{self.label}: {done:,}")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


@contextmanager
def progress(label: str, total: int | None = None) -> Iterator[Progress]:
    bar = Progress(label, total)
    try:
        yield bar
    finally:
        bar.done()
