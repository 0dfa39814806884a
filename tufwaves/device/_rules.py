"""Decision values and the decision rules over verified metadata.

Nothing here verifies signatures: the caller hands in python-tuf ``Targets``
objects that the TUF workflow (:mod:`tufwaves.device._client`) has already
verified. This module reads the tufwaves profile (``x-tufwaves-*`` fields and
target ``custom``, ``specs/metadata.md``) strictly and decides. See
``specs/verifier.md`` for the rules in prose and every reason code.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, TypeGuard

from tuf.api.metadata import DelegatedRole, Key, TargetFile, Targets

from tufwaves.device.membership import (
    FractionMembership,
    ListMembership,
    Membership,
    MerkleEvidence,
    MerkleMembership,
    canonical_uuid,
    fraction_member,
    is_member,
    membership_from_dict,
    verify_inclusion,
)
from tufwaves.device.plan import Plan, parse_plan
from tufwaves.device.profile import (
    ACCOUNTING_KEY,
    PLAN_KEY,
    POLICY_KEYS,
    RIPPLE_FIELD,
    RIPPLE_KEYS,
    ROLLOUT_FIELD,
    ROLLOUT_KEYS,
    ROLLOUT_STATES,
    STAGE_KEY,
    WAVE_FIELD,
    WAVE_KEYS,
    check_label,
    check_policy,
    check_version,
    is_label,
    is_ripple_count,
    is_version_text,
    key_id_of,
    ripple_role,
    rollout_role,
    same_key,
    wave_role,
)
from tufwaves.errors import InputError

__all__ = [
    "Artifact",
    "Decision",
    "DeviceIdentity",
    "ProfileError",
    "Reason",
    "VerifiedMetadata",
    "VerifiedWave",
    "WaveReading",
    "decide_rules",
    "read_wave",
]


class Reason(enum.Enum):
    """Why a device may or may not install: a closed list of codes.

    The ``allowed_*`` values come with ``Decision.allowed`` true, every other
    value with false. ``specs/verifier.md`` documents each one.
    """

    ALLOWED_PRODUCTION = "allowed_production"
    ALLOWED_COMPLETE = "allowed_complete"
    ALLOWED_RIPPLE = "allowed_ripple"
    ALLOWED_FRACTION = "allowed_fraction"
    BUNDLE_MALFORMED = "bundle_malformed"
    BUNDLE_TOO_LARGE = "bundle_too_large"
    DEVICE_MISMATCH = "device_mismatch"
    ROOT_INVALID = "root_invalid"
    ROOT_ROLLBACK = "root_rollback"
    TIMESTAMP_INVALID = "timestamp_invalid"
    SNAPSHOT_INVALID = "snapshot_invalid"
    TARGETS_INVALID = "targets_invalid"
    DELEGATION_INVALID = "delegation_invalid"
    METADATA_EXPIRED = "metadata_expired"
    ROLLBACK = "rollback"
    WAVE_INVALID = "wave_invalid"
    RIPPLE_INVALID = "ripple_invalid"
    POLICY_UNSUPPORTED = "policy_unsupported"
    POLICY_VIOLATION = "policy_violation"
    EVIDENCE_INVALID = "evidence_invalid"
    NO_MATCHING_ARTIFACT = "no_matching_artifact"
    NOT_NEWER = "not_newer"
    WAVE_CANCELLED = "wave_cancelled"
    WAVE_PAUSED = "wave_paused"
    PLAN_NOT_STARTED = "plan_not_started"
    PLAN_VIOLATION = "plan_violation"
    NOT_MEMBER = "not_member"
    STATE_WRITE_FAILED = "state_write_failed"
    INTERNAL_ERROR = "internal_error"

    @property
    def allowed(self) -> bool:
        """True for the ``allowed_*`` codes."""
        return self.value.startswith("allowed_")


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _freeze(value: Any) -> Any:
    """A read-only deep copy of JSON data (mappings become MappingProxyType)."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


# --------------------------------------------------------------------------
# Public values


