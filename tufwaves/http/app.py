"""The ASGI application: TUF repository, device bundles, operator API, dashboard.

``specs/server.md`` is the description of every endpoint; ``openapi.py`` is
its machine-readable form. Handlers that touch files or the inventory are
plain functions, which Starlette runs in its thread pool; each thread keeps
its own inventory connection.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    MalformedRangeHeader,
    RangeNotSatisfiable,
    RedirectResponse,
    Response,
)
from starlette.routing import Route

from tufwaves.device.membership import canonical_uuid
from tufwaves.device.report import MAX_REPORT_BYTES
from tufwaves.errors import InputError, StorageError, TufwavesError
from tufwaves.http import dashboard, operator
from tufwaves.http.auth import COOKIE, OperatorToken
from tufwaves.http.openapi import openapi_document
from tufwaves.http.problems import Problem, bad_request, not_found, problem_response
from tufwaves.http.published import (
    CACHE_BYTES,
    Busy,
    CachingRepository,
    ServedState,
    StateCache,
    Unpublished,
)
from tufwaves.server.bundler import BundleSource
from tufwaves.server.controller import ControllerLoop
from tufwaves.server.inventory import Inventory
from tufwaves.server.metadata import Clock
from tufwaves.server.reports import AcceptedReport, ReportRefused, accept_report
from tufwaves.server.repository import Repository
from tufwaves.server.rollout import WaveContext, open_inventory

__all__ = ["create_app"]

logger = logging.getLogger("tufwaves.http")

IMMUTABLE = "public, max-age=31536000, immutable"
VERSIONED_RE = re.compile(r"([1-9][0-9]{0,18})\.([A-Za-z0-9][A-Za-z0-9._-]{0,200})\.json")
SINCE_ROOT_RE = re.compile(r"[1-9][0-9]{0,18}")
LOGIN_BODY_MAX = 4096
COOKIE_MAX_AGE = 12 * 3600


def _etag_matches(header: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match (weak comparison)."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


def _safe_segments(raw: str, what: str) -> list[str]:
    """The path's segments; a traversal attempt is a 400 problem."""
    segments = raw.split("/")
    for seg in segments:
        if seg in {"", ".", ".."} or "\\" in seg or "\x00" in seg:
            raise bad_request(
                "bad-path", f"{what} paths are relative, without empty, '.' or '..' segments"
            )
    return segments


