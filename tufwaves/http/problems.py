"""RFC 9457 problem details: every error the server answers is one of these.

``type`` is ``urn:tufwaves:problem:<slug>``; the slugs are listed in
``specs/server.md`` ("Problems"). ``detail`` is a sentence for people and
never carries file paths or internal state.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.responses import Response

__all__ = ["PROBLEM_TYPE_PREFIX", "Problem", "problem_response"]

PROBLEM_TYPE_PREFIX = "urn:tufwaves:problem:"
MEDIA_TYPE = "application/problem+json"


class Problem(Exception):
    """Raised by a handler to answer with a problem document."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})


def problem_response(problem: Problem, instance: str | None = None) -> Response:
    body: dict[str, object] = {
        "type": PROBLEM_TYPE_PREFIX + problem.slug,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
    }
    if instance is not None:
        body["instance"] = instance
    headers = {"Cache-Control": "no-store", **problem.headers}
    return Response(
        json.dumps(body, sort_keys=True).encode() + b"\n",
        status_code=problem.status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


def bad_request(slug: str, detail: str) -> Problem:
    return Problem(400, slug, "Bad request", detail)


def not_found(slug: str, detail: str) -> Problem:
    return Problem(404, slug, "Not found", detail)
