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

__all__ = ["REPO_ENV", "TOKEN_FILE_ENV", "app_from_environment", "create_app"]

REPO_ENV = "TUFWAVES_SERVE_REPO"
TOKEN_FILE_ENV = "TUFWAVES_SERVE_TOKEN_FILE"  # noqa: S105 - a variable name


def app_from_environment() -> Starlette:
    """The app for ``uvicorn --factory tufwaves.http:app_from_environment``.

    Reads the repository path from ``TUFWAVES_SERVE_REPO`` and, if set, the
    operator token file from ``TUFWAVES_SERVE_TOKEN_FILE``; ``tufwaves serve
    --workers N`` starts each worker process this way.
    """
    repo = os.environ.get(REPO_ENV)
    if not repo:
        raise RuntimeError(f"set {REPO_ENV} to the repository directory")
    token_file = os.environ.get(TOKEN_FILE_ENV)
    token = read_token_file(Path(token_file)) if token_file else None
    return create_app(repo, operator_token=token)
