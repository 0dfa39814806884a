"""The audit of one wave's published history (``specs/audit.md``).

:func:`audit_wave` reads only published files (a :class:`~tufwaves.audit.Source`):
the roots, every snapshot the timestamp's history implies, and every version
of ``targets``, ``wave.W``, ``rollout.W`` and ``ripple.W.K`` those snapshots
list. Each published state (what one snapshot lists) is verified the way a
device verifies it — python-tuf's ``verify_delegate`` on every delegation,
then the device's profile rules (:func:`tufwaves.device._rules.read_wave`) —
and the history across versions is checked against the rules of
``specs/metadata.md`` §5-6 and the wave's signed policy and plan.

Nothing here raises for what the files say: every problem is a
:class:`Violation`. Only a source that cannot be read, or a wave that was
never published, raises.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, Targets, Timestamp

from tufwaves.audit._sources import Source, cap_of
from tufwaves.device._rules import ProfileError, Reason, VerifiedWave, WaveReading, read_wave
from tufwaves.device.membership import (
    FractionMembership,
    ListMembership,
    MerkleMembership,
    membership_from_dict,
)
from tufwaves.device.plan import Plan, format_time
from tufwaves.device.profile import (
    ACCOUNTING_KEY,
    RIPPLE_FIELD,
    ROLLOUT_FIELD,
    WAVE_FIELD,
    check_wave_name,
    ripple_role,
    rollout_role,
    split_role,
    wave_role,
)
from tufwaves.device.salt import signature_salt
from tufwaves.errors import InputError, StorageError
from tufwaves.server.repository import SNAPSHOT_DAYS

__all__ = ["KINDS", "AuditReport", "TimelineEntry", "Violation", "audit_wave"]

SNAPSHOT_LIFETIME: Final = timedelta(days=SNAPSHOT_DAYS)
"""A tufwaves repository signs every snapshot to expire this long after its publish."""

ALLOWED_TRANSITIONS: Final = frozenset(
    {
        ("active", "active"),
        ("active", "paused"),
        ("paused", "active"),
        ("active", "cancelled"),
        ("paused", "cancelled"),
        ("active", "complete"),
    }
)
FINAL_STATES: Final = frozenset({"cancelled", "complete"})

KINDS: Final = {
    "file_missing": "a file the history needs is not in the mirror",
    "file_too_large": "a file is over the size cap of its role",
    "unparseable": "not TUF metadata of the expected type",
    "version_mismatch": "N.ROLE.json does not hold version N of ROLE",
    "hash_mismatch": "the snapshot does not match the timestamp's length and hash",
    "root_mismatch": "the trusted root given is not the mirror's root of that version",
    "signature_invalid": "fewer valid signatures than the threshold of the delegation in force",
    "time_regressed": "a snapshot's publish time is earlier than the one before",
    "snapshot_rollback": "a snapshot lists an older version of a role, or drops it",
    "version_skipped": "a role's versions do not run 1, 2, 3, ... across snapshots",
    "profile_invalid": "a published state breaks the tufwaves profile (device: *_invalid)",
    "policy_limit": "a ripple is over the wave's signed policy limits",
    "wave_changed": "a later version of the wave role changed its content",
    "state_transition": "a rollout state change that specs/metadata.md section 5 forbids",
    "final_state_changed": "a version after cancelled or complete changed more than its keys",
    "ripple_removed": "the ripple count went down",
    "ripples_skipped": "one version added more than one ripple",
    "ripple_while_inactive": "a ripple was added while the wave was not active",
    "ripple_changed": "a published ripple's content changed",
    "accounting_rewritten": "an earlier accounting entry changed",
    "accounting_mismatch": "an accounting entry differs from its ripple's signed stage and size",
    "stage_skipped": "the first ripple is not in stage 1, or a stage was skipped",
    "stage_kind": "a fraction ripple in a count stage, or a device-set ripple in a fraction one",
    "cap_exceeded": "the ripples so far exceed their stage's cumulative cap",
    "complete_not_allowed": "complete without online_complete and without production targets",
    "not_before": "a ripple was published before its stage's not_before (evidence)",
    "soak": "a stage started before its soak after the previous stage's start (evidence)",
    "complete_early": "complete before the plan's last not_before (evidence)",
    "after_expiry": "the rollout changed after the wave expired (evidence)",
    "check_failed": "a check could not be completed on this input (fail closed)",
}
"""Every violation code and what it means; ``specs/audit.md`` §4 is the normative list."""

_LOWER_HEX: Final = re.compile(r"[0-9a-f]*")


@dataclass(frozen=True)
class Violation:
    """One broken rule: its code (:data:`KINDS`), the role version, a message."""

    kind: str
    role: str
    version: int | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return {
            "kind": self.kind,
            "role": self.role,
            "version": self.version,
            "message": self.message,
        }


@dataclass(frozen=True)
class TimelineEntry:
    """One published version of one of the wave's roles.

    ``snapshot`` is the first snapshot that listed it (None: no snapshot ever
    did, so it was never published) and ``evidence`` that snapshot's publish
    time as its online-signed expiry shows it (``specs/audit.md`` §5).
    """

    snapshot: int | None
    evidence: datetime | None
    role: str
    version: int
    state: str | None = None
    ripples: int | None = None
    stage: int | None = None
    size: int | None = None
    signers: tuple[str, ...] = ()
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return {
            "snapshot": self.snapshot,
            "evidence": None if self.evidence is None else format_time(self.evidence),
            "role": self.role,
            "version": self.version,
            "state": self.state,
            "ripples": self.ripples,
            "stage": self.stage,
            "size": self.size,
            "signers": list(self.signers),
            "note": self.note,
        }


@dataclass(frozen=True)
class AuditReport:
    """What :func:`audit_wave` found: the timeline and every violation."""

    wave: str
    source: str
    roots: int
    snapshots: int
    timeline: tuple[TimelineEntry, ...]
    violations: tuple[Violation, ...]

    @property
    def ok(self) -> bool:
        """True when the history broke no rule."""
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (for ``--json``)."""
        return {
            "wave": self.wave,
            "source": self.source,
            "roots": self.roots,
            "snapshots": self.snapshots,
            "ok": self.ok,
            "timeline": [e.to_dict() for e in self.timeline],
            "violations": [v.to_dict() for v in self.violations],
        }


