"""The device report envelope (specs/reports.md): every malformed field is refused by name."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner

from tufwaves.device.report import check_public_key, parse_report, sign_report, verify_report
from tufwaves.errors import InputError, VerificationError

DEVICE = "3f2a0c1e-0000-4000-8000-000000000001"
AT = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def signer() -> CryptoSigner:
    return CryptoSigner.generate_ed25519()


def envelope(signer: CryptoSigner, **kw: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "device": DEVICE, "wave": "w1", "version": 10, "status": "failed",
        "code": "hash-mismatch", "installed_version": 9, "counter": 7, "device_time": AT,
    }  # fmt: skip
    fields.update(kw)
    report = sign_report(signer, **fields)
    data: dict[str, Any] = json.loads(report.to_bytes())
    return data


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = doc
        for p in parents:
            target = target[int(p)] if p.isdigit() else target[p]
        target[int(last) if last.isdigit() else last] = value

    return change


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        del doc["signed"][path]

    return change


CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("type", _set("signed._type", "tuf-report"), "_type"),
    ("spec-version", _set("signed.spec_version", 2), "spec_version"),
    ("spec-version-bool", _set("signed.spec_version", True), "spec_version"),
    ("device-uppercase", _set("signed.device", DEVICE.upper()), "lowercase UUID"),
    ("wave-name", _set("signed.wave", "w 1"), "wave"),
    ("version-negative", _set("signed.version", -1), "version"),
    ("status", _set("signed.status", "done"), "status"),
    ("failed-without-code", _set("signed.code", None), "needs signed.code"),
    ("failed-bad-code", _set("signed.code", "Bad Code"), "needs signed.code"),
    ("installed-version-type", _set("signed.installed_version", "9"), "installed_version"),
    ("counter-zero", _set("signed.counter", 0), "counter"),
    ("counter-huge", _set("signed.counter", 2**53), "counter"),
    ("time-format", _set("signed.device_time", "2026-05-01 12:00:00"), "device_time"),
    ("time-invalid", _set("signed.device_time", "2026-02-30T12:00:00Z"), "not a valid time"),
    ("missing-field", _drop("counter"), "exactly the fields"),
    ("extra-field", _set("signed.extra", 1), "exactly the fields"),
    ("no-signature", _set("signatures", []), "exactly one signature"),
    ("signature-object", _set("signatures.0", "abc"), "exactly keyid and sig"),
    ("keyid-uppercase", _set("signatures.0.keyid", "A" * 64), "keyid"),
    ("sig-short", _set("signatures.0.sig", "ab"), "sig must be 128"),
]


@pytest.mark.parametrize(("change", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_envelope_is_refused(
    signer: CryptoSigner, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    doc = envelope(signer)
    change(doc)
    with pytest.raises(InputError, match=message):
        parse_report(json.dumps(doc).encode())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\xff", "not UTF-8 JSON"),
        (b'{"signed": 1, "signed": 2}', "duplicate key"),
        (b'{"signed": NaN, "signatures": []}', "NaN is not valid JSON"),
        (b"[]", "exactly signed and signatures"),
        (b" " * 5000, "at most"),
    ],
    ids=["not-utf8", "duplicate-key", "nan", "not-an-object", "too-large"],
)
def test_malformed_body_is_refused(body: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_report(body)


def test_other_statuses_round_trip_and_code_only_when_failed(signer: CryptoSigner) -> None:
    doc = envelope(signer, status="installed", code=None, installed_version=10)
    report = parse_report(json.dumps(doc).encode())
    assert report.status == "installed" and report.installed_version == 10
    public = signer.public_key.keyval["public"]
    verify_report(report, public)
    doc = envelope(signer, status="downloading", code=None)
    doc["signed"]["code"] = "x"
    with pytest.raises(InputError, match="null unless the status is failed"):
        parse_report(json.dumps(doc).encode())
    doc = envelope(signer, status="installed", code=None, installed_version=10)
    doc["signed"]["installed_version"] = 9
    with pytest.raises(InputError, match="equal to version"):
        parse_report(json.dumps(doc).encode())
    other = CryptoSigner.generate_ed25519().public_key.keyval["public"]
    with pytest.raises(VerificationError):
        verify_report(report, other)


def test_a_signature_over_other_bytes_and_bad_keys_are_refused(signer: CryptoSigner) -> None:
    doc = envelope(signer)
    doc["signatures"][0]["sig"] = "0" * 128
    report = parse_report(json.dumps(doc).encode())
    with pytest.raises(VerificationError, match="does not verify"):
        verify_report(report, signer.public_key.keyval["public"])
    for bad in ("AB" * 32, "ab" * 31, 12):
        with pytest.raises(InputError, match="64 lowercase hex"):
            check_public_key(bad)