class _App:
    def __init__(
        self,
        repo: CachingRepository,
        token: OperatorToken | None,
        controller: ControllerLoop | None = None,
    ) -> None:
        self.repo = repo
        self.controller = controller
        self.states = StateCache(repo)
        self.token = token
        self._local = threading.local()
        self._metadata_root = repo.metadata_dir.resolve()
        self._targets_root = repo.targets_dir.resolve()

    # -- shared ------------------------------------------------------------

    def served(self) -> ServedState:
        try:
            return self.states.current()
        except Unpublished:
            raise Problem(
                503,
                "unpublished",
                "Service unavailable",
                "the repository has no published metadata yet",
                {"Retry-After": "60"},
            ) from None
        except Busy:
            raise Problem(
                503,
                "publishing",
                "Service unavailable",
                "a new root is being published; ask again shortly",
                {"Retry-After": "1"},
            ) from None

    def inventory(self) -> Inventory:
        inv: Inventory | None = getattr(self._local, "inventory", None)
        if inv is None:
            try:
                inv = open_inventory(self.repo)
            except StorageError:
                # A read-only replica: serve bundles from a read-only opening.
                inv = open_inventory(self.repo, read_only=True)
            self._local.inventory = inv
        return inv

    def require_operator(self, request: Request, *, cookie: bool = False) -> None:
        if self.token is None:
            raise not_found(
                "operator-api-disabled",
                "the operator API is off; start the server with --operator-token-file",
            )
        auth = request.headers.get("authorization")
        if auth is not None:
            scheme, _, credentials = auth.partition(" ")
            if scheme.lower() == "bearer" and self.token.matches(credentials.strip()):
                return
            raise Problem(
                401,
                "unauthorized",
                "Unauthorized",
                "the operator token is not valid",
                {"WWW-Authenticate": 'Bearer realm="tufwaves", error="invalid_token"'},
            )
        if cookie:
            value = request.cookies.get(COOKIE)
            if value is not None and self.token.matches_cookie(value):
                return
        raise Problem(
            401,
            "unauthorized",
            "Unauthorized",
            "this endpoint needs the operator token: Authorization: Bearer TOKEN",
            {"WWW-Authenticate": 'Bearer realm="tufwaves"'},
        )

    # -- TUF repository ------------------------------------------------------

    def metadata(self, request: Request) -> Response:
        name = str(request.path_params["name"])
        segments = _safe_segments(name, "metadata")
        served = self.served()
        if name == "timestamp.json":
            headers = {"ETag": served.etag, "Cache-Control": "no-cache"}
            if _etag_matches(request.headers.get("if-none-match"), served.etag):
                return Response(status_code=304, headers=headers)
            return Response(
                served.state.timestamp_bytes, media_type="application/json", headers=headers
            )
        match = VERSIONED_RE.fullmatch(name)
        if len(segments) != 1 or match is None:
            raise not_found("not-found", f"no metadata file {name}")
        version, role = int(match[1]), match[2]
        state = served.state
        if role == "root":
            published = state.root_version
        elif role == "snapshot":
            published = state.snapshot.signed.version
        else:
            published = state.version_of(role) or 0
        if version > published or role == "timestamp":
            # Not (yet) published: files of a publish in progress are never served.
            raise not_found("not-found", f"no published metadata file {name}")
        try:
            data = self.repo.role_bytes(role, version)
        except StorageError:
            raise not_found("not-found", f"no published metadata file {name}") from None
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        headers = {"ETag": etag, "Cache-Control": IMMUTABLE}
        if _etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        return Response(data, media_type="application/json", headers=headers)

    def targets(self, request: Request) -> Response:
        raw = str(request.path_params["path"])
        _safe_segments(raw, "target")
        path = (self._targets_root / raw).resolve()
        if not path.is_relative_to(self._targets_root) or not path.is_file():
            raise not_found("not-found", f"no target file {raw}")
        size = path.stat().st_size
        range_header = request.headers.get("range")
        if range_header is not None:
            try:
                FileResponse._parse_range_header(range_header, size)
            except RangeNotSatisfiable:
                raise Problem(
                    416,
                    "range-not-satisfiable",
                    "Range not satisfiable",
                    f"the file has {size} bytes",
                    {"Content-Range": f"bytes */{size}"},
                ) from None
            except MalformedRangeHeader as e:
                raise bad_request("bad-range", f"malformed Range header: {e.content}") from None
        return FileResponse(
            path,
            media_type="application/octet-stream",
            headers={"Cache-Control": IMMUTABLE},
        )

    # -- devices -------------------------------------------------------------

    async def bundle(self, request: Request) -> Response:
        """The device's bundle; a 304 when its ETag matches, without building it.

        Runs on the event loop, not in the thread pool: it reads cached,
        immutable files and makes two indexed inventory look-ups, which cost
        less than a hand-off to a thread.
        """
        uuid = self.device_uuid(request)
        since_values = request.query_params.getlist("since-root")
        since_root = 1
        if since_values:
            if len(since_values) > 1 or SINCE_ROOT_RE.fullmatch(since_values[0]) is None:
                raise bad_request(
                    "bad-since-root", "since-root is one positive integer: a root version"
                )
            since_root = int(since_values[0])
        served = self.served()
        if since_root > served.state.root_version:
            raise bad_request(
                "bad-since-root",
                f"since-root {since_root} is not a published root version "
                f"(1..{served.state.root_version})",
            )
        inv = self.inventory()
        device = inv.get(uuid)
        if device is None:
            raise not_found("unknown-device", f"device {uuid} is not in the inventory")
        source: BundleSource = served.memo(
            "bundle-source", lambda: BundleSource(self.repo, served.state)
        )
        plan = source.plan(inv, uuid, since_root=since_root, device=device)
        headers = {"ETag": plan.etag, "Cache-Control": "private, no-cache"}
        if _etag_matches(request.headers.get("if-none-match"), plan.etag):
            return Response(status_code=304, headers=headers)
        body = plan.bundle().to_bytes()
        return Response(body, media_type="application/json", headers=headers)

    def device_uuid(self, request: Request) -> str:
        raw = str(request.path_params["uuid"])
        try:
            return canonical_uuid(raw)
        except InputError:
            raise bad_request("malformed-uuid", "a device UUID is 8-4-4-4-12 hex digits") from None

    async def reports(self, request: Request) -> Response:
        """A device-signed report (specs/reports.md): 201 once committed."""
        uuid = self.device_uuid(request)
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != "application/json":
            raise Problem(
                415,
                "unsupported-media-type",
                "Unsupported media type",
                "a report is sent as Content-Type: application/json",
            )
        body = await _read_capped(request, MAX_REPORT_BYTES, "a report")
        accepted = await run_in_threadpool(self.store_report, uuid, body)
        if accepted.new and self.controller is not None:
            self.controller.poke()  # sets a flag: the evaluation runs in the controller's thread
        return JSONResponse(
            {
                "stored": accepted.new,
                "device": uuid,
                "counter": accepted.report.counter,
                "wave": accepted.report.wave,
                "ripple": accepted.ripple,
            },
            status_code=201 if accepted.new else 200,
            headers={"Cache-Control": "no-store"},
        )

    def store_report(self, uuid: str, body: bytes) -> AcceptedReport:
        served = self.served()
        inv = self.inventory()
        if getattr(inv, "read_only", False):
            raise _replica_problem()
        waves: dict[str, WaveContext] = served.memo("report-waves", dict)
        try:
            return accept_report(self.repo, inv, served.state, uuid, body, waves=waves)
        except ReportRefused as refused:
            status, title = REPORT_PROBLEMS[refused.slug]
            raise Problem(status, refused.slug, title, refused.detail) from None
        except StorageError as e:
            if "read-only" in str(e) or "readonly" in str(e):
                raise _replica_problem() from None
            raise

    # -- operator --------------------------------------------------------------

    def waves(self, request: Request) -> Response:
        self.require_operator(request)
        return JSONResponse(
            operator.wave_list(self.repo, self.served()), headers={"Cache-Control": "no-store"}
        )

    def wave(self, request: Request) -> Response:
        self.require_operator(request)
        name = str(request.path_params["wave"])
        detail = operator.wave_detail(self.repo, self.served(), self.inventory(), name)
        return JSONResponse(detail, headers={"Cache-Control": "no-store"})

    def home(self, request: Request) -> Response:
        token = request.query_params.get("token")
        if token is not None and self.token is not None:
            if not self.token.matches(token):
                return self.login_page(request, "That token is not valid.", error=True)
            return self.signed_in(request, self.token)
        try:
            self.require_operator(request, cookie=True)
        except Problem as problem:
            if problem.status == 401 and "text/html" in request.headers.get("accept", ""):
                return self.login_page(request, "Sign in with the operator token.")
            raise
        served = self.served()
        listing = operator.wave_list(self.repo, served)
        inv = self.inventory()
        waves = [operator.wave_detail(self.repo, served, inv, w["name"]) for w in listing["waves"]]
        return HTMLResponse(
            dashboard.render_dashboard(waves, listing["published"]),
            headers=self.html_headers(),
        )

    async def login(self, request: Request) -> Response:
        token = self.token
        if token is None:
            raise not_found(
                "operator-api-disabled",
                "the operator API is off; start the server with --operator-token-file",
            )
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > LOGIN_BODY_MAX:
                raise Problem(413, "too-large", "Content too large", "the form is too large")
        try:
            fields = parse_qs(body.decode("ascii"), strict_parsing=False)
        except UnicodeDecodeError:
            raise bad_request("bad-form", "the form is not URL-encoded ASCII") from None
        values = fields.get("token", [])
        if len(values) != 1 or not token.matches(values[0]):
            return self.login_page(request, "That token is not valid.", error=True)
        return self.signed_in(request, token)

    def signed_in(self, request: Request, token: OperatorToken) -> Response:
        response = RedirectResponse("/", status_code=303, headers={"Cache-Control": "no-store"})
        response.set_cookie(
            COOKIE,
            token.cookie_value,
            max_age=COOKIE_MAX_AGE,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    def login_page(self, request: Request, message: str, *, error: bool = False) -> Response:
        headers = self.html_headers()
        headers["WWW-Authenticate"] = (
            'Bearer realm="tufwaves", error="invalid_token"' if error else 'Bearer realm="tufwaves"'
        )
        return HTMLResponse(dashboard.render_login(message), status_code=401, headers=headers)

    @staticmethod
    def html_headers() -> dict[str, str]:
        return {
            "Cache-Control": "no-store",
            "Content-Security-Policy": dashboard.CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        }

    def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document(), headers={"Cache-Control": "no-cache"})


