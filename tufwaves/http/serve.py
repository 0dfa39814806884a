"""Run the server under uvicorn (``tufwaves serve``)."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from types import TracebackType

import uvicorn
from starlette.applications import Starlette

from tufwaves.http import CONTROLLER_ENV, REPO_ENV, TOKEN_FILE_ENV, create_app
from tufwaves.http.auth import read_token_file
from tufwaves.server.controller import ControllerLoop

__all__ = ["ServerThread", "serve"]


def serve(
    repo: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    token_file: Path | None = None,
    log_level: str = "info",
    controller_interval: float | None = None,
) -> None:
    """Serve ``repo`` until interrupted.

    The app is built here first, so a bad repository or token file fails
    before the port is opened. With ``workers`` above 1 uvicorn starts that
    many processes, each building the app from the environment.
    ``controller_interval`` runs the rollout controller
    (:class:`~tufwaves.server.ControllerLoop`) in the server: a pass every
    that many seconds and soon after each batch of accepted reports; with
    several workers, each worker runs one (each decision is still taken once).
    """
    token = read_token_file(token_file) if token_file is not None else None
    if workers == 1:
        loop = (
            ControllerLoop(repo, interval=controller_interval)
            if controller_interval is not None
            else None
        )
        app = create_app(repo, operator_token=token, controller=loop)
        if loop is not None:
            loop.start()
        try:
            uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False)
        finally:
            if loop is not None:
                loop.stop()
        return
    create_app(repo, operator_token=token)  # fail before the workers start
    if controller_interval is not None:
        os.environ[CONTROLLER_ENV] = str(controller_interval)
    else:
        os.environ.pop(CONTROLLER_ENV, None)
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


class ServerThread:
    """An app served by uvicorn on 127.0.0.1 in a background thread, for as long
    as the ``with`` block runs (the demo and the tests use it).

    The socket is bound and listening before uvicorn starts, so a client may
    connect at once: early connections wait in the backlog.

    Attributes:
        port: the port chosen by the system.
        url: ``http://127.0.0.1:PORT``.
    """

    def __init__(self, app: Starlette) -> None:
        """Bind a loopback port for ``app``; nothing is served before ``with``.

        Args:
            app: the ASGI application (from :func:`tufwaves.http.create_app`).
        """
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def __enter__(self) -> ServerThread:
        self._sock.listen(128)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()