@dataclass
class _State:
    """What one snapshot lists for the wave (versions), and when."""

    snapshot: int
    evidence: datetime | None
    root: int
    targets: int | None
    wave: int
    rollout: int | None
    ripples: tuple[tuple[int, int], ...]

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.root, self.targets, self.wave, self.rollout, self.ripples)


@dataclass
class _Seen:
    snapshot: int
    evidence: datetime | None
    signers: tuple[str, ...] = ()


@dataclass
class _Audit:
    source: Source
    name: str
    trusted_root: bytes | None
    violations: list[Violation] = field(default_factory=list)
    files: dict[str, Metadata[Any] | None] = field(default_factory=dict)
    roots: dict[int, Root] = field(default_factory=dict)
    verified: dict[tuple[str, int, str], tuple[str, ...]] = field(default_factory=dict)
    seen: dict[tuple[str, int], _Seen] = field(default_factory=dict)
    readings: dict[tuple[Any, ...], WaveReading | None] = field(default_factory=dict)
    stage_start: dict[int, datetime] = field(default_factory=dict)

    # ------------------------------------------------------------ utilities
    def flag(self, kind: str, role: str, version: int | None, message: str) -> None:
        v = Violation(kind, role, version, message)
        if v not in self.violations:
            self.violations.append(v)

    def load(
        self, role: str, version: int | None, kind: type[Any], data: bytes | None = None
    ) -> Metadata[Any] | None:
        """Parse ``N.ROLE.json`` (``timestamp.json`` when version is None), once.

        ``data``: the file's bytes when the caller has read them already.
        """
        name = f"{role}.json" if version is None else f"{version}.{role}.json"
        if name in self.files:
            return self.files[name]
        self.files[name] = None
        if data is None:
            data = self.source.read(name)
        if data is None:
            self.flag("file_missing", role, version, f"{name} is not in {self.source.where}")
            return None
        if len(data) > cap_of(name):
            self.flag("file_too_large", role, version, f"{name} is over {cap_of(name):,} bytes")
            return None
        try:
            md: Metadata[Any] = Metadata.from_bytes(data)
            if not isinstance(md.signed, kind):
                raise ValueError(f"it is {md.signed.type!r} metadata, not {kind.type!r}")
            md.signed_bytes  # noqa: B018 - canonical JSON must exist for signatures
        except Exception as e:  # python-tuf raises several types; fail closed
            self.flag("unparseable", role, version, f"{name} is not valid TUF metadata: {e}")
            return None
        if version is not None and md.signed.version != version:
            self.flag(
                "version_mismatch",
                role,
                version,
                f"{name} holds version {md.signed.version} of {role}",
            )
        self.files[name] = md
        return md

    def signers(
        self, delegator: Root | Targets, label: str, role: str, version: int, md: Metadata[Any]
    ) -> tuple[str, ...]:
        """Key ids that validly signed ``md`` as ``delegator`` delegates ``role``."""
        cache = (role, version, label)
        if cache in self.verified:
            return self.verified[cache]
        result_signed: tuple[str, ...] = ()
        try:
            result = delegator.get_verification_result(role, md.signed_bytes, md.signatures)
        except Exception as e:  # no such delegation, bad key data: fail closed
            self.flag("signature_invalid", role, version, f"{label} cannot verify {role}: {e}")
        else:
            result_signed = tuple(sorted(result.signed))
            unknown = sorted(set(md.signatures) - set(result.signed) - set(result.unsigned))
            upper = [k for k, s in md.signatures.items() if not _LOWER_HEX.fullmatch(s.signature)]
            if upper:
                self.flag(
                    "signature_invalid",
                    role,
                    version,
                    f"{role} v{version} has signatures that are not lowercase hex "
                    f"(key ids {', '.join(k[:8] for k in upper)})",
                )
            elif not result.verified:
                self.flag(
                    "signature_invalid",
                    role,
                    version,
                    f"{role} v{version} has {len(result.signed)} valid signatures of the "
                    f"{result.threshold} that {label} requires"
                    + (
                        f"; signed by keys it does not authorise: "
                        f"{', '.join(k[:8] for k in unknown)}"
                        if unknown
                        else ""
                    ),
                )
        self.verified[cache] = result_signed
        return result_signed

    def guarded(
        self, check: Callable[[Any], None], arg: Any, where: tuple[str, int | None]
    ) -> None:
        """Run ``check``; an unexpected exception is a failed check, never a crash."""
        try:
            check(arg)
        except StorageError:
            raise
        except Exception as e:  # fail closed: what cannot be checked did not pass
            self.flag(
                "check_failed",
                where[0],
                where[1],
                f"a check could not be completed ({type(e).__name__}: {e}); "
                "the history is not accepted",
            )

    # ---------------------------------------------------------- the top
    def walk_roots(self) -> int:
        version = 1
        previous: Root | None = None
        anchor = self._anchor()
        while True:
            data = self.source.read(f"{version}.root.json")
            if data is None:
                break
            md = self.load("root", version, Root, data)
            if md is None:
                previous = None
                version += 1
                continue
            if (
                anchor is not None
                and version == anchor.signed.version
                and md.signed_bytes != anchor.signed_bytes
            ):
                self.flag(
                    "root_mismatch",
                    "root",
                    version,
                    f"{version}.root.json is not the trusted root of that version",
                )
            if previous is not None:
                self.signers(previous, f"root v{version - 1}", "root", version, md)
            self.signers(md.signed, f"root v{version} itself", "root", version, md)
            self.roots[version] = md.signed
            previous = md.signed
            version += 1
        if not self.roots:
            raise InputError(
                f"{self.source.where} has no readable 1.root.json: not a published "
                "tufwaves repository"
            )
        if anchor is not None and anchor.signed.version not in self.roots:
            self.flag(
                "root_mismatch", "root", anchor.signed.version, "the mirror lacks the trusted root"
            )
        return max(self.roots)

    def _anchor(self) -> Metadata[Root] | None:
        if self.trusted_root is None:
            return None
        try:
            md = Metadata[Root].from_bytes(self.trusted_root)
            md.signed.verify_delegate("root", md.signed_bytes, md.signatures)
        except Exception as e:
            raise InputError(f"the trusted root is not a valid, self-signed root: {e}") from None
        if not isinstance(md.signed, Root):
            raise InputError("the trusted root is not root metadata")
        return md

    def snapshot_count(self) -> int:
        md = self.load("timestamp", None, Timestamp)
        if md is None:
            raise InputError(f"{self.source.where} has no readable timestamp.json")
        newest = self.roots[max(self.roots)]
        self.signers(newest, f"root v{max(self.roots)}", "timestamp", md.signed.version, md)
        meta: MetaFile = md.signed.snapshot_meta
        data = self.source.read(f"{meta.version}.snapshot.json")
        if data is not None:
            try:
                meta.verify_length_and_hashes(data)
            except Exception as e:
                self.flag("hash_mismatch", "snapshot", meta.version, str(e))
        return meta.version

    def snapshot_root(self, version: int, md: Metadata[Any], start: int) -> int:
        """The lowest root version from ``start`` whose snapshot keys sign ``md``."""
        for r in sorted(v for v in self.roots if v >= start):
            try:
                self.roots[r].verify_delegate("snapshot", md.signed_bytes, md.signatures)
            except Exception:  # noqa: S112 - try the next root
                continue
            return r
        self.signers(self.roots[start], f"root v{start}", "snapshot", version, md)
        return start

    # -------------------------------------------------------------- walk
    def run(self) -> AuditReport:
        check_wave_name(self.name)
        top_root = self.walk_roots()
        count = self.snapshot_count()
        root_in_force = min(self.roots)
        states: list[_State] = []
        listed: dict[str, int] | None = {}  # None: the snapshot before is unreadable
        last_time: datetime | None = None
        mine = {wave_role(self.name), rollout_role(self.name), "targets"}
        for s in range(1, count + 1):
            md = self.load("snapshot", s, Snapshot)
            if md is None:
                listed = None  # versions may move on across the gap
                continue
            root_in_force = self.snapshot_root(s, md, root_in_force)
            evidence = md.signed.expires - SNAPSHOT_LIFETIME
            if last_time is not None and evidence < last_time:
                self.flag(
                    "time_regressed",
                    "snapshot",
                    s,
                    f"snapshot v{s} was published at {format_time(evidence)} by its expiry, "
                    f"before the snapshot before it ({format_time(last_time)})",
                )
            last_time = evidence
            now = {
                name.removesuffix(".json"): meta.version
                for name, meta in md.signed.meta.items()
                if name.removesuffix(".json") in mine or _is_my_ripple(name, self.name)
            }
            if listed is not None:
                self._listing(s, listed, now)
            listed = now
            wave_v = now.get(wave_role(self.name))
            if wave_v is None:
                continue
            ripples = tuple(
                sorted(
                    (parts[2], v)
                    for role, v in now.items()
                    if (parts := split_role(role)) is not None
                    and parts[0] == "ripple"
                    and parts[2] is not None
                )
            )
            states.append(
                _State(
                    s,
                    evidence,
                    root_in_force,
                    now.get("targets"),
                    wave_v,
                    now.get(rollout_role(self.name)),
                    ripples,
                )
            )
        if not states:
            raise InputError(f"no snapshot of {self.source.where} lists wave {self.name}")
        for state in states:
            self.guarded(self.check_state, state, ("snapshot", state.snapshot))
        self.guarded(self.check_versions, states, (wave_role(self.name), None))
        self.guarded(self.check_soak, states, (rollout_role(self.name), None))
        return AuditReport(
            self.name,
            self.source.where,
            top_root,
            count,
            tuple(self.timeline(states)),
            tuple(self.violations),
        )

    def _listing(self, s: int, before: Mapping[str, int], now: Mapping[str, int]) -> None:
        for role, old in before.items():
            new = now.get(role)
            if new is None or new < old:
                self.flag(
                    "snapshot_rollback",
                    role,
                    new,
                    f"snapshot v{s} lists {role} "
                    + ("no more" if new is None else f"at v{new}")
                    + f"; the snapshot before listed v{old}",
                )
            elif new > old + 1:
                self.flag(
                    "version_skipped",
                    role,
                    new,
                    f"snapshot v{s} lists {role} v{new}; the snapshot before listed v{old}",
                )
        for role, new in now.items():
            if role not in before and new != 1:
                self.flag(
                    "version_skipped",
                    role,
                    new,
                    f"snapshot v{s} is the first to list {role}, at v{new}, not v1",
                )

    # ------------------------------------------------------ one state
    def check_state(self, st: _State) -> None:
        name = self.name
        fresh: list[tuple[str, int]] = []

        def note(role: str, version: int, signers: tuple[str, ...]) -> None:
            if (role, version) not in self.seen:
                self.seen[(role, version)] = _Seen(st.snapshot, st.evidence, signers)
                fresh.append((role, version))

        root = self.roots.get(st.root)
        targets_md = self.load("targets", st.targets, Targets) if st.targets is not None else None
        if targets_md is None or root is None:
            return
        self.signers(root, f"root v{st.root}", "targets", st.targets or 0, targets_md)
        targets: Targets = targets_md.signed
        wave_name = wave_role(name)
        wave_md = self.load(wave_name, st.wave, Targets)
        if wave_md is None:
            return
        note(
            wave_name,
            st.wave,
            self.signers(targets, f"targets v{st.targets}", wave_name, st.wave, wave_md),
        )
        if st.rollout is None:
            return
        roll_name = rollout_role(name)
        roll_md = self.load(roll_name, st.rollout, Targets)
        if roll_md is None:
            return
        note(
            roll_name,
            st.rollout,
            self.signers(wave_md.signed, f"{wave_name} v{st.wave}", roll_name, st.rollout, roll_md),
        )
        ripples: list[tuple[int, Targets]] = []
        for index, version in st.ripples:
            role = ripple_role(name, index)
            md = self.load(role, version, Targets)
            if md is None:
                return
            note(
                role,
                version,
                self.signers(roll_md.signed, f"{roll_name} v{st.rollout}", role, version, md),
            )
            ripples.append((index, md.signed))
        if st.key in self.readings:
            return
        try:
            salt: bytes | None = signature_salt(targets, wave_name, wave_md)
        except InputError:
            salt = None
        delegations = targets.delegations
        wave_delegation = (
            delegations.roles.get(wave_name)
            if delegations is not None and delegations.roles is not None
            else None
        )
        blame = next(
            (r for r in reversed(fresh)),
            (roll_name, st.rollout),
        )
        try:
            reading = read_wave(
                VerifiedWave(name, wave_md.signed, roll_md.signed, tuple(ripples), salt),
                wave_delegation,
                delegations.keys if delegations is not None else {},
            )
        except ProfileError as e:
            kind = "policy_limit" if e.reason is Reason.POLICY_VIOLATION else "profile_invalid"
            self.flag(kind, blame[0], blame[1], f"snapshot v{st.snapshot}: {e}")
            self.readings[st.key] = None
            return
        self.readings[st.key] = reading
        self.check_plan(st, reading, targets, fresh)

    def check_plan(
        self, st: _State, wave: WaveReading, targets: Targets, fresh: list[tuple[str, int]]
    ) -> None:
        roll = (rollout_role(self.name), st.rollout)
        new_rollout = roll in fresh
        if wave.state == "complete" and not wave.policy.online_complete and new_rollout:
            missing = [p for p, _ in wave.artifacts if p not in targets.targets]
            if missing:
                self.flag(
                    "complete_not_allowed",
                    roll[0],
                    roll[1],
                    f"rollout v{st.rollout} says complete, but the wave's policy does not let "
                    f"the rollout keys complete it and targets v{st.targets} does not list "
                    f"its artifacts as production ({missing[0]})",
                )
        plan = wave.policy.plan
        if plan is None:
            return
        if wave.state == "complete" and new_rollout and st.evidence is not None:
            last = plan.last_not_before
            if last is not None and st.evidence < last:
                self.flag(
                    "complete_early",
                    roll[0],
                    roll[1],
                    f"rollout v{st.rollout} (complete) was published at "
                    f"{format_time(st.evidence)}, before the plan's last not_before "
                    f"{format_time(last)}",
                )
        self.check_accounting(st, wave, plan)
        for ripple in wave.ripples:
            entry = (
                wave.accounting[ripple.index - 1] if ripple.index <= len(wave.accounting) else None
            )
            if entry != (ripple.stage, ripple.size):
                self.flag(
                    "accounting_mismatch",
                    roll[0],
                    roll[1],
                    f"rollout v{st.rollout} accounts {ripple.role} as "
                    + ("nothing" if entry is None else f"stage {entry[0]}, size {entry[1]}")
                    + f"; the ripple itself is stage {ripple.stage}, size {ripple.size}",
                )
            if ripple.stage is None or not 1 <= ripple.stage <= len(plan.stages):
                continue  # no such stage: the accounting entry (bounded) differs
            stage = plan.stage(ripple.stage)
            fraction = isinstance(ripple.membership, FractionMembership)
            if fraction != stage.is_fraction:
                self.flag(
                    "stage_kind",
                    ripple.role,
                    None,
                    f"{ripple.role} is a {'fraction' if fraction else 'device-set'} ripple in "
                    f"stage {ripple.stage} ({stage.name}), which holds "
                    f"{'fraction' if stage.is_fraction else 'device-set'} ripples",
                )
            first = (ripple.role, 1)
            if first in fresh and st.evidence is not None:
                started = self.stage_start.get(ripple.stage)
                if started is None or st.evidence < started:
                    self.stage_start[ripple.stage] = st.evidence
                if stage.not_before is not None and st.evidence < stage.not_before:
                    self.flag(
                        "not_before",
                        ripple.role,
                        1,
                        f"{ripple.role} (stage {ripple.stage}, {stage.name}) was published at "
                        f"{format_time(st.evidence)}, before the stage's not_before "
                        f"{format_time(stage.not_before)}",
                    )

    def check_accounting(self, st: _State, wave: WaveReading, plan: Plan) -> None:
        role, version = rollout_role(self.name), st.rollout
        previous = 0
        total = 0
        for k, (stage_no, size) in enumerate(wave.accounting, 1):
            if stage_no > previous + 1 or (k == 1 and stage_no != 1):
                self.flag(
                    "stage_skipped",
                    role,
                    version,
                    f"rollout v{version} puts ripple {k} in stage {stage_no} after stage "
                    f"{previous or 'none'}: stages start at 1 and go one at a time",
                )
            previous = stage_no
            stage = plan.stage(stage_no)
            cap = stage.cap(plan.eligible)
            if stage.is_fraction:
                reached, unit = size, "ppm"
            else:
                total += size
                reached, unit = total, "devices"
            if reached > cap:
                self.flag(
                    "cap_exceeded",
                    role,
                    version,
                    f"with ripple {k}, rollout v{version} reaches {reached} {unit}; stage "
                    f"{stage_no} ({stage.name}) allows at most {cap}",
                )

    # ------------------------------------------------------- histories
    def check_versions(self, states: list[_State]) -> None:
        name = self.name
        highest: dict[str, int] = {}
        for role, version in self.seen:
            highest[role] = max(highest.get(role, 0), version)
        for role, top in highest.items():
            mds = [self.files.get(f"{v}.{role}.json") for v in range(1, top + 1)]
            for v in range(2, top + 1):
                old, new = mds[v - 2], mds[v - 1]
                if old is None or new is None:
                    continue
                if role == wave_role(name):
                    self.wave_pair(role, v, old, new)
                elif role == rollout_role(name):
                    self.rollout_pair(role, v, old, new)
                else:
                    self.ripple_pair(role, v, old, new)
            if role == rollout_role(name) and mds[0] is not None:
                raw = mds[0].signed.unrecognized_fields.get(ROLLOUT_FIELD)
                count = raw.get("ripples") if isinstance(raw, Mapping) else None
                if isinstance(count, int) and count > 1:
                    self.flag(
                        "ripples_skipped",
                        role,
                        1,
                        f"{role} v1 starts with {count} ripples; one publish adds one ripple",
                    )
        wave = self.files.get(f"1.{wave_role(name)}.json")
        expires = wave.signed.expires if wave is not None else None
        for (role, version), seen in self.seen.items():
            if (
                role == rollout_role(name)
                and expires is not None
                and seen.evidence is not None
                and seen.evidence >= expires
                and not self._resigned(role, version)
            ):
                self.flag(
                    "after_expiry",
                    role,
                    version,
                    f"{role} v{version} changed the rollout at {format_time(seen.evidence)}, "
                    f"after the wave expired ({format_time(expires)})",
                )

    def _resigned(self, role: str, version: int) -> bool:
        old = self.files.get(f"{version - 1}.{role}.json")
        new = self.files.get(f"{version}.{role}.json")
        return (
            old is not None
            and new is not None
            and old.signed.unrecognized_fields.get(ROLLOUT_FIELD)
            == new.signed.unrecognized_fields.get(ROLLOUT_FIELD)
        )

    def wave_pair(self, role: str, v: int, old: Metadata[Any], new: Metadata[Any]) -> None:
        a = _plain(old.signed.unrecognized_fields.get(WAVE_FIELD))
        b = _plain(new.signed.unrecognized_fields.get(WAVE_FIELD))
        carried = None
        if isinstance(b, dict) and isinstance(b.get("policy"), dict):
            carried = b["policy"].get("fraction_salt")
            if isinstance(a, dict) and isinstance(a.get("policy"), dict):
                b["policy"]["fraction_salt"] = a["policy"].get("fraction_salt")
        changed = []
        if a != b:
            changed.append(WAVE_FIELD)
        if {p: t.to_dict() for p, t in old.signed.targets.items()} != {
            p: t.to_dict() for p, t in new.signed.targets.items()
        }:
            changed.append("artifacts")
        if old.signed.expires != new.signed.expires:
            changed.append("expires")
        first = self.files.get(f"1.{role}.json")
        targets_v = self._delegator_version("targets", role, 1)
        targets = self.files.get(f"{targets_v}.targets.json") if targets_v else None
        if carried is not None and first is not None and targets is not None:
            try:
                derived = signature_salt(targets.signed, role, first).hex()
            except InputError:
                derived = None
            if carried != derived:
                changed.append("fraction_salt (not the salt of version 1's signatures)")
        if changed:
            self.flag(
                "wave_changed",
                role,
                v,
                f"{role} v{v} changed {', '.join(changed)} from v{v - 1}; a wave is signed "
                "once and only re-signed with the same content",
            )

    def _delegator_version(self, delegator: str, role: str, version: int) -> int | None:
        """The version of ``delegator`` in the snapshot that first listed ``role`` v."""
        seen = self.seen.get((role, version))
        if seen is None:
            return None
        snap = self.files.get(f"{seen.snapshot}.snapshot.json")
        meta = snap.signed.meta.get(f"{delegator}.json") if snap is not None else None
        return meta.version if meta is not None else None

    def rollout_pair(self, role: str, v: int, old: Metadata[Any], new: Metadata[Any]) -> None:
        a = old.signed.unrecognized_fields.get(ROLLOUT_FIELD)
        b = new.signed.unrecognized_fields.get(ROLLOUT_FIELD)
        if a == b or not isinstance(a, Mapping) or not isinstance(b, Mapping):
            return  # a re-sign; a malformed one is the profile's violation
        sa, sb = a.get("state"), b.get("state")
        ca, cb = a.get("ripples"), b.get("ripples")
        where = f"{role} v{v - 1} -> v{v}"
        if sa in FINAL_STATES:
            self.flag(
                "final_state_changed",
                role,
                v,
                f"{where}: the rollout was {sa}, which is final, and v{v} changed it "
                f"(state {sb}, {cb} ripples)",
            )
            return
        if sa != sb and (sa, sb) not in ALLOWED_TRANSITIONS:
            self.flag("state_transition", role, v, f"{where}: {sa} -> {sb} is not allowed")
        if isinstance(ca, int) and isinstance(cb, int):
            if cb < ca:
                self.flag("ripple_removed", role, v, f"{where}: ripples went from {ca} to {cb}")
            elif cb > ca:
                if cb > ca + 1:
                    self.flag(
                        "ripples_skipped",
                        role,
                        v,
                        f"{where}: ripples went from {ca} to {cb}; one publish adds one ripple",
                    )
                if sa != "active" or sb != "active":
                    self.flag(
                        "ripple_while_inactive",
                        role,
                        v,
                        f"{where}: ripple {cb} was added while the rollout went {sa} -> {sb}",
                    )
        acc_a, acc_b = a.get(ACCOUNTING_KEY), b.get(ACCOUNTING_KEY)
        if isinstance(acc_a, list) and (
            not isinstance(acc_b, list) or acc_b[: len(acc_a)] != acc_a
        ):
            self.flag(
                "accounting_rewritten",
                role,
                v,
                f"{where}: the accounting of earlier ripples changed",
            )

    def ripple_pair(self, role: str, v: int, old: Metadata[Any], new: Metadata[Any]) -> None:
        a, b = old.signed, new.signed
        if (
            a.unrecognized_fields.get(RIPPLE_FIELD) != b.unrecognized_fields.get(RIPPLE_FIELD)
            or a.targets != b.targets
            or a.expires != b.expires
        ):
            self.flag(
                "ripple_changed",
                role,
                v,
                f"{role} v{v} changed the ripple of v{v - 1}; a published ripple is only "
                "re-signed with the same content",
            )

    def check_soak(self, states: list[_State]) -> None:
        reading = next(
            (self.readings.get(s.key) for s in reversed(states) if self.readings.get(s.key)),
            None,
        )
        plan = reading.policy.plan if reading is not None else None
        if reading is None or plan is None:
            return
        ripples = reading.ripples
        for number, started in sorted(self.stage_start.items()):
            soak = plan.stage(number).soak_seconds
            before = self.stage_start.get(number - 1)
            if soak and before is not None and (started - before).total_seconds() < soak:
                first = next(
                    (r.role for r in ripples if r.stage == number),
                    rollout_role(self.name),
                )
                self.flag(
                    "soak",
                    first,
                    1,
                    f"stage {number} started at {format_time(started)}, "
                    f"{int((started - before).total_seconds())} s after stage {number - 1} "
                    f"({format_time(before)}); its soak is {soak} s",
                )

    # -------------------------------------------------------- timeline
    def timeline(self, states: list[_State]) -> list[TimelineEntry]:
        order = sorted(self.seen.items(), key=lambda kv: (kv[1].snapshot, _rank(kv[0][0]), kv[0]))
        out = [self._entry(role, version, seen) for (role, version), seen in order]
        highest: dict[str, int] = {}
        for role, version in self.seen:
            highest[role] = max(highest.get(role, 0), version)
        for role, top in sorted(highest.items()):
            version = top + 1
            while self.source.read(f"{version}.{role}.json") is not None:
                out.append(
                    TimelineEntry(
                        None,
                        None,
                        role,
                        version,
                        note="no snapshot lists it: signed, never published",
                    )
                )
                version += 1
        return out

    def _entry(self, role: str, version: int, seen: _Seen) -> TimelineEntry:
        md = self.files.get(f"{version}.{role}.json")
        fields = md.signed.unrecognized_fields if md is not None else {}
        signers = tuple(k[:8] for k in seen.signers)
        previous = self.files.get(f"{version - 1}.{role}.json")
        prior = previous.signed.unrecognized_fields if previous is not None else {}
        if role.startswith("rollout."):
            raw = fields.get(ROLLOUT_FIELD)
            raw = raw if isinstance(raw, Mapping) else {}
            acc = raw.get(ACCOUNTING_KEY)
            stage = size = None
            if isinstance(acc, list) and acc and all(isinstance(e, Mapping) for e in acc):
                stage = acc[-1].get("stage")
                size = sum(e.get("size", 0) for e in acc if isinstance(e.get("size"), int))
            old = prior.get(ROLLOUT_FIELD)
            note = _rollout_note(old if isinstance(old, Mapping) else None, raw)
            before = self.seen.get((role, version - 1))
            if note == "re-signed" and before is not None and before.signers != seen.signers:
                note = "re-signed by new keys"
            return TimelineEntry(
                seen.snapshot,
                seen.evidence,
                role,
                version,
                state=_str(raw.get("state")),
                ripples=_int(raw.get("ripples")),
                stage=_int(stage),
                size=_int(size),
                note=note,
                signers=signers,
            )
        if role.startswith("ripple."):
            raw = fields.get(RIPPLE_FIELD)
            raw = raw if isinstance(raw, Mapping) else {}
            same = version > 1 and prior.get(RIPPLE_FIELD) == fields.get(RIPPLE_FIELD)
            before = self.seen.get((role, version - 1))
            moved = before is not None and before.signers != seen.signers
            return TimelineEntry(
                seen.snapshot,
                seen.evidence,
                role,
                version,
                stage=_int(raw.get("stage")),
                size=_size(raw.get("membership")),
                note=(("re-signed by new keys" if moved else "re-signed") if same else "changed")
                if version > 1
                else "published",
                signers=signers,
            )
        note = "signed offline"
        if version > 1:
            keys = _delegated_keys(previous) != _delegated_keys(md)
            note = "re-signed, new rollout keys" if keys else "re-signed"
        return TimelineEntry(
            seen.snapshot, seen.evidence, role, version, note=note, signers=signers
        )