@dataclass(frozen=True)
class DeviceIdentity:
    """Who is asking: UUID, hardware id, tag and the release version it runs.

    The constructor canonicalises ``uuid`` and checks every field.

    Raises:
        InputError: a malformed UUID, hardware id or tag, or an installed
            version that is not an integer from 0 to 2**63-1.
    """

    uuid: str
    hardware_id: str
    tag: str
    installed_version: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "uuid", canonical_uuid(self.uuid))
        check_label("hardware id", self.hardware_id)
        check_label("tag", self.tag)
        check_version(self.installed_version, "installed version")


@dataclass(frozen=True)
class Artifact:
    """A target file the device may install: path, length, hashes, custom."""

    name: str
    length: int
    hashes: Mapping[str, str]
    custom: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        object.__setattr__(self, "hashes", _freeze(self.hashes))
        object.__setattr__(self, "custom", _freeze(self.custom))

    @property
    def version(self) -> int:
        """The release version from ``custom.version``."""
        return int(self.custom["version"])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (for ``--json`` output)."""
        return {
            "name": self.name,
            "length": self.length,
            "hashes": dict(self.hashes),
            "custom": _thaw(self.custom),
        }


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class Decision:
    """The outcome of :meth:`tufwaves.verify.Verifier.decide`.

    ``allowed`` is true exactly when ``reason`` is an ``allowed_*`` code and
    then ``artifact`` is set. ``wave`` and ``ripple`` name what allowed it (or,
    on a denial, the wave concerned, when there is one).
    """

    allowed: bool
    reason: Reason
    message: str
    artifact: Artifact | None = None
    wave: str | None = None
    ripple: int | None = None

    def __post_init__(self) -> None:
        if self.allowed != self.reason.allowed:
            raise ValueError("allowed must agree with the reason code")
        if self.allowed and self.artifact is None:
            raise ValueError("an allowed decision names its artifact")

    @classmethod
    def deny(cls, reason: Reason, message: str, *, wave: str | None = None) -> Decision:
        """A denial with ``reason``."""
        return cls(False, reason, message, None, wave, None)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (for ``--json`` output)."""
        return {
            "allowed": self.allowed,
            "reason": self.reason.value,
            "message": self.message,
            "artifact": None if self.artifact is None else self.artifact.to_dict(),
            "wave": self.wave,
            "ripple": self.ripple,
        }


# --------------------------------------------------------------------------
# Verified input


@dataclass(frozen=True)
class VerifiedWave:
    """One wave's verified roles: ``wave.W``, ``rollout.W`` and its ripples."""

    name: str
    wave: Targets
    rollout: Targets
    ripples: tuple[tuple[int, Targets], ...]
    signature_salt: bytes | None = None  # derived from wave.W's signatures (salt.py)


@dataclass(frozen=True)
class VerifiedMetadata:
    """Every role of a bundle after the TUF workflow verified it."""

    targets: Targets
    waves: tuple[VerifiedWave, ...]
    evidence: tuple[MerkleEvidence, ...]


class _Deny(Exception):
    """A rule failed: carries the reason and the message for people."""

    def __init__(self, reason: Reason, message: str, wave: str | None = None):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.wave = wave


# --------------------------------------------------------------------------
# Reading the profile


@dataclass(frozen=True)
class _Policy:
    max_ripple_size: int | None
    online_complete: bool
    salt: bytes
    max_fraction_ppm: int
    plan: Plan | None = None


@dataclass(frozen=True)
class _Ripple:
    index: int
    role: str
    membership: Membership
    stage: int | None = None

    @property
    def size(self) -> int:
        """Its own signed size: UUIDs listed, Merkle ``size`` or fraction ppm."""
        m = self.membership
        if isinstance(m, ListMembership):
            return len(m.uuids)
        if isinstance(m, MerkleMembership):
            return m.size
        assert isinstance(m, FractionMembership)  # noqa: S101 - the three encodings
        return m.parts_per_million


@dataclass(frozen=True)
class _Wave:
    name: str
    version: int
    policy: _Policy
    state: str
    ripples: tuple[_Ripple, ...]
    artifacts: tuple[tuple[str, TargetFile], ...]
    accounting: tuple[tuple[int, int], ...] = ()