# -- errors ---------------------------------------------------------------------

REPORT_PROBLEMS = {
    "bad-report": (400, "Bad request"),
    "unknown-device": (404, "Not found"),
    "no-device-key": (403, "Forbidden"),
    "bad-signature": (403, "Forbidden"),
    "not-offered": (403, "Forbidden"),
    "replayed": (409, "Conflict"),
}
"""Status and title of each refusal of :func:`accept_report`."""


def _replica_problem() -> Problem:
    return Problem(
        503,
        "read-only-replica",
        "Service unavailable",
        "this server serves a read-only copy of the repository and cannot store "
        "reports; send them to the primary update server",
    )


async def _read_capped(request: Request, cap: int, what: str) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > cap:
        raise Problem(413, "too-large", "Content too large", f"{what} is at most {cap} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise Problem(413, "too-large", "Content too large", f"{what} is at most {cap} bytes")
    return body


async def _on_problem(request: Request, exc: Exception) -> Response:
    problem = cast(Problem, exc)
    return problem_response(problem, request.url.path)


async def _on_http(request: Request, exc: Exception) -> Response:
    exc = cast(HTTPException, exc)
    slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "HTTP error")
    detail = {404: "no such endpoint", 405: "this endpoint does not allow that method"}.get(
        exc.status_code, str(exc.detail)
    )
    return problem_response(
        Problem(exc.status_code, slug, title, detail, dict(exc.headers or {})), request.url.path
    )


