"""Run the server under uvicorn (``tufwaves serve``)."""

from __future__ import annotations

import os
from pathlib import Path

import uvicorn

from tufwaves.http import REPO_ENV, TOKEN_FILE_ENV, create_app
from tufwaves.http.auth import read_token_file

__all__ = ["serve"]


def serve(
    repo: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    token_file: Path | None = None,
    log_level: str = "info",
) -> None:
    """Serve ``repo`` until interrupted.

    The app is built here first, so a bad repository or token file fails
    before the port is opened. With ``workers`` above 1 uvicorn starts that
    many processes, each building the app from the environment.
    """
    token = read_token_file(token_file) if token_file is not None else None
    app = create_app(repo, operator_token=token)
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False)
        return
    os.environ[REPO_ENV] = str(repo.resolve())
    if token_file is not None:
        os.environ[TOKEN_FILE_ENV] = str(token_file.resolve())
    else:
        os.environ.pop(TOKEN_FILE_ENV, None)
    uvicorn.run(
        "tufwaves.http:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        server_header=False,
    )
