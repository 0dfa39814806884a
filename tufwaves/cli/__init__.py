"""The ``tufwaves`` command line: ``main(argv) -> int`` and the console script.

Exit codes: 0 success (or "allowed" for ``device verify``); 1 a rule refused
the operation, a check failed, or a device is denied; 2 usage or malformed
input; 3 I/O, key, passphrase or lock errors.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from tufwaves import __version__
from tufwaves.cli import demo, device, fleet, keys, repo, serve, waves
from tufwaves.errors import TufwavesError

__all__ = ["main", "run"]

GROUPS = (keys, repo, waves, fleet, device, serve, demo)

EXIT_CODES = """exit codes:
  0  success (device verify: the device may install)
  1  refused by a rule, a check failed, or the device is denied
  2  usage error or malformed input
  3  I/O, key, passphrase or lock error"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\nTry '{self.prog} --help'.\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tufwaves",
        description="Release OTA updates in signed waves and ripples (TUF).",
        epilog=EXIT_CODES + "\n\nexample:\n  tufwaves demo --dir /tmp/tufwaves-demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger = logging.getLogger("tufwaves")
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        code: int = args.func(args)
    except TufwavesError as e:
        sys.stderr.write(f"tufwaves: error: {e}\n")
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("tufwaves: interrupted; nothing was published\n")
        return 1
    return code


def run() -> None:
    sys.exit(main())