async def _on_tufwaves(request: Request, exc: Exception) -> Response:
    if isinstance(exc, InputError):
        problem = bad_request("bad-input", str(exc))
    else:
        logger.error("request %s failed: %s", request.url.path, exc)
        problem = Problem(
            500, "server-error", "Internal server error", "the repository could not be read"
        )
    return problem_response(problem, request.url.path)


async def _on_error(request: Request, exc: Exception) -> Response:
    logger.exception("request %s failed", request.url.path, exc_info=exc)
    return problem_response(
        Problem(500, "server-error", "Internal server error", "the server failed"),
        request.url.path,
    )


Handler = Callable[[Request, Exception], Awaitable[Response]]


def create_app(
    repo_path: Path | str,
    *,
    operator_token: str | None = None,
    cache_bytes: int = CACHE_BYTES,
    controller: ControllerLoop | None = None,
    clock: Clock | None = None,
) -> Starlette:
    """The server for the repository at ``repo_path``.

    Without ``operator_token`` the operator API and the dashboard are off
    (they answer 404). With ``controller`` (started and stopped by the
    caller), every newly stored report pokes it, so the gates are evaluated
    soon after a batch of reports, in the controller's own thread.
    ``clock`` is the server's time (which waves have expired), by default
    the real UTC time; a simulation passes its own. Raises InputError if
    ``repo_path`` is not a tufwaves repository or the token is too weak.
    """
    Repository.open(repo_path)  # refuse a directory that is no repository
    token = OperatorToken(operator_token) if operator_token is not None else None
    app = _App(CachingRepository(Path(repo_path), cache_bytes, clock=clock), token, controller)
    routes = [
        Route("/", app.home, methods=["GET"]),
        Route("/login", app.login, methods=["POST"]),
        Route("/openapi.json", app.openapi, methods=["GET"]),
        Route("/metadata/{name:path}", app.metadata, methods=["GET"]),
        Route("/targets/{path:path}", app.targets, methods=["GET"]),
        Route("/v1/devices/{uuid}/bundle", app.bundle, methods=["GET"]),
        Route("/v1/devices/{uuid}/reports", app.reports, methods=["POST"]),
        Route("/v1/waves", app.waves, methods=["GET"]),
        Route("/v1/waves/{wave}", app.wave, methods=["GET"]),
    ]
    handlers: dict[int | type[Exception], Handler] = {
        Problem: _on_problem,
        HTTPException: _on_http,
        TufwavesError: _on_tufwaves,
        Exception: _on_error,
    }
    return Starlette(routes=routes, exception_handlers=handlers)
