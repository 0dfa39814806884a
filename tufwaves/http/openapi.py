"""The OpenAPI 3.1 description of the server, served at ``/openapi.json``.

``specs/server.openapi.json`` is this document, written by
``python -W ignore -m tufwaves.http.openapi > specs/server.openapi.json``; a test keeps
the two and the application's routes equal.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from tufwaves import __version__

__all__ = ["openapi_document"]


_PROBLEM_REF = "#/components/schemas/Problem"
_WAVE_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": _PROBLEM_REF}}},
    }


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_UUID = {
    "name": "uuid",
    "in": "path",
    "required": True,
    "description": "The device UUID, 8-4-4-4-12 hex digits (any case).",
    "schema": {"type": "string"},
}
_IF_NONE_MATCH = {
    "name": "If-None-Match",
    "in": "header",
    "required": False,
    "description": "An ETag from an earlier answer: 304 with an empty body if unchanged.",
    "schema": {"type": "string"},
}
_NULL_INT = {"type": ["integer", "null"], "minimum": 0}
_OPERATOR: list[dict[str, list[str]]] = [{"operatorToken": []}]
_NOT_MODIFIED = {"description": "Not modified (the ETag matched); the body is empty."}
_UNAVAILABLE = _problem(
    "Nothing is published yet, or a root rotation is being published (Retry-After)."
)

_WAVE_BRIEF: dict[str, Any] = {
    "type": "object",
    "required": ["name", "tag", "version", "status", "expires", "ripple_count", "href"],
    "properties": {
        "name": {"type": "string"},
        "tag": {"type": "string"},
        "version": {"type": "string", "description": "decimal integer as a string"},
        "status": {"enum": ["pending", "active", "paused", "cancelled", "complete"]},
        "expires": {"type": "string", "format": "date-time"},
        "ripple_count": {"type": "integer", "description": "published ripples"},
        "plan": {
            "oneOf": [{"$ref": "#/components/schemas/PlanBrief"}, {"type": "null"}],
            "description": "where a planned wave is in its signed plan; null without a plan",
        },
        "href": {"type": "string"},
    },
}

_PLAN_BRIEF: dict[str, Any] = {
    "type": "object",
    "required": ["stage_count", "current_stage", "current_stage_name", "started"],
    "properties": {
        "stage_count": {"type": "integer", "minimum": 1},
        "current_stage": {
            "type": ["integer", "null"],
            "minimum": 1,
            "description": "the stage of the last signed ripple (1 before any); "
            "null while the wave is pending",
        },
        "current_stage_name": {"type": ["string", "null"]},
        "started": {"type": "boolean", "description": "a ripple of the plan was signed"},
    },
}

_GATE_SUCCESS: dict[str, Any] = {
    "type": ["object", "null"],
    "properties": {
        "min_installed_ppm": {"type": "integer"},
        "min_reports": {"type": "integer"},
    },
}
_GATE_ABORT: dict[str, Any] = {
    "type": ["object", "null"],
    "properties": {
        "max_failed_ppm": {"type": "integer"},
        "min_reports": {"type": "integer"},
        "codes": {"type": "array", "items": {"type": "string"}},
        "action": {"enum": ["pause", "cancel"]},
    },
}

_PLAN_STAGE: dict[str, Any] = {
    "type": "object",
    "description": "a stage as signed (specs/metadata.md section 12) and how far the wave got",
    "required": [
        "number",
        "name",
        "size",
        "size_label",
        "cap",
        "cap_unit",
        "group",
        "not_before",
        "soak_seconds",
        "success",
        "abort",
        "timeout_seconds",
        "allowed",
        "started",
        "position",
        "ripples",
        "selected",
        "installed",
        "failed",
    ],
    "properties": {
        "number": {"type": "integer", "minimum": 1},
        "name": {"type": "string"},
        "size": {
            "type": "object",
            "description": "exactly one of devices, percent_ppm, fraction_ppm",
        },
        "size_label": {"type": "string", "description": "e.g. '5% of 200 = 10 devices'"},
        "cap": {
            "type": "integer",
            "description": "the cumulative cap: devices, or ppm for a fraction stage",
        },
        "cap_unit": {"enum": ["devices", "ppm"]},
        "group": {"type": ["string", "null"]},
        "not_before": {"type": ["string", "null"], "format": "date-time"},
        "soak_seconds": _NULL_INT,
        "success": _GATE_SUCCESS,
        "abort": _GATE_ABORT,
        "timeout_seconds": _NULL_INT,
        "allowed": {
            **_NULL_INT,
            "description": "what the signed ripples allow in total once this stage started "
            "(cumulative, in cap_unit); null before the stage started",
        },
        "started": {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "when the stage's first ripple was signed",
        },
        "position": {
            "enum": ["done", "current", "waiting"],
            "description": "current: the stage of the last ripple; done: started earlier; "
            "waiting: not started",
        },
        "ripples": {"type": "array", "items": {"type": "integer"}},
        "selected": {"type": "integer", "description": "devices this stage's ripples offered"},
        "installed": {"type": "integer", "description": "of them, latest report installed"},
        "failed": {"type": "integer", "description": "of them, latest report failed"},
    },
}

_PLAN_DETAIL: dict[str, Any] = {
    "allOf": [
        {"$ref": "#/components/schemas/PlanBrief"},
        {
            "type": "object",
            "required": ["eligible", "stages", "stage_starts"],
            "properties": {
                "eligible": {"type": "integer", "minimum": 1},
                "stages": {"type": "array", "items": {"$ref": "#/components/schemas/PlanStage"}},
                "stage_starts": {
                    "type": "object",
                    "description": "stage number (a string) -> when it started",
                    "additionalProperties": {"type": "string", "format": "date-time"},
                },
            },
        },
    ]
}

_PUBLISHED: dict[str, Any] = {
    "type": "object",
    "description": "The published state the answer was computed from.",
    "required": ["timestamp_version", "snapshot_version", "root_version"],
    "properties": {
        "timestamp_version": {"type": "integer"},
        "snapshot_version": {"type": "integer"},
        "root_version": {"type": "integer"},
    },
}

_RIPPLE: dict[str, Any] = {
    "type": "object",
    "required": [
        "index",
        "created",
        "encoding",
        "selector",
        "selected",
        "fraction",
        "installed",
        "failed",
        "silent",
    ],
    "properties": {
        "index": {"type": "integer", "minimum": 1},
        "created": {"type": "string", "format": "date-time"},
        "encoding": {"enum": ["list", "merkle-sha256", "fraction"]},
        "selector": {"type": "object", "description": "how the rollout chose devices"},
        "selected": {
            "type": "integer",
            "minimum": 0,
            "description": "devices the ripple names (a fraction ripple: inventory devices in it)",
        },
        "fraction": {"type": ["string", "null"], "description": "e.g. '5%' for fraction"},
        "installed": {
            **_NULL_INT,
            "description": "selected devices whose latest signed report for the wave is installed",
        },
        "failed": {
            **_NULL_INT,
            "description": "selected devices whose latest signed report for the wave is "
            "failed or rolled_back",
        },
        "silent": {
            "type": "integer",
            "minimum": 0,
            "description": "selected devices without any report",
        },
    },
}

_WAVE_DETAIL: dict[str, Any] = {
    "allOf": [
        {"$ref": "#/components/schemas/WaveBrief"},
        {
            "type": "object",
            "required": [
                "policy",
                "artifacts",
                "devices",
                "ripples",
                "reports",
                "recent_failures",
                "published",
            ],
            "properties": {
                "policy": {"type": "object"},
                "plan": {
                    "oneOf": [{"$ref": "#/components/schemas/PlanDetail"}, {"type": "null"}],
                    "description": "the signed plan, its stages and where the wave is in it",
                },
                "artifacts": {"type": "array", "items": {"type": "object"}},
                "devices": {
                    "type": ["object", "null"],
                    "description": "inventory counts for the wave's tag and hardware; "
                    "null while the wave is pending",
                    "properties": {
                        "total": {"type": "integer"},
                        "eligible": {"type": "integer"},
                        "selected": {"type": "integer"},
                        "updated": {"type": "integer"},
                    },
                },
                "ripples": {"type": "array", "items": {"$ref": "#/components/schemas/Ripple"}},
                "reports": {
                    "type": "object",
                    "required": ["available", "detail"],
                    "properties": {
                        "available": {"type": "boolean"},
                        "detail": {"type": "string"},
                    },
                },
                "recent_failures": {
                    "type": "array",
                    "description": "latest failed installs from device reports, newest first",
                    "items": {
                        "type": "object",
                        "properties": {
                            "device": {"type": "string"},
                            "ripple": {"type": "integer"},
                            "at": {"type": "string", "format": "date-time"},
                            "reason": {"type": "string", "description": "the failure code"},
                            "status": {"enum": ["failed", "rolled_back"]},
                            "installed_version": _NULL_INT,
                        },
                    },
                },
                "published": {"$ref": "#/components/schemas/Published"},
            },
        },
    ]
}


_REPORT_ACK: dict[str, Any] = {
    "type": "object",
    "required": ["stored", "device", "counter", "wave", "ripple"],
    "properties": {
        "stored": {"type": "boolean", "description": "false: stored by an earlier request"},
        "device": {"type": "string"},
        "counter": {"type": "integer", "minimum": 1},
        "wave": {"type": "string"},
        "ripple": {"type": "integer", "minimum": 1},
    },
}

_REPORT_ENVELOPE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["signed", "signatures"],
    "properties": {
        "signed": {
            "type": "object",
            "additionalProperties": False,
            "required": [
                "_type",
                "spec_version",
                "device",
                "wave",
                "version",
                "status",
                "code",
                "installed_version",
                "counter",
                "device_time",
            ],
            "properties": {
                "_type": {"const": "tufwaves-report"},
                "spec_version": {"const": 1},
                "device": {"type": "string", "description": "lowercase UUID"},
                "wave": {"type": "string", "pattern": _WAVE_PATTERN},
                "version": {"type": "integer", "minimum": 0},
                "status": {
                    "enum": ["downloading", "installing", "installed", "failed", "rolled_back"]
                },
                "code": {"type": ["string", "null"], "pattern": "^[a-z0-9][a-z0-9_.-]{0,63}$"},
                "installed_version": _NULL_INT,
                "counter": {"type": "integer", "minimum": 1, "maximum": 9007199254740991},
                "device_time": {"type": "string", "description": "YYYY-MM-DDTHH:MM:SSZ"},
            },
        },
        "signatures": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["keyid", "sig"],
                "properties": {
                    "keyid": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    "sig": {"type": "string", "pattern": "^[0-9a-f]{128}$"},
                },
            },
        },
    },
}


def openapi_document() -> dict[str, Any]:
    immutable = "Cache-Control: public, max-age=31536000, immutable."
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tufwaves update server",
            "version": __version__,
            "description": "TUF repository, per-device bundles and the operator API "
            "of tufwaves (specs/server.md). Every error is an RFC 9457 problem.",
        },
        "paths": {
            "/metadata/{name}": {
                "get": {
                    "summary": "TUF metadata: timestamp.json or N.ROLE.json",
                    "description": "timestamp.json: Cache-Control no-cache, ETag, 304 on "
                    "If-None-Match. N.ROLE.json (published versions only): " + immutable,
                    "parameters": [
                        {
                            "name": "name",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        _IF_NONE_MATCH,
                    ],
                    "responses": {
                        "200": _json("The file's exact bytes.", {"type": "object"}),
                        "304": _NOT_MODIFIED,
                        "400": _problem("A traversal attempt ('..', empty segments)."),
                        "404": _problem("No such published file."),
                        "503": _UNAVAILABLE,
                    },
                }
            },
            "/targets/{path}": {
                "get": {
                    "summary": "An artifact under its consistent-snapshot name",
                    "description": immutable + " Supports Range (206, 416).",
                    "parameters": [
                        {
                            "name": "path",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "Range",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The artifact.",
                            "content": {"application/octet-stream": {}},
                        },
                        "206": {"description": "The requested range(s)."},
                        "400": _problem("A traversal attempt or a malformed Range."),
                        "404": _problem("No such artifact."),
                        "416": _problem("The range starts beyond the file (Content-Range)."),
                    },
                }
            },
            "/v1/devices/{uuid}/bundle": {
                "get": {
                    "summary": "The device's bundle (specs/bundle.md)",
                    "description": "Built from one published state. ETag; 304 with an "
                    "empty body when If-None-Match matches. Cache-Control: private, no-cache.",
                    "parameters": [
                        _UUID,
                        {
                            "name": "since-root",
                            "in": "query",
                            "required": False,
                            "description": "The root version the device trusts (default 1).",
                            "schema": {"type": "integer", "minimum": 1},
                        },
                        _IF_NONE_MATCH,
                    ],
                    "responses": {
                        "200": _json("The bundle.", {"$ref": "#/components/schemas/Bundle"}),
                        "304": _NOT_MODIFIED,
                        "400": _problem("Malformed UUID or since-root."),
                        "404": _problem("The device is not in the inventory."),
                        "503": _UNAVAILABLE,
                    },
                }
            },
            "/v1/devices/{uuid}/reports": {
                "post": {
                    "summary": "A device-signed install report (specs/reports.md)",
                    "parameters": [_UUID],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ReportEnvelope"}
                            }
                        },
                    },
                    "responses": {
                        "201": _json("Stored (committed).", _REPORT_ACK),
                        "200": _json("This very report was stored before.", _REPORT_ACK),
                        "400": _problem("Malformed UUID or report (bad-report)."),
                        "403": _problem(
                            "No registered key, bad signature, or a wave never offered "
                            "to the device."
                        ),
                        "404": _problem("The device is not in the inventory."),
                        "409": _problem("Replayed: the counter is not above the last one."),
                        "413": _problem("The body is over 2048 bytes."),
                        "415": _problem("Content-Type is not application/json."),
                        "503": _problem(
                            "A read-only replica (read-only-replica), or nothing published."
                        ),
                    },
                }
            },
            "/v1/waves": {
                "get": {
                    "summary": "Every wave, published or pending",
                    "security": _OPERATOR,
                    "responses": {
                        "200": _json(
                            "The waves.",
                            {
                                "type": "object",
                                "required": ["published", "waves"],
                                "properties": {
                                    "published": {"$ref": "#/components/schemas/Published"},
                                    "waves": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/WaveBrief"},
                                    },
                                },
                            },
                        ),
                        "401": _problem("No or a wrong operator token (WWW-Authenticate)."),
                        "404": _problem("The operator API is off (no token file)."),
                        "503": _UNAVAILABLE,
                    },
                }
            },
            "/v1/waves/{wave}": {
                "get": {
                    "summary": "One wave: ripples, per-ripple counts, recent failures",
                    "security": _OPERATOR,
                    "parameters": [
                        {
                            "name": "wave",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "pattern": _WAVE_PATTERN},
                        }
                    ],
                    "responses": {
                        "200": _json("The wave.", {"$ref": "#/components/schemas/WaveDetail"}),
                        "400": _problem("Malformed wave name."),
                        "401": _problem("No or a wrong operator token (WWW-Authenticate)."),
                        "404": _problem("No such wave, or the operator API is off."),
                        "503": _UNAVAILABLE,
                    },
                }
            },
            "/": {
                "get": {
                    "summary": "The operator dashboard (HTML)",
                    "description": "Needs the operator token as a bearer token or the "
                    "dashboard cookie. ?token=TOKEN checks the token, sets the cookie and "
                    "redirects to /. Without credentials a browser (Accept: text/html) gets "
                    "a sign-in form with status 401.",
                    "security": [{"operatorToken": []}, {"dashboardCookie": []}],
                    "parameters": [
                        {
                            "name": "token",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {"description": "The dashboard.", "content": {"text/html": {}}},
                        "303": {"description": "Signed in: the cookie is set; go to /."},
                        "401": _problem("Not signed in (HTML sign-in form for browsers)."),
                        "404": _problem("The operator API is off (no token file)."),
                    },
                }
            },
            "/login": {
                "post": {
                    "summary": "Sign in to the dashboard with the operator token",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/x-www-form-urlencoded": {
                                "schema": {
                                    "type": "object",
                                    "required": ["token"],
                                    "properties": {"token": {"type": "string"}},
                                }
                            }
                        },
                    },
                    "responses": {
                        "303": {"description": "Signed in: the cookie is set; go to /."},
                        "400": _problem("The form is not URL-encoded ASCII."),
                        "401": {"description": "Wrong token: the form again (HTML)."},
                        "404": _problem("The operator API is off (no token file)."),
                        "413": _problem("The form is larger than 4096 bytes."),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json("OpenAPI 3.1", {"type": "object"})},
                }
            },
        },
        "components": {
            "securitySchemes": {
                "operatorToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The token in the file given to --operator-token-file.",
                },
                "dashboardCookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "tufwaves_operator",
                    "description": "Set by POST /login or GET /?token=; dashboard only.",
                },
            },
            "schemas": {
                "ReportEnvelope": _REPORT_ENVELOPE,
                "Problem": {
                    "type": "object",
                    "description": "RFC 9457 problem details.",
                    "required": ["type", "title", "status", "detail"],
                    "properties": {
                        "type": {"type": "string", "format": "uri"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "instance": {"type": "string"},
                    },
                },
                "Bundle": {
                    "type": "object",
                    "description": "specs/bundle.md",
                    "required": ["format", "version", "device", "files", "evidence"],
                    "properties": {
                        "format": {"const": "tufwaves-bundle"},
                        "version": {"const": 1},
                        "device": {"type": "string"},
                        "files": {"type": "array", "items": {"type": "object"}},
                        "evidence": {"type": "array", "items": {"type": "object"}},
                    },
                },
                "Published": _PUBLISHED,
                "WaveBrief": _WAVE_BRIEF,
                "PlanBrief": _PLAN_BRIEF,
                "PlanStage": _PLAN_STAGE,
                "PlanDetail": _PLAN_DETAIL,
                "Ripple": _RIPPLE,
                "WaveDetail": _WAVE_DETAIL,
            },
        },
    }


def main() -> None:
    sys.stdout.write(json.dumps(openapi_document(), indent=2) + "\n")


if __name__ == "__main__":
    main()