def _wave_info(w: VerifiedWave) -> tuple[int, _Policy]:
    name = w.name
    raw = w.wave.unrecognized_fields.get(WAVE_FIELD)
    bad = f"wave.{name}: {WAVE_FIELD} "
    if not isinstance(raw, Mapping) or set(raw) != WAVE_KEYS:
        raise _Deny(
            Reason.WAVE_INVALID,
            bad + "is missing or does not have exactly name, tag, version, policy",
            name,
        )
    if raw["name"] != name:
        raise _Deny(Reason.WAVE_INVALID, bad + f"names wave {_show(raw['name'])}", name)
    tag, version, policy = raw["tag"], raw["version"], raw["policy"]
    if not is_label(tag):
        raise _Deny(Reason.WAVE_INVALID, bad + f"has a bad tag {_show(tag)}", name)
    if not is_version_text(version):
        raise _Deny(Reason.WAVE_INVALID, bad + f"has a bad version {_show(version)}", name)
    if not isinstance(policy, Mapping):
        raise _Deny(Reason.WAVE_INVALID, bad + "has no policy object", name)
    unknown = sorted(str(k) for k in policy if k not in POLICY_KEYS and k != PLAN_KEY)
    if unknown:
        raise _Deny(
            Reason.POLICY_UNSUPPORTED,
            f"wave.{name}: policy has members this verifier cannot enforce: "
            + ", ".join(unknown)
            + " (update the verifier)",
            name,
        )
    try:
        check_policy(policy)
    except InputError as e:
        raise _Deny(Reason.WAVE_INVALID, bad + str(e), name) from None
    carried = policy["fraction_salt"]
    if carried is not None and w.wave.version == 1:
        raise _Deny(
            Reason.WAVE_INVALID,
            bad + "carries a fraction salt in its first version; it must be derived "
            "from the offline signatures (policy.fraction_salt null)",
            name,
        )
    salt = bytes.fromhex(carried) if carried is not None else w.signature_salt
    if salt is None:
        raise _Deny(Reason.WAVE_INVALID, bad + "has no signatures to derive its salt", name)
    return (
        int(version),
        _Policy(
            policy["max_ripple_size"],
            policy["online_complete"],
            salt,
            policy["max_fraction_ppm"],
            parse_plan(policy[PLAN_KEY]) if PLAN_KEY in policy else None,
        ),
    )


def _same_keys(
    a: DelegatedRole, a_keys: Mapping[str, Key], b: DelegatedRole, b_keys: Mapping[str, Key]
) -> bool:
    """Same threshold and the same keys: ids and key material (keytype, scheme, keyval)."""
    return (
        set(a.keyids) == set(b.keyids)
        and a.threshold == b.threshold
        and all(same_key(a_keys.get(k), b_keys.get(k)) for k in a.keyids)
    )


def _check_key_ids(
    owner: str, keys: Mapping[str, Key], role: DelegatedRole | None, wave: str
) -> None:
    """Each key of ``role`` has the key id computed from its material.

    python-tuf does not recompute key ids: a delegation could bind an
    authorised key id to other key material.
    """
    for keyid in role.keyids if role is not None else ():
        key = keys.get(keyid)
        if key is None or key_id_of(key) != keyid:
            raise _Deny(
                Reason.WAVE_INVALID,
                f"{owner}: key id {_show(keyid)}, delegated for wave {wave}, is not "
                "the SHA-256 of its key material (or names no key)",
                wave,
            )


def _check_wave_delegation(w: VerifiedWave) -> DelegatedRole:
    """``wave.W`` delegates exactly ``rollout.W``, terminating, no paths."""
    name, rollout = w.name, rollout_role(w.name)
    d = w.wave.delegations
    roles = d.roles if d is not None and d.roles is not None else {}
    if list(roles) != [rollout]:
        raise _Deny(
            Reason.WAVE_INVALID,
            f"wave.{name} must delegate exactly one role, {rollout}",
            name,
        )
    role = roles[rollout]
    if not role.terminating or role.paths != []:
        raise _Deny(
            Reason.WAVE_INVALID,
            f"wave.{name}: the {rollout} delegation must be terminating with no paths",
            name,
        )
    assert d is not None  # noqa: S101 - it delegates a role
    _check_key_ids(f"wave.{name}", d.keys, role, name)
    return role


