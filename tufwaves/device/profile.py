"""The tufwaves metadata profile: role names, field names and value rules.

The one definition of ``specs/metadata.md`` (§12) in code. The server side builds
and parses metadata with it and the verifier reads metadata with it, so what
one side writes the other accepts. Every syntax is matched whole
(``re.fullmatch``): a trailing newline is never part of a valid value.

The ``is_*`` functions answer yes or no and never raise; the ``check_*`` and
``parse_*`` functions return the value or raise :class:`InputError` with a
message for people.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Final, TypeGuard

from securesystemslib.formats import encode_canonical
from securesystemslib.signer import Key

from tufwaves.device.plan import parse_plan
from tufwaves.errors import InputError

__all__ = [
    "ACCOUNTING_KEY",
    "LABEL_PATTERN",
    "MAX_INT",
    "MAX_VERSION",
    "PLAN_KEY",
    "POLICY_KEYS",
    "PPM",
    "RIPPLE_FIELD",
    "RIPPLE_INDEX_PATTERN",
    "RIPPLE_KEYS",
    "ROLLOUT_FIELD",
    "ROLLOUT_KEYS",
    "ROLLOUT_STATES",
    "STAGE_KEY",
    "UUID_PATTERN",
    "VERSION_PATTERN",
    "WAVE_FIELD",
    "WAVE_KEYS",
    "WAVE_NAME_PATTERN",
    "canonical_uuid",
    "check_label",
    "check_policy",
    "check_ripple_count",
    "check_ripple_index",
    "check_version",
    "check_wave_name",
    "is_label",
    "is_ripple_count",
    "is_ripple_index",
    "is_version",
    "is_version_text",
    "is_wave_name",
    "key_id_of",
    "parse_version",
    "ripple_role",
    "rollout_role",
    "same_key",
    "split_role",
    "version_text",
    "wave_role",
]

WAVE_FIELD: Final = "x-tufwaves-wave"
"""The signed-level field of a ``wave.W`` role."""
ROLLOUT_FIELD: Final = "x-tufwaves-rollout"
"""The signed-level field of a ``rollout.W`` role."""
RIPPLE_FIELD: Final = "x-tufwaves-ripple"
"""The signed-level field of a ``ripple.W.K`` role."""

WAVE_KEYS: Final = frozenset({"name", "tag", "version", "policy"})
"""The members of ``x-tufwaves-wave``, exactly."""
ROLLOUT_KEYS: Final = frozenset({"wave", "state", "ripples"})
"""The members of ``x-tufwaves-rollout``, exactly."""
RIPPLE_KEYS: Final = frozenset({"wave", "index", "membership"})
"""The members of ``x-tufwaves-ripple``, exactly."""
POLICY_KEYS: Final = frozenset(
    {"max_ripple_size", "online_complete", "fraction_salt", "max_fraction_ppm"}
)
"""The members of a wave's ``policy`` (plus ``plan`` for a planned wave)."""
PLAN_KEY: Final = "plan"
"""The optional policy member holding a signed rollout plan (:mod:`tufwaves.device.plan`)."""
ACCOUNTING_KEY: Final = "accounting"
"""The rollout member of a planned wave: each ripple's stage and size."""
STAGE_KEY: Final = "stage"
"""The ripple member of a planned wave: the ripple's stage."""
ROLLOUT_STATES: Final = ("active", "paused", "cancelled", "complete")
"""The values of a rollout role's ``state``."""

MAX_INT: Final = 2**63 - 1
"""Upper bound of every integer of the profile: fits a signed 64-bit column."""
MAX_VERSION: Final = MAX_INT
"""Largest release version (wave, artifact, installed)."""
PPM: Final = 1_000_000
"""Parts per million: ``max_fraction_ppm`` ranges over ``0 .. PPM``."""

WAVE_NAME_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
"""A wave name: 1-64 letters, digits, ``_`` or ``-``, starting with a letter or digit."""
LABEL_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}"
"""A tag, hardware id or inventory group name."""
VERSION_PATTERN: Final = r"0|[1-9][0-9]{0,18}"
"""A version as text: decimal, no leading zeros (its value is also bounded)."""
RIPPLE_INDEX_PATTERN: Final = r"[1-9][0-9]{0,18}"
"""A ripple number in a role name (its value is also bounded)."""
UUID_PATTERN: Final = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
"""A device UUID as accepted on input (either case); canonical is lowercase."""

