"""The HTTP app through Starlette's TestClient: headers, caching, problems, auth."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from tests.conftest import KeyStore, RepoFactory
from tests.http_support import TOKEN, Served, dev, rolled_out_repo
from tufwaves.device.bundle import Bundle
from tufwaves.errors import InputError
from tufwaves.http import create_app
from tufwaves.http.openapi import openapi_document
from tufwaves.server.rollout import Selector, open_inventory, rollout
from tufwaves.verify import DeviceIdentity, Verifier

SPEC = Path(__file__).parent.parent / "specs" / "server.openapi.json"
IMMUTABLE = "public, max-age=31536000, immutable"


@pytest.fixture
def served(make_repo: RepoFactory, keystore: KeyStore, artifact: Path) -> Served:
    return rolled_out_repo(make_repo(), keystore, artifact)


@pytest.fixture
def client(served: Served) -> TestClient:
    return TestClient(create_app(served.repo.path, operator_token=TOKEN))


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def assert_problem(response: object, status: int, slug: str | None = None) -> dict[str, object]:
    assert response.status_code == status, response.text
    headers = response.headers
    assert headers["content-type"] == "application/problem+json"
    body: dict[str, object] = json.loads(response.content)
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == status
    if slug is not None:
        assert body["type"] == f"urn:tufwaves:problem:{slug}"
    return body


# -- TUF repository ---------------------------------------------------------------


def test_timestamp_no_cache_etag_and_304(client: TestClient, served: Served) -> None:
    r = client.get("/metadata/timestamp.json")
    assert r.status_code == 200
    assert r.content == (served.repo.metadata_dir / "timestamp.json").read_bytes()
    assert r.headers["cache-control"] == "no-cache"
    etag = r.headers["etag"]
    head = client.head("/metadata/timestamp.json")
    assert head.status_code == 200 and head.content == b"" and head.headers["etag"] == etag
    again = client.get("/metadata/timestamp.json", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    served.repo.refresh()
    fresh = client.get("/metadata/timestamp.json", headers={"If-None-Match": etag})
    assert fresh.status_code == 200 and fresh.headers["etag"] != etag


def test_versioned_metadata_is_immutable(client: TestClient, served: Served) -> None:
    state = served.repo.state()
    for role, version in [
        ("root", 1),
        ("snapshot", state.snapshot.signed.version),
        ("targets", state.version_of("targets")),
        ("wave.w1", state.version_of("wave.w1")),
        ("ripple.w1.1", 1),
    ]:
        r = client.get(f"/metadata/{version}.{role}.json")
        assert r.status_code == 200, role
        assert r.content == served.repo.role_bytes(role, version)
        assert r.headers["cache-control"] == IMMUTABLE
    assert_problem(client.get("/metadata/2.root.json"), 404, "not-found")
    assert_problem(client.get("/metadata/root.json"), 404)
    assert_problem(client.get("/metadata/1.timestamp.json"), 404)


def test_unpublished_versions_are_not_served(client: TestClient, served: Served) -> None:
    """A file written by a publish still in progress is not served (nor cached)."""
    snap = served.repo.state().snapshot.signed.version
    early = served.repo.metadata_dir / f"{snap + 1}.snapshot.json"
    early.write_bytes(b"{}")
    assert_problem(client.get(f"/metadata/{snap + 1}.snapshot.json"), 404)
    assert_problem(client.get("/metadata/9.ripple.w1.1.json"), 404)


@pytest.mark.parametrize(
    "path",
    [
        "/metadata/../tufwaves.json",
        "/metadata/%2e%2e/tufwaves.json",
        "/metadata/..%2Ftufwaves.json",
        "/targets/../tufwaves.json",
        "/targets/..%2F..%2Fetc%2Fpasswd",
        "/targets/waves/%2e%2e/%2e%2e/keys/x",
        "/targets/a//b",
        "/targets/a%5C..%5Cb",
    ],
)
def test_traversal_is_refused(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code in (400, 404)
    assert_problem(r, r.status_code)
    assert b"online_keys" not in r.content


def test_targets_symlink_out_of_tree_is_refused(client: TestClient, served: Served) -> None:
    (served.repo.targets_dir / "escape").symlink_to(served.repo.path / "tufwaves.json")
    assert_problem(client.get("/targets/escape"), 404)


def _artifact_path(served: Served) -> tuple[str, bytes]:
    files = [p for p in served.repo.targets_dir.rglob("*") if p.is_file()]
    assert files
    path = files[0]
    return str(path.relative_to(served.repo.targets_dir)), path.read_bytes()


def test_artifact_ranges(client: TestClient, served: Served) -> None:
    rel, data = _artifact_path(served)
    assert re.match(r"waves/w1/hw1/[0-9a-f]{64}\.", rel)
    full = client.get(f"/targets/{rel}")
    assert full.status_code == 200 and full.content == data
    assert full.headers["cache-control"] == IMMUTABLE
    assert full.headers["accept-ranges"] == "bytes"
    part = client.get(f"/targets/{rel}", headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"
    tail = client.get(f"/targets/{rel}", headers={"Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == data[-5:]
    beyond = client.get(f"/targets/{rel}", headers={"Range": f"bytes={len(data)}-"})
    assert_problem(beyond, 416, "range-not-satisfiable")
    assert beyond.headers["content-range"] == f"bytes */{len(data)}"
    assert_problem(client.get(f"/targets/{rel}", headers={"Range": "lines=1-2"}), 400)
    assert_problem(client.get("/targets/waves/w1/hw1/nope.img"), 404)


# -- bundles ------------------------------------------------------------------------


def test_bundle_verifies_and_polls_with_304(client: TestClient, served: Served) -> None:
    url = f"/v1/devices/{served.member.upper()}/bundle"
    r = client.get(url)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "private, no-cache"
    bundle = Bundle.from_bytes(r.content)
    assert bundle.device == served.member
    verifier = Verifier.from_trusted_root(served.repo.role_bytes("root", 1))
    decision = verifier.decide(r.content, DeviceIdentity(served.member, "hw1", "prod", 5))
    assert decision.allowed, decision.message
    etag = r.headers["etag"]
    again = client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert client.get(url, headers={"If-None-Match": f'W/"x", {etag}'}).status_code == 304
    # A new published state changes the bundle (the timestamp is new): no 304.
    with open_inventory(served.repo) as inv:
        rollout(served.repo, inv, "w1", Selector(uuids=(dev(7),)))
    changed = client.get(url, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert Bundle.from_bytes(changed.content).files[1].version > bundle.files[1].version


def test_bundle_etag_is_the_same_in_every_worker_and_follows_the_inventory(
    served: Served,
) -> None:
    # Two app instances (two workers) give the same bytes and the same ETag;
    # the ETag is decided before the bundle is built, from what it will hold.
    a = TestClient(create_app(served.repo.path))
    b = TestClient(create_app(served.repo.path))
    url = f"/v1/devices/{served.member}/bundle"
    ra, rb = a.get(url), b.get(url)
    assert ra.status_code == rb.status_code == 200
    assert ra.content == rb.content and ra.headers["etag"] == rb.headers["etag"]
    assert b.get(url, headers={"If-None-Match": ra.headers["etag"]}).status_code == 304
    other = a.get(f"/v1/devices/{dev(2)}/bundle")
    assert other.status_code == 200 and other.headers["etag"] != ra.headers["etag"]
    # The inventory learns the device runs version 10: wave w1 no longer
    # matters to it, so its bundle (and ETag) change without a new publish.
    with open_inventory(served.repo) as inv:
        inv.report(served.member, 10)
    changed = a.get(url, headers={"If-None-Match": ra.headers["etag"]})
    assert changed.status_code == 200 and changed.headers["etag"] != ra.headers["etag"]
    assert not [f for f in Bundle.from_bytes(changed.content).files if f.role.startswith("wave.")]
    assert a.get(url, headers={"If-None-Match": changed.headers["etag"]}).status_code == 304


def test_bundle_since_root(client: TestClient, served: Served) -> None:
    r = client.get(f"/v1/devices/{served.member}/bundle?since-root=1")
    assert r.status_code == 200
    assert Bundle.from_bytes(r.content).files[0].role == "timestamp"
    for bad in ("0", "-1", "x", "1.0", "01", "99999999999999999999"):
        assert_problem(
            client.get(f"/v1/devices/{served.member}/bundle?since-root={bad}"),
            400,
            "bad-since-root",
        )
    assert_problem(client.get(f"/v1/devices/{served.member}/bundle?since-root=2"), 400)
    assert_problem(client.get(f"/v1/devices/{served.member}/bundle?since-root=1&since-root=1"), 400)


def test_bundle_bad_devices(client: TestClient, served: Served) -> None:
    assert_problem(client.get(f"/v1/devices/{dev(999)}/bundle"), 404, "unknown-device")
    for bad in ("not-a-uuid", "1234", dev(1) + "0", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"):
        assert_problem(client.get(f"/v1/devices/{bad}/bundle"), 400, "malformed-uuid")
    reports = f"/v1/devices/{dev(1)}/reports"
    assert_problem(client.post(reports, content=b"{}"), 415, "unsupported-media-type")
    json_type = {"Content-Type": "application/json"}
    assert_problem(client.post(reports, content=b"{}", headers=json_type), 400, "bad-report")
    assert_problem(client.post("/v1/devices/nope/reports", content=b"{}"), 400)
    assert_problem(client.post(f"/v1/devices/{dev(1)}/bundle"), 405, "method-not-allowed")
    assert_problem(client.get("/v2/nothing"), 404, "not-found")


# -- operator API -------------------------------------------------------------------------


def test_operator_api(client: TestClient, served: Served) -> None:
    listing = client.get("/v1/waves", headers=AUTH)
    assert listing.status_code == 200
    body = listing.json()
    assert [w["name"] for w in body["waves"]] == ["w1"]
    assert body["waves"][0]["ripple_count"] == 1 and body["waves"][0]["status"] == "active"
    wave = client.get("/v1/waves/w1", headers=AUTH).json()
    assert wave["devices"]["selected"] == 3
    (ripple,) = wave["ripples"]
    assert ripple["index"] == 1 and ripple["selected"] == 3
    assert (ripple["installed"], ripple["failed"], ripple["silent"]) == (0, 0, 3)
    assert wave["reports"]["available"] is True
    assert wave["recent_failures"] == []
    assert_problem(client.get("/v1/waves/nope", headers=AUTH), 404, "unknown-wave")
    assert_problem(client.get("/v1/waves/bad.name", headers=AUTH), 400, "malformed-wave")


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token-0000000000"}, {"Authorization": f"Basic {TOKEN}"}],
)
def test_operator_api_needs_the_token(client: TestClient, headers: dict[str, str]) -> None:
    for path in ("/v1/waves", "/v1/waves/w1", "/"):
        r = client.get(path, headers=headers)
        assert_problem(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_operator_api_off_without_token(served: Served) -> None:
    client = TestClient(create_app(served.repo.path))
    for path in ("/v1/waves", "/v1/waves/w1", "/"):
        assert_problem(client.get(path, headers=AUTH), 404, "operator-api-disabled")
    assert_problem(client.post("/login", data={"token": TOKEN}), 404)
    assert client.get("/metadata/timestamp.json").status_code == 200


def test_weak_token_and_non_repository_refused(served: Served, tmp_path: Path) -> None:
    with pytest.raises(InputError):
        create_app(served.repo.path, operator_token="short")
    with pytest.raises(InputError):
        create_app(tmp_path / "nothing")


def test_dashboard_cookie_flow(client: TestClient) -> None:
    page = client.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 401 and "<form" in page.text
    assert "www-authenticate" in page.headers
    wrong = client.post("/login", data={"token": "wrong"}, follow_redirects=False)
    assert wrong.status_code == 401
    ok = client.post("/login", data={"token": TOKEN}, follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/"
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and TOKEN not in cookie
    home = client.get("/")
    assert home.status_code == 200 and "Wave" in home.text
    assert "script-src" not in home.headers["content-security-policy"]
    fresh = TestClient(client.app)
    via_query = fresh.get(f"/?token={TOKEN}", follow_redirects=False)
    assert via_query.status_code == 303
    assert fresh.get("/").status_code == 200
    assert_problem(client.get("/v1/waves"), 401)  # the cookie is for the dashboard only


def test_dashboard_escapes(served: Served, keystore: KeyStore, artifact: Path) -> None:
    from tests.conftest import publish_wave

    publish_wave(served.repo, keystore, artifact, name="x-y_z", version=11)
    client = TestClient(create_app(served.repo.path, operator_token=TOKEN))
    page = client.get("/", headers=AUTH).text
    assert 'id="wave-x-y_z"' in page and 'id="wave-w1"' in page
    assert "<script" not in page


# -- OpenAPI ---------------------------------------------------------------------------------


def _route_set(client: TestClient) -> set[tuple[str, str]]:
    out = set()
    for route in client.app.routes:  # type: ignore[attr-defined]
        assert isinstance(route, Route)
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        for method in route.methods or ():
            if method != "HEAD":
                out.add((path, method.lower()))
    return out


def test_openapi_matches_routes_and_spec_file(client: TestClient) -> None:
    served_doc = client.get("/openapi.json").json()
    assert served_doc == openapi_document()
    assert served_doc["openapi"].startswith("3.1")
    documented = {(p, m) for p, ops in served_doc["paths"].items() for m in ops}
    assert documented == _route_set(client)
    assert json.loads(SPEC.read_text()) == served_doc, (
        "specs/server.openapi.json is stale: python -W ignore -m tufwaves.http.openapi > "
        "specs/server.openapi.json"
    )