def _accounting(name: str, raw: object, count: int, plan: Plan) -> tuple[tuple[int, int], ...]:
    """The rollout's ``accounting``: one (stage, size) per ripple, stages non-decreasing."""
    bad = f"rollout.{name}: {ROLLOUT_FIELD}.accounting "
    if not isinstance(raw, list | tuple) or len(raw) != count:
        raise _Deny(Reason.WAVE_INVALID, bad + f"must list one entry per ripple ({count})", name)
    out: list[tuple[int, int]] = []
    last = 1
    for k, entry in enumerate(raw, 1):
        if not isinstance(entry, Mapping) or set(entry) != {"stage", "size"}:
            raise _Deny(Reason.WAVE_INVALID, bad + f"entry {k} is not {{stage, size}}", name)
        stage, size = entry["stage"], entry["size"]
        if not _is_int(stage) or not last <= stage <= len(plan.stages):
            raise _Deny(
                Reason.WAVE_INVALID,
                bad + f"entry {k} names stage {_show(stage)}: stages run 1 to "
                f"{len(plan.stages)} and never go back",
                name,
            )
        if not is_ripple_count(size):
            raise _Deny(Reason.WAVE_INVALID, bad + f"entry {k} has a bad size", name)
        last = stage
        out.append((stage, size))
    return tuple(out)


def _rollout_info(
    w: VerifiedWave, delegation: DelegatedRole, plan: Plan | None = None
) -> tuple[str, int, tuple[tuple[int, int], ...]]:
    name = w.name
    raw = w.rollout.unrecognized_fields.get(ROLLOUT_FIELD)
    bad = f"rollout.{name}: {ROLLOUT_FIELD} "
    keys = ROLLOUT_KEYS | {ACCOUNTING_KEY} if plan is not None else ROLLOUT_KEYS
    if not isinstance(raw, Mapping) or set(raw) != keys:
        raise _Deny(
            Reason.WAVE_INVALID,
            bad
            + "is missing or does not have exactly wave, state, ripples"
            + (", accounting (the wave has a plan)" if plan is not None else ""),
            name,
        )
    state, count = raw["state"], raw["ripples"]
    if raw["wave"] != name:
        raise _Deny(Reason.WAVE_INVALID, bad + f"names wave {_show(raw['wave'])}", name)
    if not isinstance(state, str) or state not in ROLLOUT_STATES:
        raise _Deny(Reason.WAVE_INVALID, bad + f"has a bad state {_show(state)}", name)
    if not is_ripple_count(count):
        raise _Deny(Reason.WAVE_INVALID, bad + "has a bad ripple count", name)
    accounting = () if plan is None else _accounting(name, raw[ACCOUNTING_KEY], count, plan)
    if w.rollout.targets:
        raise _Deny(Reason.WAVE_INVALID, f"rollout.{name} must not list artifacts", name)
    d = w.rollout.delegations
    if d is not None and d.succinct_roles is not None:
        raise _Deny(Reason.WAVE_INVALID, f"rollout.{name} uses hashed bins", name)
    roles = d.roles if d is not None and d.roles is not None else {}
    # The length first: the count may be up to 2**63-1.
    if len(roles) != count or list(roles) != [ripple_role(name, k) for k in range(1, count + 1)]:
        raise _Deny(
            Reason.WAVE_INVALID,
            f"rollout.{name} says {count} ripples but delegates "
            f"{len(roles)} roles that are not ripple.{name}.1..{count} in order",
            name,
        )
    wave_d = w.wave.delegations
    wave_keys = wave_d.keys if wave_d is not None else {}
    ripple_keys = d.keys if d is not None else {}
    for role in roles.values():
        if (
            not role.terminating
            or role.paths != []
            or not _same_keys(role, ripple_keys, delegation, wave_keys)
        ):
            raise _Deny(
                Reason.WAVE_INVALID,
                f"rollout.{name}: {role.name} must be delegated to the rollout keys "
                "(same key ids and key material) and threshold, terminating, with no paths",
                name,
            )
    return state, count, accounting