_WAVE_NAME_RE: Final = re.compile(WAVE_NAME_PATTERN)
_LABEL_RE: Final = re.compile(LABEL_PATTERN)
_VERSION_RE: Final = re.compile(VERSION_PATTERN)
_UUID_RE: Final = re.compile(UUID_PATTERN)
_SALT_RE: Final = re.compile(r"[0-9a-f]{64}")
_ROLE_RE: Final = re.compile(
    rf"(?P<kind>wave|rollout)\.(?P<wave>{WAVE_NAME_PATTERN})"
    rf"|ripple\.(?P<rwave>{WAVE_NAME_PATTERN})\.(?P<index>{RIPPLE_INDEX_PATTERN})"
)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------
# Names


def is_wave_name(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a wave name (``WAVE_NAME_PATTERN``)."""
    return isinstance(value, str) and _WAVE_NAME_RE.fullmatch(value) is not None


def is_label(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a tag, hardware id or group name (``LABEL_PATTERN``)."""
    return isinstance(value, str) and _LABEL_RE.fullmatch(value) is not None


def check_wave_name(value: object) -> str:
    """Return ``value`` if it is a wave name.

    Raises:
        InputError: ``value`` is not a string matching ``WAVE_NAME_PATTERN``.
    """
    if not is_wave_name(value):
        raise InputError(
            f"bad wave name {_show(value)}: use 1-64 letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def check_label(what: str, value: object) -> str:
    """Return ``value`` if it is a tag, hardware id or group name.

    Args:
        what: what the value is, for the message (``"tag"``, ``"hardware id"``).
        value: the value to check.

    Raises:
        InputError: ``value`` is not a string matching ``LABEL_PATTERN``.
    """
    if not is_label(value):
        raise InputError(
            f"bad {what} {_show(value)}: use 1-64 of [A-Za-z0-9_.+-], "
            "starting with a letter or digit"
        )
    return value


def wave_role(wave: str) -> str:
    """The role name ``wave.W``."""
    return f"wave.{wave}"


def rollout_role(wave: str) -> str:
    """The role name ``rollout.W``."""
    return f"rollout.{wave}"


def ripple_role(wave: str, index: int) -> str:
    """The role name ``ripple.W.K``."""
    return f"ripple.{wave}.{index}"


def split_role(role: object) -> tuple[str, str, int | None] | None:
    """Split a ``wave.W``, ``rollout.W`` or ``ripple.W.K`` role name.

    Returns:
        ``(kind, W, K)`` with ``kind`` ``"wave"``, ``"rollout"`` or
        ``"ripple"`` and ``K`` None unless a ripple; None for any other string
        (top-level roles included) or a ripple number above ``MAX_INT``.
    """
    m = _ROLE_RE.fullmatch(role) if isinstance(role, str) else None
    if m is None:
        return None
    if m["kind"]:
        return m["kind"], m["wave"], None
    index = int(m["index"])
    return ("ripple", m["rwave"], index) if index <= MAX_INT else None


# --------------------------------------------------------------------------
# Versions and counts


def is_version(value: object) -> TypeGuard[int]:
    """Whether ``value`` is a release version: an ``int`` (not bool), 0..``MAX_VERSION``."""
    return _is_int(value) and 0 <= value <= MAX_VERSION


def is_version_text(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a version string: ``VERSION_PATTERN``, at most ``MAX_VERSION``."""
    return (
        isinstance(value, str)
        and _VERSION_RE.fullmatch(value) is not None
        and int(value) <= MAX_VERSION
    )


def check_version(value: object, what: str = "version") -> int:
    """Return ``value`` if it is a release version.

    Args:
        value: the version, an ``int``.
        what: what the version is, for the message.

    Raises:
        InputError: ``value`` is not an ``int`` from 0 to ``MAX_VERSION``.
    """
    if not is_version(value):
        raise InputError(f"bad {what} {_show(value)}: use an integer from 0 to {MAX_VERSION}")
    return value


def parse_version(text: object, what: str = "version") -> int:
    """The release version written as ``text`` (the form metadata stores).

    Args:
        text: decimal digits without leading zeros.
        what: what the version is, for the message.

    Returns:
        The version as an ``int``.

    Raises:
        InputError: ``text`` is not a version string up to ``MAX_VERSION``.
    """
    if not is_version_text(text):
        raise InputError(
            f"bad {what} {_show(text)}: use an integer from 0 to {MAX_VERSION} "
            "without leading zeros"
        )
    return int(text)


def version_text(version: int) -> str:
    """The string metadata stores for ``version``.

    Raises:
        InputError: ``version`` is not a release version.
    """
    return str(check_version(version))


def is_ripple_count(value: object) -> TypeGuard[int]:
    """Whether ``value`` is a rollout's ripple count: ``int`` (not bool), 0..``MAX_INT``."""
    return _is_int(value) and 0 <= value <= MAX_INT


def is_ripple_index(value: object) -> TypeGuard[int]:
    """Whether ``value`` is a ripple number: ``int`` (not bool), 1..``MAX_INT``."""
    return _is_int(value) and 1 <= value <= MAX_INT


def check_ripple_count(value: object) -> int:
    """Return ``value`` if it is a ripple count.

    Raises:
        InputError: ``value`` is not an ``int`` from 0 to ``MAX_INT``.
    """
    if not is_ripple_count(value):
        raise InputError(f"bad ripple count {_show(value)}: use an integer from 0 to {MAX_INT}")
    return value


def check_ripple_index(value: object) -> int:
    """Return ``value`` if it is a ripple number.

    Raises:
        InputError: ``value`` is not an ``int`` from 1 to ``MAX_INT``.
    """
    if not is_ripple_index(value):
        raise InputError(f"bad ripple number {_show(value)}: use an integer from 1 to {MAX_INT}")
    return value


# --------------------------------------------------------------------------
# UUIDs


def canonical_uuid(value: object) -> str:
    """Return ``value`` as a lowercase canonical 8-4-4-4-12 UUID string.

    Upper- and lowercase hex digits are accepted; braces, ``urn:uuid:``
    prefixes, missing hyphens and surrounding whitespace are not.

    Raises:
        InputError: ``value`` is not a UUID in that form.
    """
    if not isinstance(value, str) or not _UUID_RE.fullmatch(value):
        raise InputError(
            f"{_show(value)} is not a device UUID (expected the form "
            "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx with hex digits, "
            "such as 123e4567-e89b-12d3-a456-426614174000)"
        )
    return value.lower()


# --------------------------------------------------------------------------
# Policy


def check_policy(policy: Mapping[str, object]) -> None:
    """Check a wave's ``policy`` object: exactly ``POLICY_KEYS``, each valid.

    ``max_ripple_size`` is null or an integer 1..``MAX_INT``;
    ``online_complete`` a boolean; ``fraction_salt`` null (the salt is
    derived from the wave role's offline signatures) or 64 lowercase hex
    characters (a salt carried from an earlier version); ``max_fraction_ppm``
    an integer 0..``PPM``, below ``PPM`` when ``online_complete`` is false
    (a 100 % fraction completes the wave). An optional ``plan`` member is a
    rollout plan (:func:`tufwaves.device.plan.parse_plan`).

    Raises:
        InputError: a member is missing, unknown or invalid; the message
            names it.
    """
    if set(policy) - {PLAN_KEY} != POLICY_KEYS:
        raise InputError(
            f"policy must have exactly {', '.join(sorted(POLICY_KEYS))}; "
            f"it has {', '.join(sorted(str(k) for k in policy)) or 'none'}"
        )
    size = policy["max_ripple_size"]
    if size is not None and not (_is_int(size) and 1 <= size <= MAX_INT):
        raise InputError(
            f"policy.max_ripple_size {_show(size)} must be null or an integer from 1 to {MAX_INT}"
        )
    online = policy["online_complete"]
    if not isinstance(online, bool):
        raise InputError(f"policy.online_complete {_show(online)} must be a boolean")
    salt = policy["fraction_salt"]
    if salt is not None and not (isinstance(salt, str) and _SALT_RE.fullmatch(salt)):
        raise InputError("policy.fraction_salt must be null or 64 lowercase hex characters")
    cap = policy["max_fraction_ppm"]
    if not _is_int(cap) or not 0 <= cap <= PPM:
        raise InputError(
            f"policy.max_fraction_ppm {_show(cap)} must be an integer from 0 to {PPM} (0 to 100%)"
        )
    if cap == PPM and not online:
        raise InputError(
            "policy.max_fraction_ppm: a 100% fraction ripple completes the wave; with "
            "online completion refused, cap fractions below 100%"
        )
    if PLAN_KEY in policy:
        parse_plan(policy[PLAN_KEY])


def key_id_of(key: Key) -> str | None:
    """The key id TUF computes from ``key``'s material, or None if it has none.

    The lowercase hex SHA-256 of the canonical JSON of ``keytype``, ``scheme``
    and ``keyval`` (securesystemslib's default key id). python-tuf takes the
    key id a delegation states as given; the verifier compares it with this.
    """
    body = {"keytype": key.keytype, "scheme": key.scheme, "keyval": key.keyval}
    try:
        canonical = encode_canonical(body)
    except Exception:  # a keyval that has no canonical JSON (floats, odd types)
        return None
    assert isinstance(canonical, str)  # noqa: S101 - encode_canonical returns str without a sink
    return hashlib.sha256(canonical.encode()).hexdigest()


def same_key(a: Key | None, b: Key | None) -> bool:
    """True iff ``a`` and ``b`` are the same key material (keytype, scheme, keyval)."""
    if a is None or b is None:
        return False
    return (a.keytype, a.scheme, a.keyval) == (b.keytype, b.scheme, b.keyval)