def _delegated_keys(md: Metadata[Any] | None) -> object:
    d = md.signed.delegations if md is not None else None
    roles = d.roles if d is not None and d.roles is not None else {}
    return sorted((name, sorted(r.keyids), r.threshold) for name, r in roles.items())


def _rank(role: str) -> int:
    return 0 if role.startswith("wave.") else 2 if role.startswith("rollout.") else 1


def _is_my_ripple(name: str, wave: str) -> bool:
    parts = split_role(name.removesuffix(".json"))
    return parts is not None and parts[0] == "ripple" and parts[1] == wave


def _plain(value: object) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _size(raw: object) -> int | None:
    try:
        m = membership_from_dict(raw)
    except InputError:
        return None
    if isinstance(m, ListMembership):
        return len(m.uuids)
    if isinstance(m, MerkleMembership):
        return m.size
    return m.parts_per_million


def _rollout_note(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    if old is None:
        return "first version"
    if old == new:
        return "re-signed"
    parts = []
    if old.get("state") != new.get("state"):
        parts.append(f"{old.get('state')} -> {new.get('state')}")
    if old.get("ripples") != new.get("ripples"):
        parts.append(f"ripples {old.get('ripples')} -> {new.get('ripples')}")
    return ", ".join(parts) or "changed"


def audit_wave(source: Source, wave: str, *, trusted_root: bytes | None = None) -> AuditReport:
    """Audit every published version of wave ``wave``'s roles (``specs/audit.md``).

    Args:
        source: Where the published files are (a directory or a base URL).
        wave: The wave's name.
        trusted_root: Root metadata the auditor trusts (any version); default:
            the mirror's ``1.root.json`` is trusted as it is.

    Returns:
        The timeline and every violation found; ``report.ok`` is True when
        there are none.

    Raises:
        InputError: a bad wave name or trusted root, no published metadata,
            or no snapshot lists the wave.
        StorageError: the source cannot be read (I/O error, HTTP error).
    """
    return _Audit(source, wave, trusted_root).run()
