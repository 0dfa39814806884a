"""``tufwaves serve``: run the update server (needs the ``server`` extra)."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable
from pathlib import Path

from tufwaves.cli._common import add_repo, example_epilog, positive_seconds
from tufwaves.cli.controller import DEFAULT_INTERVAL
from tufwaves.errors import InputError

run_server: Callable[..., None] | None
try:
    from tufwaves.http.serve import serve as run_server
except ImportError as e:  # the server extra is not installed: the rest of the CLI works
    run_server = None
    _MISSING = e.name


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser(
        "serve",
        help="serve the repository, device bundles and the operator dashboard over HTTP",
        description=textwrap.fill(
            break_on_hyphens=False,
            text="Serve REPO over HTTP: the TUF repository as TUF clients expect it "
            "(/metadata/, /targets/), one bundle per device "
            "(/v1/devices/UUID/bundle, specs/bundle.md), device-signed install reports "
            "(POST /v1/devices/UUID/reports, specs/reports.md) and, with "
            "--operator-token-file, the operator API (/v1/waves) and the dashboard "
            "(/). Every answer comes from one published state, even while "
            "rollouts publish. Endpoints: specs/server.md; OpenAPI at /openapi.json. "
            "Needs the server extra: pip install 'tufwaves[server]'. Put a TLS "
            "proxy in front of it for anything but loopback. --controller also runs "
            "the rollout controller (specs/gates.md) in the server: every interval and "
            "soon after accepted reports, in its own thread, with the online rollout "
            "key (passphrase from TUFWAVES_ONLINE_KEY_PASSPHRASE or "
            "TUFWAVES_KEY_PASSPHRASE); with --workers N each worker runs one, and "
            "each decision is still taken once.",
        ),
        epilog=example_epilog(
            "tufwaves serve --repo repo --port 8080 --operator-token-file operator.token",
            "# operator.token: e.g. 'openssl rand -hex 32 > operator.token'",
            "curl http://127.0.0.1:8080/v1/devices/3f1c2d4e-0000-4000-8000-000000000001/bundle",
            "# then open http://127.0.0.1:8080/ in a browser and sign in with the token",
            "tufwaves serve --repo repo --controller --controller-interval 30",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_repo(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    serve.add_argument(
        "--workers", type=int, default=1, metavar="N", help="worker processes (default 1)"
    )
    serve.add_argument(
        "--operator-token-file",
        type=Path,
        metavar="FILE",
        help="file holding the operator token (16+ characters); without it the "
        "operator API and the dashboard are off",
    )
    serve.add_argument(
        "--controller",
        action="store_true",
        help="also run the rollout controller (as 'tufwaves controller'): planned waves "
        "advance, complete or abort on a schedule and soon after each batch of reports",
    )
    serve.add_argument(
        "--controller-interval",
        type=positive_seconds,
        default=None,
        metavar="SECONDS",
        help=f"with --controller: seconds between scheduled passes (default {DEFAULT_INTERVAL:g})",
    )
    serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port {args.port} is not a TCP port (0-65535)")
    if args.workers < 1:
        raise InputError(f"--workers must be at least 1, not {args.workers}")
    if args.controller_interval is not None and not args.controller:
        raise InputError("--controller-interval needs --controller")
    if run_server is None:
        raise InputError(
            f"tufwaves serve needs the server extra ({_MISSING} is missing): "
            "pip install 'tufwaves[server]'"
        )
    run_server(
        args.repo,
        host=args.host,
        port=args.port,
        workers=args.workers,
        token_file=args.operator_token_file,
        controller_interval=(args.controller_interval or DEFAULT_INTERVAL)
        if args.controller
        else None,
    )
    return 0
