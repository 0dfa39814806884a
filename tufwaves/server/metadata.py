"""Domain values <-> TUF metadata: names, versions, expiry, and the tufwaves roles.

Everything here follows ``specs/metadata.md``; the functions build and read
ordinary python-tuf ``Metadata`` objects and keep tufwaves data in
``x-tufwaves-*`` fields and target ``custom``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from securesystemslib.signer import Key
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    TargetFile,
    Targets,
)

from tufwaves.device import profile
from tufwaves.device.plan import Plan, parse_plan
from tufwaves.device.profile import (
    ACCOUNTING_KEY,
    PLAN_KEY,
    PPM,
    RIPPLE_FIELD,
    ROLLOUT_FIELD,
    ROLLOUT_KEYS,
    ROLLOUT_STATES,
    STAGE_KEY,
    WAVE_FIELD,
    WAVE_KEYS,
    check_policy,
    check_ripple_count,
    check_ripple_index,
    check_version,
    check_wave_name,
    parse_version,
    ripple_role,
    rollout_role,
    version_text,
    wave_role,
)
from tufwaves.errors import InputError

__all__ = [
    "ROLLOUT_STATES",
    "Clock",
    "Policy",
    "WaveInfo",
    "build_ripple",
    "build_rollout",
    "build_wave",
    "check_hardware_id",
    "check_tag",
    "check_wave_name",
    "expiry",
    "parse_version",
    "ripple_role",
    "rollout_delegation",
    "rollout_info",
    "rollout_role",
    "wave_info",
    "wave_role",
]

_BASENAME_RE = re.compile(r"[A-Za-z0-9_.+-][A-Za-z0-9_.+@-]{0,127}")


def check_tag(tag: object) -> str:
    """Return ``tag`` if it is a tag (``specs/metadata.md``); InputError otherwise."""
    return profile.check_label("tag", tag)


def check_hardware_id(hw: object) -> str:
    """Return ``hw`` if it is a hardware id; InputError otherwise."""
    return profile.check_label("hardware id", hw)


def check_basename(name: str) -> str:
    if not _BASENAME_RE.fullmatch(name) or name in {".", ".."}:
        raise InputError(f"bad artifact name {name!r}: use 1-128 of [A-Za-z0-9_.+@-], no '/'")
    return name


Clock = Callable[[], datetime]
"""What the server side reads the time from: returns a timezone-aware datetime."""


def now() -> datetime:
    """The real time: UTC, whole seconds. The default :data:`Clock`.

    Returns:
        The current time.
    """
    return datetime.now(UTC).replace(microsecond=0)


def expiry(
    *,
    days: int | None = None,
    at: datetime | str | None = None,
    start: datetime | None = None,
) -> datetime:
    """An expiry time: whole seconds, UTC, after ``start`` (refused otherwise).

    Args:
        days: Days after ``start``; the default (neither ``days`` nor ``at``)
            is 365, as on the command line.
        at: An absolute time instead: a timezone-aware datetime or RFC 3339 text.
        start: The time it must be after (default: the real time now); pass
            ``repo.now()`` to follow a repository's clock.

    Returns:
        The expiry time.

    Raises:
        InputError: ``days`` is not positive, ``at`` is malformed or has no
            time zone, or the result is not after ``start``.
    """
    base = start or now()
    if at is not None:
        if isinstance(at, str):
            try:
                parsed = datetime.fromisoformat(at.replace("Z", "+00:00"))
            except ValueError:
                raise InputError(
                    f"bad time {at!r}: use RFC 3339, e.g. 2027-01-31T12:00:00Z"
                ) from None
            if parsed.tzinfo is None:
                raise InputError(f"time {at!r} needs a time zone, e.g. a trailing Z")
            at = parsed
        result = at.astimezone(UTC).replace(microsecond=0)
    else:
        if days is not None and days <= 0:
            raise InputError(f"--expires-days must be positive, not {days}")
        result = base + timedelta(days=365 if days is None else days)
    if result <= base:
        raise InputError(f"expiry {result:%Y-%m-%dT%H:%M:%SZ} is in the past; choose a later time")
    return result


@dataclass(frozen=True)
class Policy:
    """The rollout policy the offline ceremony signs into a wave.

    ``max_fraction_ppm`` caps fraction ripples (parts per million); left out,
    it is 1,000,000 when the online side may complete the wave and 0 (no
    fraction ripples) when it may not, since a 100 % fraction is a completion.

    Attributes:
        max_ripple_size: The most devices one ripple may name (None: no limit).
        online_complete: Whether the online rollout keys may complete the
            wave; otherwise it takes an offline ceremony
            (:func:`~tufwaves.server.waves.fold_into_production`).
        fraction_salt: None (the salt of fraction ripples is derived from the
            wave role's offline signatures, ``specs/membership.md`` 6.1), or a
            salt carried from an earlier version of the wave (64 hex digits),
            which only a re-signed version (2 and later) may carry.
        max_fraction_ppm: The largest fraction ripple, in parts per million.
        plan: The signed rollout plan (None: an unplanned wave), see
            :mod:`tufwaves.server.plan`.

    Raises:
        InputError: A value out of range.
    """

    max_ripple_size: int | None = None
    online_complete: bool = True
    fraction_salt: str | None = None
    max_fraction_ppm: int | None = None
    plan: Plan | None = None

    def __post_init__(self) -> None:
        if self.max_fraction_ppm is None:
            object.__setattr__(self, "max_fraction_ppm", PPM if self.online_complete is True else 0)
        check_policy(self.to_dict())

    @property
    def fraction_cap(self) -> int:
        """The largest fraction ripple (parts per million) the rollout keys may sign."""
        assert self.max_fraction_ppm is not None  # noqa: S101 - set in __post_init__
        return self.max_fraction_ppm

    def to_dict(self) -> dict[str, Any]:
        """The policy as signed into the wave (JSON-ready).

        Returns:
            A dict of JSON types.
        """
        out: dict[str, Any] = {
            "max_ripple_size": self.max_ripple_size,
            "online_complete": self.online_complete,
            "fraction_salt": self.fraction_salt,
            "max_fraction_ppm": self.fraction_cap,
        }
        if self.plan is not None:
            out[PLAN_KEY] = self.plan.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        """The policy signed into a wave.

        Args:
            data: The ``policy`` object of the wave field.

        Returns:
            The policy.

        Raises:
            InputError: A missing, extra or mistyped field.
        """
        check_policy(data)
        return cls(
            data["max_ripple_size"],
            data["online_complete"],
            data["fraction_salt"],
            data["max_fraction_ppm"],
            parse_plan(data[PLAN_KEY]) if PLAN_KEY in data else None,
        )


@dataclass(frozen=True)
class WaveInfo:
    """The ``x-tufwaves-wave`` field of a wave role.

    Raises:
        InputError: a bad wave name, tag or version (an ``int``).
    """

    name: str
    tag: str
    version: int
    policy: Policy

    def __post_init__(self) -> None:
        check_wave_name(self.name)
        check_tag(self.tag)
        check_version(self.version)
        if not isinstance(self.policy, Policy):
            raise InputError("a wave's policy must be a Policy")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tag": self.tag,
            "version": version_text(self.version),
            "policy": self.policy.to_dict(),
        }


def wave_info(md: Metadata[Targets]) -> WaveInfo:
    raw = md.signed.unrecognized_fields.get(WAVE_FIELD)
    if not isinstance(raw, dict) or set(raw) != WAVE_KEYS:
        raise InputError(f"{WAVE_FIELD} is missing or malformed")
    if not isinstance(raw["policy"], dict):
        raise InputError("wave policy is malformed")
    return WaveInfo(
        check_wave_name(raw["name"]),
        check_tag(raw["tag"]),
        parse_version(raw["version"], "wave version"),
        Policy.from_dict(raw["policy"]),
    )


@dataclass(frozen=True)
class RolloutInfo:
    wave: str
    state: str
    ripples: int
    accounting: tuple[tuple[int, int], ...] | None = None  # (stage, size) per ripple; planned


def rollout_info(md: Metadata[Targets]) -> RolloutInfo:
    raw = md.signed.unrecognized_fields.get(ROLLOUT_FIELD)
    if not isinstance(raw, dict) or set(raw) - {ACCOUNTING_KEY} != ROLLOUT_KEYS:
        raise InputError(f"{ROLLOUT_FIELD} is missing or malformed")
    if not isinstance(raw["state"], str) or raw["state"] not in ROLLOUT_STATES:
        raise InputError(f"{ROLLOUT_FIELD} has a bad state {raw['state']!r}")
    accounting = None
    if ACCOUNTING_KEY in raw:
        entries = raw[ACCOUNTING_KEY]
        if not isinstance(entries, list) or not all(
            isinstance(e, dict) and set(e) == {"stage", "size"} for e in entries
        ):
            raise InputError(f"{ROLLOUT_FIELD}.accounting is malformed")
        accounting = tuple((int(e["stage"]), int(e["size"])) for e in entries)
    return RolloutInfo(
        check_wave_name(raw["wave"]),
        raw["state"],
        check_ripple_count(raw["ripples"]),
        accounting,
    )


def rollout_delegation(wave_md: Metadata[Targets]) -> tuple[DelegatedRole, dict[str, Key]]:
    """The wave role's delegation of its rollout role and the rollout keys."""
    name = wave_info(wave_md).name
    delegations = wave_md.signed.delegations
    if delegations is None or delegations.roles is None:
        raise InputError(f"wave {name} delegates no rollout role")
    drole = delegations.roles.get(rollout_role(name))
    if drole is None:
        raise InputError(f"wave {name} does not delegate {rollout_role(name)}")
    return drole, {kid: delegations.keys[kid] for kid in drole.keyids}


def artifact_target(
    path: str,
    data: bytes,
    *,
    hardware_ids: Sequence[str],
    tag: str,
    version: int,
    name: str,
) -> TargetFile:
    for hw in hardware_ids:
        check_hardware_id(hw)
    text = version_text(version)
    return TargetFile(
        length=len(data),
        hashes={
            "sha256": hashlib.sha256(data).hexdigest(),
            "sha512": hashlib.sha512(data).hexdigest(),
        },
        path=path,
        unrecognized_fields={
            "custom": {
                "hardwareIds": list(hardware_ids),
                "tags": [check_tag(tag)],
                "version": text,
                "name": name,
            }
        },
    )


def build_wave(
    info: WaveInfo,
    targets: Iterable[TargetFile],
    rollout_keys: Sequence[Key],
    rollout_threshold: int,
    expires: datetime,
) -> Metadata[Targets]:
    """The wave role (version 1) delegating its rollout role to the rollout keys.

    Its policy carries no fraction salt: the salt of version 1 is derived from
    its offline signatures (``specs/membership.md`` section 6.1).
    """
    if info.policy.fraction_salt is not None:
        raise InputError(
            "a new wave cannot be given a fraction salt: it is derived from the "
            "offline signatures of the wave role (specs/membership.md 6.1)"
        )
    if not rollout_keys:
        raise InputError("a wave needs at least one rollout key")
    if not 1 <= rollout_threshold <= len({k.keyid for k in rollout_keys}):
        raise InputError(
            f"rollout threshold {rollout_threshold} must be between 1 and the "
            f"number of distinct rollout keys ({len(rollout_keys)})"
        )
    delegations = Delegations(
        keys={k.keyid: k for k in rollout_keys},
        roles={
            rollout_role(info.name): DelegatedRole(
                rollout_role(info.name),
                sorted({k.keyid for k in rollout_keys}),
                rollout_threshold,
                True,
                paths=[],
            )
        },
    )
    signed = Targets(
        version=1,
        expires=expires,
        targets={t.path: t for t in targets},
        delegations=delegations,
        unrecognized_fields={WAVE_FIELD: info.to_dict()},
    )
    return Metadata(signed)


def build_rollout(
    wave: str,
    state: str,
    ripple_count: int,
    keyids: Sequence[str],
    keys: Mapping[str, Key],
    threshold: int,
    version: int,
    expires: datetime,
    accounting: Sequence[tuple[int, int]] | None = None,
) -> Metadata[Targets]:
    """The rollout role: state and one delegation per ripple, in order.

    A planned wave's rollout role also carries ``accounting``: the (stage,
    size) of every ripple, one entry per ripple.

    Raises:
        InputError: a bad wave name, state or ripple count (an ``int`` from 0
            to 2**63-1).
    """
    check_wave_name(wave)
    if state not in ROLLOUT_STATES:
        raise InputError(f"bad rollout state {state!r}")
    check_ripple_count(ripple_count)
    if accounting is not None and len(accounting) != ripple_count:
        raise InputError("a planned wave's accounting has one entry per ripple")
    roles = {
        ripple_role(wave, k): DelegatedRole(
            ripple_role(wave, k), sorted(keyids), threshold, True, paths=[]
        )
        for k in range(1, ripple_count + 1)
    }
    delegations = (
        Delegations(keys={kid: keys[kid] for kid in keyids}, roles=roles) if roles else None
    )
    field_: dict[str, Any] = {"wave": wave, "state": state, "ripples": ripple_count}
    if accounting is not None:
        field_[ACCOUNTING_KEY] = [{"stage": s, "size": n} for s, n in accounting]
    signed = Targets(
        version=version,
        expires=expires,
        targets={},
        delegations=delegations,
        unrecognized_fields={ROLLOUT_FIELD: field_},
    )
    return Metadata(signed)


def build_ripple(
    wave: str,
    index: int,
    membership: Mapping[str, Any],
    expires: datetime,
    stage: int | None = None,
) -> Metadata[Targets]:
    """A ripple role (version 1) of ``wave`` with its membership (and stage, if planned).

    Raises:
        InputError: a bad wave name or ripple number (an ``int`` from 1 to
            2**63-1).
    """
    check_wave_name(wave)
    check_ripple_index(index)
    field_: dict[str, Any] = {"wave": wave, "index": index, "membership": dict(membership)}
    if stage is not None:
        field_[STAGE_KEY] = stage
    signed = Targets(
        version=1,
        expires=expires,
        targets={},
        unrecognized_fields={RIPPLE_FIELD: field_},
    )
    return Metadata(signed)