def _ripple(w: VerifiedWave, index: int, ripple: Targets, policy: _Policy) -> _Ripple:
    name = w.name
    role = ripple_role(name, index)
    raw = ripple.unrecognized_fields.get(RIPPLE_FIELD)
    planned = policy.plan is not None
    keys = RIPPLE_KEYS | {STAGE_KEY} if planned else RIPPLE_KEYS
    if not isinstance(raw, Mapping) or set(raw) != keys:
        raise _Deny(
            Reason.RIPPLE_INVALID,
            f"{role}: {RIPPLE_FIELD} is missing or does not have exactly wave, index, membership"
            + (", stage (the wave has a plan)" if planned else ""),
            name,
        )
    stage = raw.get(STAGE_KEY)
    if planned and not (_is_int(stage) and 1 <= stage <= MAX_STAGE_NUMBER):
        raise _Deny(Reason.RIPPLE_INVALID, f"{role}: bad stage {_show(stage)}", name)
    if raw["wave"] != name or not _is_int(raw["index"]) or raw["index"] != index:
        raise _Deny(
            Reason.RIPPLE_INVALID,
            f"{role} says it is ripple {_show(raw['index'])} of wave "
            f"{_show(raw['wave'])}: it does not match its role name",
            name,
        )
    if ripple.targets or ripple.delegations is not None:
        raise _Deny(
            Reason.RIPPLE_INVALID,
            f"{role} must not list artifacts or delegate",
            name,
        )
    try:
        membership = membership_from_dict(raw["membership"])
    except InputError as e:
        raise _Deny(Reason.RIPPLE_INVALID, f"{role}: {e}", name) from None
    if (
        isinstance(membership, FractionMembership)
        and membership.parts_per_million > policy.max_fraction_ppm
    ):
        raise _Deny(
            Reason.POLICY_VIOLATION,
            f"{role} is a fraction of {membership.parts_per_million} ppm; the wave's policy "
            f"allows at most {policy.max_fraction_ppm} ppm",
            name,
        )
    limit = policy.max_ripple_size
    if limit is not None:
        size = None
        if isinstance(membership, ListMembership):
            size = len(membership.uuids)
        elif isinstance(membership, MerkleMembership):
            size = membership.size
        if size is not None and size > limit:
            raise _Deny(
                Reason.POLICY_VIOLATION,
                f"{role} names {size} devices; the wave's policy allows at most {limit} per ripple",
                name,
            )
    return _Ripple(index, role, membership, stage if planned else None)


def _custom(target: TargetFile) -> tuple[frozenset[str], frozenset[str], int] | None:
    """``(hardwareIds, tags, version)`` of a target, or None if not well formed."""
    custom = target.custom
    if not isinstance(custom, Mapping):
        return None
    hw, tags, version = (
        custom.get("hardwareIds"),
        custom.get("tags"),
        custom.get("version"),
    )
    if not isinstance(hw, list) or not hw or not all(is_label(h) for h in hw):
        return None
    if not isinstance(tags, list) or not tags or not all(is_label(t) for t in tags):
        return None
    if not is_version_text(version):
        return None
    return frozenset(hw), frozenset(tags), int(version)


def _read_wave(
    w: VerifiedWave,
    wave_delegation: DelegatedRole | None,
    cancelled: frozenset[str],
    targets_keys: Mapping[str, Key],
) -> _Wave:
    name = w.name
    _check_key_ids("targets", targets_keys, wave_delegation, name)
    version, policy = _wave_info(w)
    rollout_delegation = _check_wave_delegation(w)
    state, _count, accounting = _rollout_info(w, rollout_delegation, policy.plan)
    if name in cancelled:
        state = "cancelled"  # a cancel this device verified before is final
    ripples = tuple(_ripple(w, k, r, policy) for k, r in w.ripples)
    artifacts = []
    for path, target in w.wave.targets.items():
        info = _custom(target)
        if info is None or info[2] != version:
            raise _Deny(
                Reason.WAVE_INVALID,
                f"wave.{name}: artifact {_show(path)} lacks well-formed custom "
                f"hardwareIds, tags and version {version}",
                name,
            )
        if wave_delegation is None or not wave_delegation.is_delegated_path(path):
            raise _Deny(
                Reason.WAVE_INVALID,
                f"wave.{name}: artifact {_show(path)} is outside the paths "
                "targets delegated to the wave",
                name,
            )
        artifacts.append((path, target))
    return _Wave(name, version, policy, state, ripples, tuple(artifacts), accounting)


