"""``tufwaves serve``: the update server as an ASGI application (Starlette).

Usage::

    from tufwaves.http import create_app

    app = create_app("/srv/repo", operator_token=token)  # any ASGI server runs it

This package sits between the command line and the server library: the
server library (:mod:`tufwaves.server`) never imports it, so embedding the
library needs no web stack. ``specs/server.md`` describes every endpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette

from tufwaves.http.app import create_app
from tufwaves.http.auth import read_token_file
from tufwaves.server.controller import ControllerLoop

__all__ = [
    "CONTROLLER_ENV",
    "REPO_ENV",
    "TOKEN_FILE_ENV",
    "app_from_environment",
    "create_app",
]

REPO_ENV = "TUFWAVES_SERVE_REPO"
TOKEN_FILE_ENV = "TUFWAVES_SERVE_TOKEN_FILE"  # noqa: S105 - a variable name
CONTROLLER_ENV = "TUFWAVES_SERVE_CONTROLLER"
"""Seconds between controller passes; set, each worker process runs a controller loop."""


def app_from_environment() -> Starlette:
    """The app for ``uvicorn --factory tufwaves.http:app_from_environment``.

    Reads the repository path from ``TUFWAVES_SERVE_REPO`` and, if set, the
    operator token file from ``TUFWAVES_SERVE_TOKEN_FILE``; ``tufwaves serve
    --workers N`` starts each worker process this way. With
    ``TUFWAVES_SERVE_CONTROLLER`` (seconds between passes) the worker also
    runs a :class:`~tufwaves.server.ControllerLoop` in a background thread
    (several loops are safe: each decision is taken once).
    """
    repo = os.environ.get(REPO_ENV)
    if not repo:
        raise RuntimeError(f"set {REPO_ENV} to the repository directory")
    token_file = os.environ.get(TOKEN_FILE_ENV)
    token = read_token_file(Path(token_file)) if token_file else None
    interval = os.environ.get(CONTROLLER_ENV)
    controller = ControllerLoop(repo, interval=float(interval)).start() if interval else None
    return create_app(repo, operator_token=token, controller=controller)
