"""Device-signed install reports: the envelope of ``specs/reports.md``.

A device tells the update server how an install of a wave went with a small
JSON envelope signed by its own ed25519 key, like Uptane's signed ECU version
reports::

    {"signed": {"_type": "tufwaves-report", "code": null, "counter": 7,
                "device": "<uuid>", "device_time": "2026-01-01T00:00:00Z",
                "installed_version": 10, "spec_version": 1,
                "status": "installed", "version": 10, "wave": "spring"},
     "signatures": [{"keyid": "<64 hex>", "sig": "<128 hex>"}]}

The signature is over ``encode_canonical(signed)`` (securesystemslib's
canonical JSON). :func:`sign_report` builds one (the device side);
:func:`parse_report` checks the shape and :func:`verify_report` the
signature (the server side). Nothing here touches the network or a database.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from securesystemslib.exceptions import UnverifiedSignatureError
from securesystemslib.formats import encode_canonical
from securesystemslib.signer import Signature, Signer, SSlibKey

from tufwaves.device.profile import canonical_uuid, check_version, check_wave_name
from tufwaves.errors import InputError, VerificationError

__all__ = [
    "MAX_COUNTER",
    "MAX_REPORT_BYTES",
    "REPORT_TYPE",
    "STATUSES",
    "DeviceReport",
    "check_public_key",
    "device_key",
    "parse_report",
    "sign_report",
    "verify_report",
]

REPORT_TYPE: Final = "tufwaves-report"
SPEC_VERSION: Final = 1
MAX_REPORT_BYTES: Final = 2048
"""Largest envelope a server accepts (bytes of the request body)."""
MAX_COUNTER: Final = 2**53 - 1
"""Counters are positive integers up to 2**53 - 1 (exact in every JSON parser)."""
MAX_CODE_LEN: Final = 64
STATUSES: Final = ("downloading", "installing", "installed", "failed", "rolled_back")

_SIGNED_KEYS = frozenset(
    {
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
    }
)
_CODE_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_TIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")
_SIG_RE = re.compile(r"[0-9a-f]{128}")


@dataclass(frozen=True)
class DeviceReport:
    """One parsed report (the ``signed`` part) and its envelope's identity.

    ``digest`` is the SHA-256 (hex) of the canonical ``signed`` bytes: the
    same report sent twice has the same digest.
    """

    device: str
    wave: str
    version: int
    status: str
    code: str | None
    installed_version: int | None
    counter: int
    device_time: datetime
    keyid: str
    sig: str
    digest: str

    @property
    def signed(self) -> dict[str, Any]:
        """The ``signed`` object as the device sent it (canonical form)."""
        return {
            "_type": REPORT_TYPE,
            "spec_version": SPEC_VERSION,
            "device": self.device,
            "wave": self.wave,
            "version": self.version,
            "status": self.status,
            "code": self.code,
            "installed_version": self.installed_version,
            "counter": self.counter,
            "device_time": f"{self.device_time:%Y-%m-%dT%H:%M:%SZ}",
        }

    @property
    def canonical(self) -> bytes:
        """What the signature covers: ``encode_canonical(signed)``."""
        return _canonical(self.signed)

    def envelope(self) -> dict[str, Any]:
        """The whole envelope as JSON-ready data."""
        return {"signed": self.signed, "signatures": [{"keyid": self.keyid, "sig": self.sig}]}

    def to_bytes(self) -> bytes:
        """The envelope as compact JSON bytes (what a device sends)."""
        return json.dumps(self.envelope(), sort_keys=True, separators=(",", ":")).encode()


def _canonical(signed: dict[str, Any]) -> bytes:
    data = encode_canonical(signed)
    return str(data).encode("utf-8")


def check_public_key(value: object) -> str:
    """An ed25519 public key as 64 lowercase hex digits (its 32 raw bytes).

    Raises:
        InputError: Anything else.
    """
    if not isinstance(value, str) or not _HEX64_RE.fullmatch(value):
        raise InputError("a device public key is an ed25519 public key as 64 lowercase hex digits")
    return value


def device_key(public_hex: str) -> SSlibKey:
    """The securesystemslib key of a device public key (TUF-style key id)."""
    key_dict = {
        "keytype": "ed25519",
        "scheme": "ed25519",
        "keyval": {"public": check_public_key(public_hex)},
    }
    keyid = hashlib.sha256(_canonical(key_dict)).hexdigest()
    return SSlibKey(keyid, "ed25519", "ed25519", {"public": public_hex})


def _field(signed: dict[str, Any], key: str, kind: type) -> Any:
    value = signed.get(key)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise InputError(f"signed.{key} must be a {kind.__name__}")
    return value


def _time(text: object) -> datetime:
    if not isinstance(text, str) or not _TIME_RE.fullmatch(text):
        raise InputError("signed.device_time must be YYYY-MM-DDTHH:MM:SSZ (UTC)")
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise InputError("signed.device_time is not a valid time") from None


def _reject_constants(name: str) -> None:
    raise InputError(f"{name} is not valid JSON")


def parse_report(body: bytes) -> DeviceReport:
    """Check an envelope's size, JSON and fields (not its signature).

    Raises:
        InputError: Too large, not UTF-8 JSON, duplicate keys, unknown or
            missing fields, or a field out of range; the message says which.
    """
    if not isinstance(body, bytes) or len(body) > MAX_REPORT_BYTES:
        raise InputError(f"a report is at most {MAX_REPORT_BYTES} bytes")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            raise InputError("a JSON object has a duplicate key")
        return obj

    try:
        data = json.loads(
            body.decode("utf-8"),
            object_pairs_hook=no_duplicates,
            parse_constant=_reject_constants,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise InputError(f"the report is not UTF-8 JSON ({type(e).__name__})") from None
    if not isinstance(data, dict) or set(data) != {"signed", "signatures"}:
        raise InputError("the envelope is an object with exactly signed and signatures")
    signed, signatures = data["signed"], data["signatures"]
    if not isinstance(signed, dict) or set(signed) != _SIGNED_KEYS:
        raise InputError(f"signed has exactly the fields {', '.join(sorted(_SIGNED_KEYS))}")
    if signed["_type"] != REPORT_TYPE:
        raise InputError(f"signed._type must be {REPORT_TYPE!r}")
    if _field(signed, "spec_version", int) != SPEC_VERSION:
        raise InputError(f"signed.spec_version must be {SPEC_VERSION}")
    device = canonical_uuid(_field(signed, "device", str))
    if device != signed["device"]:
        raise InputError("signed.device must be a lowercase UUID")
    wave = check_wave_name(_field(signed, "wave", str))
    version = check_version(_field(signed, "version", int), "signed.version")
    status = _field(signed, "status", str)
    if status not in STATUSES:
        raise InputError(f"signed.status must be one of {', '.join(STATUSES)}")
    code = signed["code"]
    if status == "failed":
        if not isinstance(code, str) or not _CODE_RE.fullmatch(code):
            raise InputError(
                "a failed report needs signed.code: 1-64 of a-z 0-9 _ . - (starting a-z 0-9)"
            )
    elif code is not None:
        raise InputError("signed.code is null unless the status is failed")
    installed = signed["installed_version"]
    if installed is not None:
        installed = check_version(_field(signed, "installed_version", int), "installed_version")
    if status == "installed" and installed != version:
        raise InputError("an installed report has installed_version equal to version")
    counter = _field(signed, "counter", int)
    if not 1 <= counter <= MAX_COUNTER:
        raise InputError(f"signed.counter must be 1..{MAX_COUNTER}")
    device_time = _time(signed["device_time"])
    if not isinstance(signatures, list) or len(signatures) != 1:
        raise InputError("signatures holds exactly one signature")
    sig = signatures[0]
    if not isinstance(sig, dict) or set(sig) != {"keyid", "sig"}:
        raise InputError("a signature is an object with exactly keyid and sig")
    keyid, sig_hex = sig["keyid"], sig["sig"]
    if not isinstance(keyid, str) or not _HEX64_RE.fullmatch(keyid):
        raise InputError("signatures[0].keyid must be 64 lowercase hex digits")
    if not isinstance(sig_hex, str) or not _SIG_RE.fullmatch(sig_hex):
        raise InputError("signatures[0].sig must be 128 lowercase hex digits")
    report = DeviceReport(
        device=device,
        wave=wave,
        version=version,
        status=status,
        code=code,
        installed_version=installed,
        counter=counter,
        device_time=device_time,
        keyid=keyid,
        sig=sig_hex,
        digest="",
    )
    canonical = _canonical(signed)
    if canonical != report.canonical:  # e.g. a time that strptime normalised
        raise InputError("signed does not round-trip; use the canonical field forms")
    return _with_digest(report, canonical)


def _with_digest(report: DeviceReport, canonical: bytes) -> DeviceReport:
    object.__setattr__(report, "digest", hashlib.sha256(canonical).hexdigest())
    return report


def verify_report(report: DeviceReport, public_hex: str) -> None:
    """Check the report's signature with the device's public key.

    Raises:
        VerificationError: Another key id, or a signature that does not verify.
    """
    key = device_key(public_hex)
    if report.keyid != key.keyid:
        raise VerificationError("the report is signed with a key this device does not have")
    try:
        key.verify_signature(Signature(report.keyid, report.sig), report.canonical)
    except UnverifiedSignatureError:
        raise VerificationError("the report's signature does not verify") from None


def sign_report(
    signer: Signer,
    *,
    device: str,
    wave: str,
    version: int,
    status: str,
    counter: int,
    installed_version: int | None = None,
    code: str | None = None,
    device_time: datetime | None = None,
) -> DeviceReport:
    """Build and sign a report with the device's ed25519 ``signer``.

    Raises:
        InputError: A field out of range (checked as the server checks it).
    """
    at = (device_time or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    draft = DeviceReport(
        device=canonical_uuid(device),
        wave=wave,
        version=version,
        status=status,
        code=code,
        installed_version=installed_version,
        counter=counter,
        device_time=at,
        keyid="0" * 64,
        sig="0" * 128,
        digest="",
    )
    public = signer.public_key.to_dict()["keyval"]["public"]
    keyid = device_key(public).keyid
    signature = signer.sign(draft.canonical)
    signed = DeviceReport(**{**draft.__dict__, "keyid": keyid, "sig": signature.signature})
    return parse_report(signed.to_bytes())  # the same checks as the server's