# --------------------------------------------------------------------------
# Deciding


@dataclass(frozen=True)
class _Outcome:
    reason: Reason
    version: int
    path: str
    target: TargetFile
    wave: str | None
    ripple: int | None
    message: str


# When several candidates of the same (highest) version are denied, the
# reason reported is the first of these.
_DENIAL_ORDER: Final = (
    Reason.POLICY_VIOLATION,
    Reason.PLAN_VIOLATION,
    Reason.WAVE_CANCELLED,
    Reason.WAVE_PAUSED,
    Reason.PLAN_NOT_STARTED,
    Reason.NOT_MEMBER,
)
MAX_STAGE_NUMBER: Final = 64


def _artifact(path: str, target: TargetFile) -> Artifact:
    return Artifact(path, target.length, dict(target.hashes), dict(target.custom))


def _plan_check(wave: _Wave, ripple: _Ripple, at: datetime) -> tuple[Reason, str] | None:
    """None if the plan lets ``ripple`` in at ``at``, else the denial (verifier.md 4.3)."""
    plan = wave.policy.plan
    if plan is None:
        return None
    k, stage_no, size = ripple.index, ripple.stage, ripple.size
    if k > len(wave.accounting) or wave.accounting[k - 1] != (stage_no, size):
        entry = wave.accounting[k - 1] if k <= len(wave.accounting) else None
        return (
            Reason.PLAN_VIOLATION,
            f"{ripple.role} is stage {stage_no} of size {size}, but rollout.{wave.name} "
            f"accounts it as {entry if entry is not None else 'nothing'} (stage, size)",
        )
    # The ripple's stage equals its accounting entry's, which _accounting bounds
    # to the plan's stages; a planned wave's ripples always have a stage.
    assert stage_no is not None  # noqa: S101
    stage = plan.stage(stage_no)
    fraction = isinstance(ripple.membership, FractionMembership)
    if fraction != stage.is_fraction:
        return (
            Reason.PLAN_VIOLATION,
            f"{ripple.role} is a {'fraction' if fraction else 'device-set'} ripple in stage "
            f"{stage_no} ({stage.name}), which holds "
            f"{'fraction' if stage.is_fraction else 'device-set'} ripples",
        )
    if stage.not_before is not None and at < stage.not_before:
        return (
            Reason.PLAN_NOT_STARTED,
            f"{ripple.role} is in stage {stage_no} ({stage.name}) of wave {wave.name}, which "
            f"may not start before {stage.not_before:%Y-%m-%dT%H:%M:%SZ} (device clock "
            f"{at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ})",
        )
    cap = stage.cap(plan.eligible)
    if fraction:
        total, unit = size, "ppm"
    else:
        total = sum(n for s, n in wave.accounting[:k] if not plan.stages[s - 1].is_fraction)
        unit = "devices"
    if total > cap:
        return (
            Reason.PLAN_VIOLATION,
            f"with {ripple.role}, wave {wave.name} reaches {total} {unit}; stage {stage_no} "
            f"({stage.name}) allows at most {cap}",
        )
    return None


def _membership_of(
    wave: _Wave, device: DeviceIdentity, evidence: Mapping[str, MerkleEvidence], at: datetime
) -> tuple[Reason, int | None, str]:
    denied: tuple[Reason, str] | None = None
    for ripple in wave.ripples:
        m = ripple.membership
        if isinstance(m, FractionMembership):
            if not fraction_member(wave.policy.salt, device.uuid, m.parts_per_million):
                continue
            reason = Reason.ALLOWED_FRACTION
        elif is_member(m, device.uuid, salt=wave.policy.salt, evidence=evidence.get(ripple.role)):
            reason = Reason.ALLOWED_RIPPLE
        else:
            continue
        refused = _plan_check(wave, ripple, at)
        if refused is None:
            return reason, ripple.index, ""
        denied = denied or refused
    if denied is not None:
        return denied[0], None, denied[1]
    return Reason.NOT_MEMBER, None, ""


