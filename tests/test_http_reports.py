"""POST /v1/devices/{uuid}/reports: device-signed install reports (specs/reports.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from securesystemslib.signer import CryptoSigner
from starlette.testclient import TestClient

from tests.conftest import KeyStore, RepoFactory
from tests.http_support import FLEET_SIZE, TOKEN, Served, dev, rolled_out_repo
from tufwaves.device.membership import fraction_member
from tufwaves.device.report import MAX_REPORT_BYTES, DeviceReport, sign_report
from tufwaves.http import create_app
from tufwaves.server.rollout import Selector, load_wave, open_inventory, rollout

AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}
SIGNERS = {n: CryptoSigner.generate_ed25519() for n in (*range(1, 4), FLEET_SIZE - 1)}


def public(n: int) -> str:
    return str(SIGNERS[n].public_key.to_dict()["keyval"]["public"])


@pytest.fixture
def served(make_repo: RepoFactory, keystore: KeyStore, artifact: Path) -> Served:
    served = rolled_out_repo(make_repo(), keystore, artifact)
    with open_inventory(served.repo) as inv:
        for n in SIGNERS:
            inv.set_public_key(dev(n), public(n))
    return served


@pytest.fixture
def client(served: Served) -> TestClient:
    return TestClient(create_app(served.repo.path, operator_token=TOKEN))


def report(n: int, counter: int, status: str = "installed", **kw: Any) -> DeviceReport:
    fields: dict[str, Any] = {"wave": "w1", "version": 10}
    if status == "installed":
        fields["installed_version"] = 10
    if status == "failed":
        fields["code"] = "hash-mismatch"
    fields.update(kw)
    return sign_report(SIGNERS[n], device=dev(n), status=status, counter=counter, **fields)


def post(client: TestClient, n: int, body: bytes, headers: dict[str, str] = JSON) -> Any:
    return client.post(f"/v1/devices/{dev(n)}/reports", content=body, headers=headers)


def problem(response: Any, status: int, slug: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == f"urn:tufwaves:problem:{slug}"


def stored(served: Served, n: int) -> list[int]:
    with open_inventory(served.repo, read_only=True) as inv:
        return [r.counter for r in inv.device_reports(dev(n))]


def test_a_report_is_stored_and_acknowledged(client: TestClient, served: Served) -> None:
    r = post(client, 1, report(1, 1, "downloading").to_bytes())
    assert r.status_code == 201, r.text
    assert r.json() == {"stored": True, "device": dev(1), "counter": 1, "wave": "w1", "ripple": 1}
    assert r.headers["cache-control"] == "no-store"
    done = report(1, 2).to_bytes()
    assert post(client, 1, done).status_code == 201
    again = post(client, 1, done)  # a resend after a lost answer: acknowledged, not stored twice
    assert again.status_code == 200 and again.json()["stored"] is False
    assert stored(served, 1) == [2, 1]
    with open_inventory(served.repo, read_only=True) as inv:
        device = inv.get(dev(1))
    assert device is not None and device.installed_version == 10 and device.last_seen is not None
    # An uppercase UUID in the URL names the same device.
    late = report(1, 3, "rolled_back", installed_version=5).to_bytes()
    assert client.post(
        f"/v1/devices/{dev(1).upper()}/reports", content=late, headers=JSON
    ).is_success


def test_refusals_store_nothing(client: TestClient, served: Served) -> None:
    assert post(client, 1, report(1, 5, "installing").to_bytes()).status_code == 201
    problem(post(client, 1, report(1, 5, "installed").to_bytes()), 409, "replayed")
    problem(post(client, 1, report(1, 4, "installed").to_bytes()), 409, "replayed")
    good = report(1, 6).to_bytes()
    problem(post(client, 1, good, {"Content-Type": "text/plain"}), 415, "unsupported-media-type")
    problem(post(client, 1, good, {}), 415, "unsupported-media-type")
    problem(post(client, 1, b"{" + b" " * MAX_REPORT_BYTES + b"}"), 413, "too-large")
    problem(post(client, 1, b"{not json"), 400, "bad-report")
    problem(
        post(client, 1, json.dumps({"signed": {}, "signatures": []}).encode()), 400, "bad-report"
    )
    problem(post(client, 2, good), 400, "bad-report")  # signed for device 1, sent for 2
    forged = json.loads(good)
    forged["signed"]["counter"] = 7  # changed after signing
    problem(post(client, 1, json.dumps(forged).encode()), 403, "bad-signature")
    other_key = sign_report(
        SIGNERS[2], device=dev(1), wave="w1", version=10, status="installing", counter=8
    )
    problem(post(client, 1, other_key.to_bytes()), 403, "bad-signature")
    problem(
        client.post("/v1/devices/not-a-uuid/reports", content=good, headers=JSON),
        400,
        "malformed-uuid",
    )
    unknown = sign_report(
        SIGNERS[1], device=dev(999), wave="w1", version=10, status="installing", counter=1
    )
    problem(
        client.post(f"/v1/devices/{dev(999)}/reports", content=unknown.to_bytes(), headers=JSON),
        404,
        "unknown-device",
    )
    # The outsider has a key but was never offered w1; device 4 has no key at all.
    problem(post(client, FLEET_SIZE - 1, report(FLEET_SIZE - 1, 1).to_bytes()), 403, "not-offered")
    keyless = sign_report(
        SIGNERS[1], device=dev(4), wave="w1", version=10, status="installing", counter=1
    )
    problem(post(client, 4, keyless.to_bytes()), 403, "no-device-key")
    problem(
        post(client, 1, report(1, 9, version=11, installed_version=11).to_bytes()),
        403,
        "not-offered",
    )
    problem(post(client, 1, report(1, 9, wave="nope").to_bytes()), 403, "not-offered")
    assert stored(served, 1) == [5]
    assert stored(served, FLEET_SIZE - 1) == [] and stored(served, 4) == []


def test_fraction_members_may_report(served: Served, client: TestClient) -> None:
    with open_inventory(served.repo) as inv:
        rollout(served.repo, inv, "w1", Selector(fraction_ppm=500_000))
        salt = load_wave(served.repo, "w1").fraction_salt
        inside = [n for n in range(4, FLEET_SIZE) if fraction_member(salt, dev(n), 500_000)]
        outside = [n for n in range(4, FLEET_SIZE) if n not in inside]
        signer = CryptoSigner.generate_ed25519()
        key = str(signer.public_key.to_dict()["keyval"]["public"])
        for n in (inside[0], outside[0]):
            inv.set_public_key(dev(n), key)

    def send(n: int) -> Any:
        envelope = sign_report(
            signer, device=dev(n), wave="w1", version=10, status="failed", code="e1", counter=1
        )
        return post(client, n, envelope.to_bytes())

    accepted = send(inside[0])
    assert accepted.status_code == 201 and accepted.json()["ripple"] == 2
    problem(send(outside[0]), 403, "not-offered")
    wave = client.get("/v1/waves/w1", headers=AUTH).json()
    fraction = wave["ripples"][1]
    # A fraction ripple's devices are the inventory's devices that fall in it
    # (every device of this fleet has the wave's tag and hardware id).
    members = [n for n in range(FLEET_SIZE) if fraction_member(salt, dev(n), 500_000)]
    assert fraction["selected"] == len(members)
    assert (fraction["installed"], fraction["failed"], fraction["silent"]) == (
        0,
        1,
        len(members) - 1,
    )
    assert wave["recent_failures"][0]["device"] == dev(inside[0])


def test_operator_api_and_dashboard_count_reports(client: TestClient) -> None:
    assert post(client, 1, report(1, 1).to_bytes()).status_code == 201
    assert post(client, 2, report(2, 1, "installing").to_bytes()).status_code == 201
    assert (
        post(client, 2, report(2, 2, "failed", installed_version=5).to_bytes()).status_code == 201
    )
    wave = client.get("/v1/waves/w1", headers=AUTH).json()
    (ripple,) = wave["ripples"]
    assert (ripple["installed"], ripple["failed"], ripple["silent"]) == (1, 1, 1)
    assert wave["reports"]["available"] is True
    (failure,) = wave["recent_failures"]
    assert failure["device"] == dev(2) and failure["reason"] == "hash-mismatch"
    assert failure["ripple"] == 1 and failure["status"] == "failed"
    page = client.get("/", headers=AUTH).text
    assert "hash-mismatch" in page and dev(2) in page


# -- property: a mutated envelope is never stored ------------------------------------

VALID = report(1, 1, "installing").to_bytes()


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    body = bytearray(VALID)
    kind = draw(st.sampled_from(["byte", "truncate", "field", "signature"]))
    if kind == "byte":
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(0, len(body) - 1))
            body[i] = draw(st.integers(0, 255).filter(lambda b, old=body[i]: b != old))
        return bytes(body)
    if kind == "truncate":
        return bytes(body[: draw(st.integers(0, len(body) - 1))])
    data = json.loads(VALID)
    if kind == "field":
        key = draw(st.sampled_from(sorted(data["signed"])))
        data["signed"][key] = draw(
            st.one_of(
                st.none(),
                st.booleans(),
                st.integers(-(2**64), 2**64),
                st.text(max_size=20),
                st.lists(st.integers(), max_size=2),
            ).filter(lambda v, old=data["signed"][key]: v != old or type(v) is not type(old))
        )
    else:
        data["signatures"] = draw(
            st.sampled_from(
                [
                    [],
                    [data["signatures"][0], data["signatures"][0]],
                    [{"keyid": data["signatures"][0]["keyid"], "sig": "00" * 64}],
                    [{"keyid": "00" * 32, "sig": data["signatures"][0]["sig"]}],
                    {"keyid": "x"},
                ]
            )
        )
    return json.dumps(data).encode()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=mutations())
def test_mutated_envelopes_are_refused_and_never_stored(
    client: TestClient, served: Served, body: bytes
) -> None:
    r = post(client, 1, body)
    assert 400 <= r.status_code < 500, (r.status_code, body)
    assert r.headers["content-type"] == "application/problem+json"
    assert stored(served, 1) == []
