"""The ``tufwaves`` command line: ``main(argv) -> int`` and the console script.

Exit codes: 0 success (or "allowed" for ``device verify``); 1 a rule refused
the operation, a check failed, or a device is denied; 2 usage or malformed
input; 3 I/O, key, passphrase or lock errors; 70 an internal error (a bug:
the message says so, and ``-v`` or ``TUFWAVES_DEBUG=1`` adds the traceback).

With ``--json``, a failing command also prints one JSON object
``{"error": MESSAGE, "exit_code": N}`` on stdout, so stdout always holds
exactly one JSON object; the message for people still goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from typing import NoReturn

from tufwaves import __version__
from tufwaves.cli import (
    controller,
    demo,
    device,
    fleet,
    keys,
    repo,
    serve,
    simulate,
    vectors,
    waves,
)
from tufwaves.errors import TufwavesError

__all__ = ["DEBUG_ENV", "EXIT_INTERNAL", "build_parser", "main", "run", "walk_parsers"]

GROUPS = (keys, repo, waves, fleet, device, vectors, serve, controller, simulate, demo)

EXIT_INTERNAL = 70
"""Exit code of an unexpected exception (a bug), as sysexits.h's EX_SOFTWARE."""

DEBUG_ENV = "TUFWAVES_DEBUG"
"""Set (to anything but empty or 0) to print the traceback of an internal error."""

EXIT_CODES = f"""exit codes:
  0  success (device verify: the device may install)
  1  refused by a rule, a check failed, or the device is denied
  2  usage error or malformed input
  3  I/O, key, passphrase or lock error
  {EXIT_INTERNAL} internal error (please report it; -v or {DEBUG_ENV}=1 shows the traceback)

With --json, errors are also printed on stdout as one JSON object:
  {{"error": "...", "exit_code": N}}

environment:
  TUFWAVES_REPO            default for --repo
  TUFWAVES_KEY_PASSPHRASE  passphrase of key files (else a prompt)
  {DEBUG_ENV}           print the traceback of internal errors"""


class _UsageError(Exception):
    """A command line the parser refused; ``parser`` is the (sub)command's parser."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(self, message)


def walk_parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ("tufwaves",)
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser under ``parser`` (itself first) with its command path."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from walk_parsers(child, (*path, name))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tufwaves",
        description="Release OTA updates in signed waves and ripples (TUF).",
        epilog=EXIT_CODES + "\n\nexample:\n  tufwaves demo --dir /tmp/tufwaves-demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log details to stderr (and the traceback of an internal error)",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser, metavar="COMMAND"
    )
    for group in GROUPS:
        group.register(sub)
    for _, p in walk_parsers(parser):
        # The innermost parser wins: unknown options are reported by it.
        p.set_defaults(_parser=p)
    return parser


def _wants_json(argv: Sequence[str]) -> bool:
    options = argv[: list(argv).index("--")] if "--" in argv else argv
    return "--json" in options


def _json_error(message: str, code: int) -> None:
    sys.stdout.write(json.dumps({"error": message, "exit_code": code}, sort_keys=True) + "\n")


def _debug(verbose: bool) -> bool:
    return verbose or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = _wants_json(argv)
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            args._parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except _UsageError as e:
        prog = e.parser.prog
        e.parser.print_usage(sys.stderr)
        sys.stderr.write(f"{prog}: error: {e.message}\nTry '{prog} --help'.\n")
        if as_json:
            _json_error(f"{prog}: {e.message}", 2)
        raise SystemExit(2) from None
    if args.verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger = logging.getLogger("tufwaves")
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        code: int = args.func(args)
    except TufwavesError as e:
        return _fail(str(e), e.exit_code, as_json)
    except KeyboardInterrupt:
        return _fail("interrupted; nothing was published", 1, as_json)
    except OSError as e:
        what = f"{e.filename}: " if e.filename else ""
        return _fail(f"{what}{e.strerror or e}", 3, as_json)
    except Exception as e:  # the last resort: a bug, not a traceback for users
        if _debug(args.verbose):
            traceback.print_exc(file=sys.stderr)
        hint = "" if _debug(args.verbose) else f" (-v or {DEBUG_ENV}=1 shows the traceback)"
        return _fail(
            f"internal error: {type(e).__name__}: {e}; please report it{hint}",
            EXIT_INTERNAL,
            as_json,
        )
    return code


def _fail(message: str, code: int, as_json: bool) -> int:
    sys.stderr.write(f"tufwaves: error: {message}\n")
    if as_json:
        _json_error(message, code)
    return code


def run() -> None:
    sys.exit(main())