def _wave_outcome(
    wave: _Wave,
    path: str,
    target: TargetFile,
    device: DeviceIdentity,
    evidence: Mapping[str, MerkleEvidence],
    at: datetime,
) -> _Outcome:
    v, name = wave.version, wave.name
    if wave.state == "cancelled":
        return _Outcome(
            Reason.WAVE_CANCELLED,
            v,
            path,
            target,
            name,
            None,
            f"wave {name} (version {v}) was cancelled",
        )
    if wave.state == "complete":
        if not wave.policy.online_complete:
            return _Outcome(
                Reason.POLICY_VIOLATION,
                v,
                path,
                target,
                name,
                None,
                f"rollout.{name} marks wave {name} complete, but its policy does "
                "not let the rollout keys complete it",
            )
        plan = wave.policy.plan
        last = plan.last_not_before if plan is not None else None
        if last is not None and at < last:
            return _Outcome(
                Reason.PLAN_NOT_STARTED,
                v,
                path,
                target,
                name,
                None,
                f"rollout.{name} marks wave {name} complete, but its plan's last stage may "
                f"not start before {last:%Y-%m-%dT%H:%M:%SZ}",
            )
        return _Outcome(
            Reason.ALLOWED_COMPLETE,
            v,
            path,
            target,
            name,
            None,
            f"wave {name} is complete: every device of its tag may install {path}",
        )
    reason, index, why = _membership_of(wave, device, evidence, at)
    if reason in (Reason.PLAN_VIOLATION, Reason.PLAN_NOT_STARTED):
        return _Outcome(reason, v, path, target, name, None, why)
    if wave.state == "paused":  # after the plan checks (specs/verifier.md 4)
        return _Outcome(
            Reason.WAVE_PAUSED,
            v,
            path,
            target,
            name,
            None,
            f"wave {name} (version {v}) is paused: it lets no device in until resumed",
        )
    if reason is Reason.NOT_MEMBER:
        return _Outcome(
            reason,
            v,
            path,
            target,
            name,
            None,
            f"this device is in none of the {len(wave.ripples)} ripple(s) of wave "
            f"{name} in the bundle",
        )
    how = "its fraction" if reason is Reason.ALLOWED_FRACTION else "its device set"
    return _Outcome(
        reason,
        v,
        path,
        target,
        name,
        index,
        f"ripple {index} of wave {name} names this device ({how})",
    )


def _check_evidence(
    evidence: Sequence[MerkleEvidence], waves: Sequence[_Wave], uuid: str
) -> dict[str, MerkleEvidence]:
    ripples = {r.role: r for w in waves for r in w.ripples}
    out: dict[str, MerkleEvidence] = {}
    for e in evidence:
        ripple = ripples.get(e.role)
        if ripple is None or not isinstance(ripple.membership, MerkleMembership):
            raise _Deny(
                Reason.EVIDENCE_INVALID,
                f"evidence for {e.role}, which is not a Merkle-committed ripple",
            )
        if not verify_inclusion(uuid, e, ripple.membership):
            raise _Deny(
                Reason.EVIDENCE_INVALID,
                f"the inclusion proof for {e.role} does not prove this device "
                "is in the signed commitment",
            )
        out[e.role] = e
    return out


def decide_rules(
    md: VerifiedMetadata,
    device: DeviceIdentity,
    cancelled: frozenset[str] = frozenset(),
    at: datetime | None = None,
) -> Decision:
    """Decide from verified metadata; see ``specs/verifier.md`` section 4.

    ``cancelled`` names the waves this device has seen cancelled before: they
    stay cancelled whatever a later rollout role says. ``at`` is the device
    clock that a wave's plan is checked against (default: now, UTC).
    """
    try:
        return _decide(md, device, cancelled, at or datetime.now(UTC))
    except _Deny as d:
        return Decision.deny(d.reason, d.message, wave=d.wave)


class ProfileError(InputError):
    """Metadata breaks the tufwaves profile; ``reason`` is the device's reason code.

    One of ``wave_invalid``, ``ripple_invalid``, ``policy_unsupported`` or
    ``policy_violation``.
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


WaveReading = _Wave
"""What :func:`read_wave` read: policy (with plan), state, ripples, accounting."""


def read_wave(
    w: VerifiedWave, wave_delegation: DelegatedRole | None, targets_keys: Mapping[str, Key]
) -> WaveReading:
    """Read one wave's verified roles with the device's profile rules.

    The audit (``specs/audit.md``) reads every published state of a wave with
    exactly the rules a device applies, so what a device refuses the audit
    names. Nothing is decided about a device; ``cancelled`` history is not used.

    Raises:
        ProfileError: the profile is broken; the message says how.
    """
    try:
        return _read_wave(w, wave_delegation, frozenset(), targets_keys)
    except _Deny as d:
        raise ProfileError(d.reason, d.message) from None


def seen_cancelled(md: VerifiedMetadata) -> frozenset[str]:
    """The waves whose verified rollout role says ``cancelled``."""
    names = set()
    for w in md.waves:
        raw = w.rollout.unrecognized_fields.get(ROLLOUT_FIELD)
        if (
            isinstance(raw, Mapping)
            and raw.get("wave") == w.name
            and raw.get("state") == "cancelled"
        ):
            names.add(w.name)
    return frozenset(names)


def _decide(
    md: VerifiedMetadata, device: DeviceIdentity, cancelled: frozenset[str], at: datetime
) -> Decision:
    delegations = md.targets.delegations
    wave_roles = delegations.roles if delegations is not None and delegations.roles else {}
    keys = delegations.keys if delegations is not None else {}
    waves = [_read_wave(w, wave_roles.get(wave_role(w.name)), cancelled, keys) for w in md.waves]
    evidence = _check_evidence(md.evidence, waves, device.uuid)

    matching: list[_Outcome] = []
    candidates: list[tuple[str, TargetFile, _Wave | None]] = [
        (p, t, None) for p, t in md.targets.targets.items()
    ]
    candidates += [(p, t, w) for w in waves for p, t in w.artifacts]
    for path, target, wave in candidates:
        info = _custom(target)
        if info is None:
            continue  # a production target outside the profile: not for devices
        hardware_ids, tags, version = info
        if device.hardware_id not in hardware_ids or device.tag not in tags:
            continue
        if version <= device.installed_version:
            matching.append(_Outcome(Reason.NOT_NEWER, version, path, target, None, None, ""))
            continue
        if wave is None:
            matching.append(
                _Outcome(
                    Reason.ALLOWED_PRODUCTION,
                    version,
                    path,
                    target,
                    None,
                    None,
                    f"{path} is a production release for this device",
                )
            )
        else:
            matching.append(_wave_outcome(wave, path, target, device, evidence, at))

    if not matching:
        return Decision.deny(
            Reason.NO_MATCHING_ARTIFACT,
            f"no artifact in the bundle is for hardware id {device.hardware_id} "
            f"and tag {device.tag}",
        )
    newer = [o for o in matching if o.reason is not Reason.NOT_NEWER]
    if not newer:
        best = max(o.version for o in matching)
        return Decision.deny(
            Reason.NOT_NEWER,
            f"the newest artifact for this device is version {best}; it runs "
            f"version {device.installed_version}",
        )
    allowed = [o for o in newer if o.reason.allowed]
    if allowed:
        # Highest version; ties go to production, then wave name, then path.
        best_o = min(
            allowed,
            key=lambda o: (-o.version, o.wave is not None, o.wave or "", o.path),
        )
        return Decision(
            True,
            best_o.reason,
            best_o.message,
            _artifact(best_o.path, best_o.target),
            best_o.wave,
            best_o.ripple,
        )
    top = max(o.version for o in newer)
    denied = sorted(
        (o for o in newer if o.version == top),
        key=lambda o: (_DENIAL_ORDER.index(o.reason), o.wave or "", o.path),
    )
    first = denied[0]
    return Decision.deny(first.reason, first.message, wave=first.wave)
