"""Rollouts: select devices, sign a ripple, publish; cancel and complete.

Who may install a wave is signed metadata: every rollout publishes a new
ripple role (its device set, ``specs/membership.md``) and a new version of the
wave's rollout role listing it, signed by the wave's online rollout keys,
together with a new snapshot and timestamp in one all-or-nothing step. The
selection, the ripple record in the inventory and the publish happen under
the repository lock and one inventory transaction, so two rollouts never pick
the same device twice and never lose a ripple.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import secrets
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from securesystemslib.signer import Signer
from tuf.api.metadata import DelegatedRole, Metadata, Targets

from tufwaves.device.membership import (
    LIST_MAX,
    FractionMembership,
    ListMembership,
    MerkleMembership,
    canonical_uuid,
    fraction_member,
    membership_from_dict,
)
from tufwaves.device.plan import Plan
from tufwaves.errors import InputError, RefusedError
from tufwaves.server.inventory import Eligibility, GroupStatus, Inventory
from tufwaves.server.inventory.backend import configured_dsn, open_configured
from tufwaves.server.keys import KeyRef
from tufwaves.server.merkle_file import MerkleTreeFile, TreeBuild, merkle_commitment
from tufwaves.server.metadata import (
    Policy,
    WaveInfo,
    build_ripple,
    build_rollout,
    check_tag,
    ripple_role,
    rollout_info,
    rollout_role,
    wave_info,
    wave_role,
)
from tufwaves.server.repository import PublishedState, Repository
from tufwaves.server.staging import pending_ids
from tufwaves.server.waves import discard_ceremony, wave_salt

__all__ = [
    "RolloutResult",
    "RolloutStatus",
    "Selector",
    "WaveContext",
    "cancel",
    "complete",
    "has_inventory",
    "load_wave",
    "open_inventory",
    "pause",
    "resume",
    "ripple_members",
    "rollout",
    "rollout_status",
    "seed_start",
    "sign_stage",
    "stage_starts",
    "tree_path",
    "wave_status",
]

PERCENT_SCALE = 100


@dataclass(frozen=True)
class Selector:
    """How a rollout chooses devices (the ``waves rollout`` options).

    Semantics in ``specs/rollout.md``. Only devices of the wave's tag and
    hardware ids whose installed version is below the wave's and that no earlier
    ripple of the wave selected are ever chosen.

    Attributes:
        group: Only devices of this group; alone, every eligible one of it.
        limit: At most this many devices.
        percent: At most this percentage (1-100) of the eligible devices.
        uuids: Exactly these devices (every one must be eligible), or with
            ``limit``/``percent`` a sample of them.
        seed: Makes the sample reproducible (default: random).
        fraction_ppm: A fraction ripple instead: no device list, every device
            with H(salt, uuid) below this many parts per million may install.

    Raises:
        InputError: An impossible combination or value.
    """

    group: str | None = None
    limit: int | None = None
    percent: int | None = None  # limit given as N%
    uuids: tuple[str, ...] | None = None
    seed: str | None = None
    fraction_ppm: int | None = None  # --fraction: parts per million

    def __post_init__(self) -> None:
        if self.fraction_ppm is not None:
            if self.group is not None:
                raise InputError(
                    "--fraction cannot be combined with --group: a device cannot prove "
                    "group membership, so fraction ripples apply to every device of the "
                    "wave's tag and hardware"
                )
            if self.limit is not None or self.percent is not None or self.uuids is not None:
                raise InputError("--fraction cannot be combined with --limit or --uuids")
            if not 0 < self.fraction_ppm <= 1_000_000:
                raise InputError("--fraction must be above 0 and at most 1 (100%)")
            return
        if self.group is None and self.limit is None and self.percent is None and not self.uuids:
            raise InputError("choose devices with at least one of --group, --limit, --uuids")
        if self.group is not None:
            check_tag(self.group)
        if self.limit is not None and self.limit < 1:
            raise InputError(f"--limit must be at least 1, not {self.limit}")
        if self.percent is not None and not 0 < self.percent <= 100:
            raise InputError(f"--limit {self.percent}% must be between 1% and 100%")
        if self.uuids is not None and not self.uuids:
            raise InputError("--uuids lists no device")

    def to_dict(self) -> dict[str, Any]:
        """The selector as recorded in the inventory (JSON-ready).

        Returns:
            A dict of the options that were set.
        """
        out: dict[str, Any] = {}
        if self.group is not None:
            out["group"] = self.group
        if self.limit is not None:
            out["limit"] = self.limit
        if self.percent is not None:
            out["limit"] = f"{self.percent}%"
        if self.uuids is not None:
            out["uuids"] = len(self.uuids)
        if self.seed is not None:
            out["seed"] = self.seed
        if self.fraction_ppm is not None:
            out["fraction_ppm"] = self.fraction_ppm
        return out


def seed_start(seed: str | None) -> int:
    """The ring start of a selection.

    Args:
        seed: Makes it reproducible; ``None`` draws it from a CSPRNG.

    Returns:
        A signed 64-bit ring position.
    """
    raw = (
        hashlib.sha256(b"tufwaves-seed-v1\x00" + seed.encode()).digest()[:8]
        if seed is not None
        else secrets.token_bytes(8)
    )
    return int.from_bytes(raw, "big", signed=True)


@dataclass(frozen=True)
class WaveContext:
    """A published wave as the rollout side needs it (from :func:`load_wave`).

    Attributes:
        info: The wave's name, tag, version and policy.
        hardware_ids: The hardware ids of its artifacts.
        rollout_delegation: The wave's delegation to its rollout role.
        rollout_keys: The rollout keys by key id.
        expires: The wave role's expiry.
        rollout: The published rollout role, ``None`` before the first one.
        state: The published state it was read from.
    """

    info: WaveInfo
    hardware_ids: frozenset[str]
    rollout_delegation: DelegatedRole
    rollout_keys: dict[str, Any]
    expires: datetime
    rollout: Metadata[Targets] | None  # None until the first rollout role is signed
    state: PublishedState
    fraction_salt: bytes  # specs/membership.md 6.1: derived from the offline signatures

    @property
    def name(self) -> str:
        """The wave's name."""
        return self.info.name

    @property
    def policy(self) -> Policy:
        """The wave's signed rollout policy."""
        return self.info.policy

    @property
    def status(self) -> str:
        """``active``, ``cancelled`` or ``complete``."""
        return rollout_info(self.rollout).state if self.rollout else "active"

    @property
    def ripple_count(self) -> int:
        """How many ripples were signed."""
        return rollout_info(self.rollout).ripples if self.rollout else 0

    @property
    def plan(self) -> Plan | None:
        """The wave's signed rollout plan, or None (an unplanned wave)."""
        return self.info.policy.plan

    @property
    def accounting(self) -> tuple[tuple[int, int], ...]:
        """(stage, size) of every ripple of a planned wave (empty otherwise)."""
        info = rollout_info(self.rollout) if self.rollout else None
        return (info.accounting or ()) if info else ()

    @property
    def current_stage(self) -> int | None:
        """The stage of the last ripple, 1 before any (None: an unplanned wave)."""
        if self.plan is None:
            return None
        return self.accounting[-1][0] if self.accounting else 1

    def stage_used(self, stage: int) -> int:
        """How much of ``stage``'s cumulative cap the ripples so far used.

        Args:
            stage: A stage number of the plan.

        Returns:
            Devices (every count ripple so far) for a count stage, the
            largest fraction so far (ppm) for a fraction stage.
        """
        plan = self.plan
        assert plan is not None  # noqa: S101 - callers check
        fraction = plan.stage(stage).is_fraction
        sizes = [n for s, n in self.accounting if plan.stage(s).is_fraction == fraction]
        return (max(sizes, default=0)) if fraction else sum(sizes)

    def eligibility(self, group: str | None = None) -> Eligibility:
        """Which devices the wave may still pick, for :class:`Inventory` queries.

        Args:
            group: Only devices of this group.

        Returns:
            The eligibility rule.
        """
        return Eligibility(
            wave=self.name,
            tag=self.info.tag,
            hardware_ids=self.hardware_ids,
            version=self.info.version,
            group=group,
        )


def load_wave(repo: Repository, name: str, state: PublishedState | None = None) -> WaveContext:
    """A published wave with its rollout state.

    Args:
        repo: The repository.
        name: The wave's name.
        state: The published state to read (default: the current one).

    Returns:
        The wave.

    Raises:
        InputError: No such published wave, or it delegates no rollout role.
    """
    state = state or repo.state()
    if state.version_of(wave_role(name)) is None:
        raise InputError(
            f"no published wave {name} in {repo.path} "
            "('tufwaves waves list' shows waves and their status)"
        )
    wave_md = repo.load_targets(wave_role(name), state)
    info = wave_info(wave_md)
    delegations = wave_md.signed.delegations
    if delegations is None or delegations.roles is None:
        raise InputError(f"wave {name} delegates no rollout role")
    drole = delegations.roles[rollout_role(name)]
    hardware: set[str] = set()
    for target in wave_md.signed.targets.values():
        hardware.update(target.custom.get("hardwareIds", []))
    rollout = (
        repo.load_targets(rollout_role(name), state)
        if state.version_of(rollout_role(name))
        else None
    )
    return WaveContext(
        info,
        frozenset(hardware),
        drole,
        {kid: delegations.keys[kid] for kid in drole.keyids},
        wave_md.signed.expires,
        rollout,
        state,
        wave_salt(wave_md, repo.load_targets("targets", state).signed),
    )


def open_inventory(repo: Repository, *, read_only: bool = False) -> Inventory:
    """The repository's inventory: the embedded SQLite file (``REPO/inventory.sqlite``),
    or PostgreSQL when its configuration names a DSN (``specs/inventory.md`` section 10).

    Use it as a context manager; any other :class:`Inventory` implementation
    can be passed to the rollout functions instead.

    Args:
        repo: The repository.
        read_only: For commands that only read: opens a read-only SQLite copy
            too (``specs/inventory.md``, "Read-only opening").

    Returns:
        The open inventory (a SQLite file is created if missing, unless ``read_only``).

    Raises:
        StorageError: The database cannot be opened.
    """
    return open_configured(repo.inventory_path, repo.config, read_only=read_only)


def has_inventory(repo: Repository) -> bool:
    """Does the repository have an inventory yet (PostgreSQL: always)?

    Args:
        repo: The repository.

    Returns:
        True when its SQLite file exists or its configuration names a DSN.
    """
    return repo.inventory_path.exists() or configured_dsn(repo.config) is not None


def tree_path(repo: Repository, wave: str, index: int) -> Path:
    """Where the Merkle tree file of a large ripple is kept.

    Args:
        repo: The repository.
        wave: The wave's name.
        index: The ripple's index.

    Returns:
        The path (present only for ``merkle-sha256`` ripples).
    """
    return repo.ripples_dir / wave / f"{index}.merkle"


def _rollout_signers(repo: Repository, wave: WaveContext, keys: Sequence[KeyRef]) -> list[Signer]:
    """Enough signers for the rollout threshold: ``keys`` or the repository's key."""
    allowed = set(wave.rollout_delegation.keyids)
    signers: dict[str, Signer] = {}
    for ref in keys:
        if ref.key.keyid not in allowed:
            raise RefusedError(
                f"key {ref.name} is not a rollout key of wave {wave.name}; the wave's "
                f"rollout keys are: {', '.join(repo.key_name(k) for k in sorted(allowed))}"
            )
        if ref.signer is None:
            raise InputError(f"--key {ref.name} is a public key; pass its .key file or a URI")
        signers[ref.key.keyid] = ref.signer
    if not keys:
        default = repo.online_key("rollout")
        if default.keyid in allowed:
            signers[default.keyid] = repo.online_signer("rollout")
    threshold = wave.rollout_delegation.threshold
    if len(signers) < threshold:
        raise RefusedError(
            f"wave {wave.name} needs {threshold} rollout signature(s) and "
            f"{len(signers)} key(s) can sign; pass its rollout keys with --key"
        )
    return list(signers.values())


def _signed_rollout(
    wave: WaveContext,
    state: str,
    ripples: int,
    signers: Sequence[Signer],
    accounting: Sequence[tuple[int, int]] | None = None,
) -> Metadata[Targets]:
    version = (wave.rollout.signed.version + 1) if wave.rollout else 1
    if accounting is None and wave.plan is not None:
        accounting = wave.accounting
    md = build_rollout(
        wave.name,
        state,
        ripples,
        wave.rollout_delegation.keyids,
        wave.rollout_keys,
        wave.rollout_delegation.threshold,
        version,
        wave.expires,
        accounting,
    )
    for signer in signers:
        md.sign(signer, append=True)
    return md


@dataclass(frozen=True)
class RolloutResult:
    """One ripple signed (or previewed) by :func:`rollout`.

    Attributes:
        wave: The wave's name.
        index: The ripple's index, from 1.
        uuids: The devices it names, sorted; empty for a fraction ripple.
        encoding: ``list``, ``merkle-sha256`` or ``fraction``.
        membership: The signed membership field.
        selector: How the devices were chosen.
        dry_run: True if nothing was signed or written.
        at: When it was signed (the repository's clock).
    """

    wave: str
    index: int
    uuids: tuple[str, ...]  # sorted; empty for a fraction ripple
    encoding: str
    membership: dict[str, Any]
    selector: Selector
    dry_run: bool
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data (what ``--json`` prints).

        Returns:
            A dict of JSON types.
        """
        return {
            "wave": self.wave,
            "ripple": self.index,
            "devices": len(self.uuids),
            "encoding": self.encoding,
            "membership": self.membership if self.encoding != "list" else {"encoding": "list"},
            "selector": self.selector.to_dict(),
            "dry_run": self.dry_run,
            "at": f"{self.at:%Y-%m-%dT%H:%M:%SZ}",
        }


def _select(inv: Inventory, wave: WaveContext, sel: Selector) -> list[str]:
    """The devices a selector picks now, sorted (semantics in specs/rollout.md)."""
    e = wave.eligibility(sel.group)
    start = seed_start(sel.seed)
    if sel.uuids is not None:
        listed = [canonical_uuid(u) for u in sel.uuids]
        if sel.limit is None and sel.percent is None:
            why = inv.explain_ineligible(e, listed)
            if why:
                detail = "; ".join(f"{u}: {r}" for u, r in list(why.items())[:20])
                more = f" (and {len(why) - 20} more)" if len(why) > 20 else ""
                raise RefusedError(
                    f"{len(why)} listed device(s) cannot take wave {wave.name}: {detail}{more}"
                )
            return sorted(set(listed))
        eligible = inv.select_ring(e, len(listed), start, within=listed)
        k = sel.limit if sel.limit is not None else _percent_of(sel.percent, len(eligible))
        return sorted(eligible[:k])
    if sel.limit is None and sel.percent is None:
        return inv.select_sorted(e, None, start)  # a whole group, as it is now
    if sel.limit is not None:
        return inv.select_sorted(e, sel.limit, start)
    count = inv.count_eligible(e)
    return inv.select_sorted(e, _percent_of(sel.percent, count), start, eligible=count)


def _percent_of(percent: int | None, count: int) -> int:
    assert percent is not None  # noqa: S101 - callers pass limit or percent
    return math.ceil(count * percent / PERCENT_SCALE)


_UUID_CHUNK = 1 << 16


def _uuid_bytes(uuids: Sequence[str]) -> bytes:
    """The 16-byte values of canonical UUIDs, concatenated (the Merkle leaves)."""
    chunks = []
    for i in range(0, len(uuids), _UUID_CHUNK):
        part = uuids[i : i + _UUID_CHUNK]
        text = "".join(part)
        try:
            raw = bytes.fromhex(text.replace("-", ""))
        except ValueError:
            raw = b""
        if len(text) != 36 * len(part) or len(raw) != 16 * len(part):
            raise InputError("a selected device UUID is not in canonical form")
        chunks.append(raw)
    return b"".join(chunks)


def rollout(
    repo: Repository,
    inv: Inventory,
    wave_name: str,
    selector: Selector,
    *,
    keys: Sequence[KeyRef] = (),
    dry_run: bool = False,
    progress: Callable[[str], None] | None = None,
    stage: int | None = None,
) -> RolloutResult:
    """Select devices, sign ripple K and the rollout role, publish (or preview).

    Selection, the inventory record and the publish happen under the
    repository lock and one inventory transaction: two rollouts never pick the
    same device twice.

    On a planned wave the ripple belongs to ``stage`` (default: the current
    stage, that of the last ripple or 1); ``stage`` may be the current stage
    or the next one, which then starts (:func:`sign_stage`). The selection is
    capped to what is left of the stage's cumulative cap and restricted to its
    group; a stage whose ``not_before`` is in the future by the repository
    clock, or whose soak since the previous stage started has not passed, is
    refused (``specs/rollout.md`` "Plans").

    Args:
        repo: The repository.
        inv: Its inventory.
        wave_name: A published, active, unexpired wave.
        selector: Which devices.
        keys: The wave's rollout keys, when they are not the repository's
            online rollout key.
        dry_run: Select only: sign and write nothing.
        progress: Told each phase (for people watching a large ripple).
        stage: The plan stage of the ripple (planned waves only).

    Returns:
        The ripple.

    Raises:
        InputError: No such wave, a key that cannot sign, or ``stage`` on an
            unplanned wave or outside the plan.
        RefusedError: The wave is not active or expired, no device is
            eligible, the signed policy or plan forbids the ripple, or too few
            rollout keys can sign.
    """
    say = progress or (lambda _: None)
    at = repo.now()
    # A preview only reads: a shared lock, so it also works on a read-only copy.
    with repo.locked(shared=dry_run), inv.transaction():
        wave = load_wave(repo, wave_name)
        if not dry_run:  # a preview writes nothing, not even a recovery
            _reconcile(repo, inv, wave)
        if wave.status != "active":
            raise RefusedError(
                f"wave {wave_name} is {wave.status}; a {wave.status} wave takes no more rollouts"
            )
        _require_unexpired(repo, wave)
        index = wave.ripple_count + 1
        stage_no: int | None = None
        if wave.plan is not None:
            stage_no, selector = _plan_selector(repo, inv, wave, selector, stage, at)
        elif stage is not None:
            raise InputError(f"wave {wave_name} has no plan; --stage needs a planned wave")
        signers = [] if dry_run else _rollout_signers(repo, wave, keys)
        tree = tree_path(repo, wave_name, index)
        if selector.fraction_ppm is not None:
            cap = wave.policy.fraction_cap
            if selector.fraction_ppm > cap:
                raise RefusedError(
                    f"wave {wave_name}'s signed policy allows fraction ripples of at most "
                    f"{cap / 10_000:g}%; nothing was signed"
                    + ("" if wave.policy.online_complete else " (online completion is refused)")
                )
            chosen: list[str] = []
            membership: dict[str, Any] = FractionMembership(selector.fraction_ppm).to_dict()
            encoding = "fraction"
        else:
            say(f"selecting devices for ripple {index} of wave {wave_name}")
            chosen = _select(inv, wave, selector)
            say(f"selected {len(chosen):,} devices")
            if not chosen:
                chosen_by = ", ".join(f"{k} {v}" for k, v in selector.to_dict().items())
                raise RefusedError(
                    f"no eligible device for wave {wave_name} ({chosen_by}): "
                    "nothing was signed ('tufwaves waves status' shows who is eligible)"
                )
            if stage_no is not None:
                _check_stage_room(wave, stage_no, len(chosen))
            limit = wave.policy.max_ripple_size
            if limit is not None and len(chosen) > limit:
                raise RefusedError(
                    f"this ripple would name {len(chosen):,} devices; wave {wave_name}'s "
                    f"signed policy allows at most {limit:,} per ripple. Nothing was signed; "
                    "use a smaller --limit"
                )
            if len(chosen) <= LIST_MAX:
                membership = ListMembership(tuple(chosen)).to_dict()
                encoding = "list"
            else:
                encoding = "merkle-sha256"
                leaves = _uuid_bytes(chosen)
                if dry_run:
                    membership = merkle_commitment(leaves).to_dict()
        if dry_run:
            return RolloutResult(
                wave_name, index, tuple(chosen), encoding, membership, selector, dry_run, at
            )
        accounting = None
        recorded = selector.to_dict()
        if stage_no is not None:
            size = selector.fraction_ppm if selector.fraction_ppm is not None else len(chosen)
            accounting = (*wave.accounting, (stage_no, size))
            recorded["stage"] = stage_no
        # The ripple's signatures will be these keys' (a Signature's keyid is
        # its signer's): the record, made while the tree is hashed, names them.
        keyids = sorted({signer.public_key.keyid for signer in signers})
        with _removed_unless_published(repo, wave_name, index, tree):
            if encoding == "merkle-sha256":
                # Hash once (the tree file the server keeps gives the root), in
                # a forked process while the inventory records the ripple.
                say(f"building the Merkle tree over {len(chosen):,} devices")
                tree.parent.mkdir(parents=True, exist_ok=True)
                with TreeBuild(tree, leaves) as building:
                    say(f"recording ripple {index}")
                    inv.record_ripple(wave_name, index, chosen, recorded, encoding, keyids, at)
                    membership = building.result().to_dict()
            else:
                say(f"recording ripple {index}")
                inv.record_ripple(wave_name, index, chosen, recorded, encoding, keyids, at)
            say(f"signing and publishing ripple {index}")
            ripple = build_ripple(wave_name, index, membership, wave.expires, stage_no)
            for signer in signers:
                ripple.sign(signer, append=True)
            roll = _signed_rollout(wave, "active", index, signers, accounting)
            if stage_no is not None and stage_no not in {s for s, _ in wave.accounting}:
                inv.audit(
                    "stage",
                    keyids,
                    {"wave": wave_name, "stage": stage_no, "ripple": index},
                    at,
                )
            repo.publish({ripple_role(wave_name, index): ripple, rollout_role(wave_name): roll})
    return RolloutResult(
        wave_name, index, tuple(chosen), encoding, membership, selector, dry_run, at
    )


def stage_starts(inv: Inventory, wave: WaveContext) -> dict[int, datetime]:
    """When each started stage of a planned wave started.

    A stage starts with the publication of its first ripple; the time is the
    inventory's record of that ripple (``created``, the repository clock at
    signing). The inventory audit log also has a ``stage`` entry for it.

    Args:
        inv: The inventory.
        wave: A planned wave (:func:`load_wave`).

    Returns:
        Stage number to start time, for the stages that have a ripple.
    """
    created = {r.index: r.created for r in inv.ripples(wave.name)}
    out: dict[int, datetime] = {}
    for k, (stage, _size) in enumerate(wave.accounting, 1):
        if stage not in out and k in created:
            out[stage] = created[k]
    return out


def _plan_selector(
    repo: Repository,
    inv: Inventory,
    wave: WaveContext,
    selector: Selector,
    stage: int | None,
    at: datetime,
) -> tuple[int, Selector]:
    """The stage of the next ripple and the selector capped to it."""
    plan = wave.plan
    assert plan is not None  # noqa: S101 - a planned wave
    current = wave.current_stage
    assert current is not None  # noqa: S101 - a planned wave
    number = current if stage is None else stage
    st = plan.stage(number)
    if number not in (current, current + 1) or (number == current + 1 and not wave.accounting):
        raise RefusedError(
            f"wave {wave.name} is in stage {current} ({plan.stage(current).name}); a ripple "
            f"may be for that stage or the next, not stage {number}"
        )
    if st.not_before is not None and at < st.not_before:
        raise RefusedError(
            f"stage {number} ({st.name}) of wave {wave.name} may not start before "
            f"{st.not_before:%Y-%m-%dT%H:%M:%SZ} (now {at:%Y-%m-%dT%H:%M:%SZ}); nothing was signed"
        )
    if number != current and st.soak_seconds:
        started = stage_starts(inv, wave).get(current)
        if started is not None and (at - started).total_seconds() < st.soak_seconds:
            raise RefusedError(
                f"stage {number} ({st.name}) of wave {wave.name} needs a soak of "
                f"{st.soak_seconds} s after stage {current} started at "
                f"{started:%Y-%m-%dT%H:%M:%SZ}; nothing was signed"
            )
    cap, used = st.cap(plan.eligible), wave.stage_used(number)
    if st.is_fraction:
        if selector.fraction_ppm is None:
            raise RefusedError(
                f"stage {number} ({st.name}) of wave {wave.name} is a fraction stage; "
                "use --fraction"
            )
        if selector.fraction_ppm > cap:
            raise RefusedError(
                f"stage {number} ({st.name}) of wave {wave.name} allows fractions up to "
                f"{cap} ppm, not {selector.fraction_ppm}; nothing was signed"
            )
        return number, selector
    if selector.fraction_ppm is not None:
        raise RefusedError(
            f"stage {number} ({st.name}) of wave {wave.name} holds device-set ripples, "
            "not fractions"
        )
    room = cap - used
    if room <= 0:
        raise RefusedError(
            f"stage {number} ({st.name}) of wave {wave.name} is full ({used} of {cap} "
            "devices); start the next stage"
        )
    if st.group is not None and selector.group not in (None, st.group):
        raise RefusedError(
            f"stage {number} ({st.name}) of wave {wave.name} is for group {st.group}, "
            f"not {selector.group}"
        )
    group = st.group if st.group is not None else selector.group
    if selector.uuids is not None and selector.limit is None and selector.percent is None:
        return number, replace(selector, group=group)
    limit = room
    if selector.limit is not None:
        limit = min(limit, selector.limit)
    if selector.percent is not None:
        count = inv.count_eligible(wave.eligibility(group))
        limit = min(limit, _percent_of(selector.percent, count))
    return number, replace(selector, group=group, limit=max(limit, 1), percent=None)


def _check_stage_room(wave: WaveContext, stage: int, chosen: int) -> None:
    plan = wave.plan
    assert plan is not None  # noqa: S101 - a planned wave
    cap, used = plan.cap(stage), wave.stage_used(stage)
    if used + chosen > cap:
        raise RefusedError(
            f"this ripple would take wave {wave.name} to {used + chosen} devices; stage "
            f"{stage} ({plan.stage(stage).name}) allows at most {cap}. Nothing was signed"
        )


def sign_stage(
    repo: Repository,
    wave: str,
    stage: int,
    *,
    inv: Inventory | None = None,
    keys: Sequence[KeyRef] = (),
    dry_run: bool = False,
) -> RolloutResult:
    """Sign the ripple that brings a planned wave to stage ``stage``'s cap.

    A count stage takes the eligible devices of its group (all of the wave's
    tag and hardware without one) up to what is left of its cumulative cap; a
    fraction stage signs a fraction ripple of its cap. The gates are not
    evaluated here (the controller does); the schedule is: the stage is the
    current or the next one, its ``not_before`` has passed by the repository
    clock and, for the next stage, its soak since the current stage started.

    Args:
        repo: The repository.
        wave: A published, active, planned wave.
        stage: The stage number (1-based).
        inv: Its inventory (default: :func:`open_inventory`, opened and closed here).
        keys: The wave's rollout keys, when not the repository's online key.
        dry_run: Select only: sign and write nothing.

    Returns:
        The ripple.

    Raises:
        InputError: No such wave, no plan, no such stage, or a key that cannot sign.
        RefusedError: The schedule or the wave's state refuses it, the stage is
            full or no device is eligible.
    """
    ctx = load_wave(repo, wave)
    plan = ctx.plan
    if plan is None:
        raise InputError(f"wave {wave} has no plan")
    st = plan.stage(stage)
    selector = (
        Selector(fraction_ppm=st.amount)
        if st.is_fraction
        else Selector(group=st.group, limit=max(1, st.cap(plan.eligible)))
    )
    if inv is not None:
        return rollout(repo, inv, wave, selector, keys=keys, dry_run=dry_run, stage=stage)
    with open_inventory(repo, read_only=dry_run) as opened:
        return rollout(repo, opened, wave, selector, keys=keys, dry_run=dry_run, stage=stage)


def _reconcile(repo: Repository, inv: Inventory, wave: WaveContext) -> None:
    """Record published ripples the inventory lacks (a crash between publish and commit).

    The published rollout role is the truth; a ripple it lists but the
    inventory does not know is recorded from its signed list or the Merkle
    tree file written before the publish, so its devices are never picked again.
    """
    known = {r.index for r in inv.ripples(wave.name)}
    for index in range(1, wave.ripple_count + 1):
        if index in known:
            continue
        role = ripple_role(wave.name, index)
        ripple = repo.load_targets(role, wave.state)
        membership = membership_from_dict(
            ripple.signed.unrecognized_fields["x-tufwaves-ripple"]["membership"]
        )
        if isinstance(membership, ListMembership):
            uuids = list(membership.uuids)
        elif isinstance(membership, MerkleMembership):
            with MerkleTreeFile(tree_path(repo, wave.name, index)) as tree:
                uuids = list(tree.members())
        else:
            uuids = []
        encoding = str(membership.to_dict()["encoding"])
        inv.record_ripple(
            wave.name,
            index,
            uuids,
            {"recovered": True},
            encoding,
            sorted(ripple.signatures),
            repo.now(),
        )


@contextlib.contextmanager
def _removed_unless_published(
    repo: Repository, wave: str, index: int, path: Path
) -> Iterator[None]:
    """Remove a ripple's tree file if the ripple did not get published."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            if repo.state().version_of(ripple_role(wave, index)) is None:
                path.unlink(missing_ok=True)
        raise


def _transition(
    repo: Repository,
    inv: Inventory,
    wave_name: str,
    target: str,
    keys: Sequence[KeyRef],
) -> list[str]:
    """Sign the rollout role ``target``; return the ceremonies this discarded."""
    with repo.locked(), inv.transaction():
        wave = load_wave(repo, wave_name)
        if wave.status == target:
            raise RefusedError(f"wave {wave_name} is already {target}")
        allowed_from = _TRANSITIONS[target]
        if wave.status not in allowed_from:
            raise RefusedError(
                f"wave {wave_name} is {wave.status}; a {wave.status} wave cannot be {_VERB[target]}"
            )
        last = wave.plan.last_not_before if wave.plan is not None else None
        if target == "complete" and last is not None and repo.now() < last:
            raise RefusedError(
                f"wave {wave_name}'s signed plan has a stage that may not start before "
                f"{last:%Y-%m-%dT%H:%M:%SZ}; it cannot be completed before then "
                "(devices would refuse it)"
            )
        if target == "complete" and not wave.policy.online_complete:
            raise RefusedError(
                f"wave {wave_name}'s signed policy does not let the online rollout keys "
                "complete it; an offline ceremony is needed: fold it into production "
                f"with 'tufwaves waves complete {wave_name} --offline --repo REPO "
                "--key OFFLINE_KEY'"
            )
        _require_unexpired(repo, wave)
        signers = _rollout_signers(repo, wave, keys)
        roll = _signed_rollout(wave, target, wave.ripple_count, signers)
        inv.audit(
            _ACTION[target],
            sorted(roll.signatures),
            {"wave": wave_name},
            repo.now(),
        )
        repo.publish({rollout_role(wave_name): roll})
        if target == "cancelled" and f"production.{wave_name}" in pending_ids(repo):
            # A cancelled wave must never be folded into production later.
            discard_ceremony(repo, f"production.{wave_name}")
            return [f"production.{wave_name}"]
    return []


# Rollout state transitions (specs/rollout.md): cancelled and complete are final.
_TRANSITIONS = {
    "cancelled": ("active", "paused"),
    "complete": ("active",),
    "paused": ("active",),
    "active": ("paused",),
}
_VERB = {"cancelled": "cancelled", "complete": "completed", "paused": "paused", "active": "resumed"}
_ACTION = {"cancelled": "cancel", "complete": "complete", "paused": "pause", "active": "resume"}


def pause(repo: Repository, inv: Inventory, wave: str, *, keys: Sequence[KeyRef] = ()) -> None:
    """Sign the rollout role ``paused``: devices not yet updated refuse the wave until resumed.

    Args:
        repo: The repository.
        inv: Its inventory (the pause is audited there).
        wave: The wave's name.
        keys: The wave's rollout keys, when not the repository's online key.

    Raises:
        InputError: No such wave, or a key that cannot sign.
        RefusedError: The wave is not active (paused already, cancelled or
            complete) or expired, or too few rollout keys can sign.
    """
    _transition(repo, inv, wave, "paused", keys)


def resume(repo: Repository, inv: Inventory, wave: str, *, keys: Sequence[KeyRef] = ()) -> None:
    """Sign the rollout role ``active`` again for a paused wave.

    Args:
        repo: The repository.
        inv: Its inventory (the resume is audited there).
        wave: The wave's name.
        keys: The wave's rollout keys, when not the repository's online key.

    Raises:
        InputError: No such wave, or a key that cannot sign.
        RefusedError: The wave is not paused (active, cancelled or complete)
            or expired, or too few rollout keys can sign.
    """
    _transition(repo, inv, wave, "active", keys)


def _require_unexpired(repo: Repository, wave: WaveContext) -> None:
    if wave.expires <= repo.now():
        raise RefusedError(
            f"wave {wave.name} expired at {wave.expires:%Y-%m-%dT%H:%M:%SZ}; devices refuse "
            "it, so nothing more is signed for it"
        )


def cancel(
    repo: Repository, inv: Inventory, wave: str, *, keys: Sequence[KeyRef] = ()
) -> list[str]:
    """Sign the rollout role ``cancelled``: devices refuse the wave from now on.

    A pending offline production ceremony of the wave is discarded, so a
    cancelled wave can never reach production.

    Args:
        repo: The repository.
        inv: Its inventory (the cancel is audited there).
        wave: The wave's name.
        keys: The wave's rollout keys, when not the repository's online key.

    Returns:
        The ids of the ceremonies discarded (``production.W``, or none).

    Raises:
        InputError: No such wave, or a key that cannot sign.
        RefusedError: The wave is not active or paused, or is expired, or
            too few rollout keys can sign.
    """
    return _transition(repo, inv, wave, "cancelled", keys)


def complete(repo: Repository, inv: Inventory, wave: str, *, keys: Sequence[KeyRef] = ()) -> None:
    """Sign the rollout role ``complete``: every matching device may install.

    Args:
        repo: The repository.
        inv: Its inventory (the completion is audited there).
        wave: The wave's name.
        keys: The wave's rollout keys, when not the repository's online key.

    Raises:
        InputError: No such wave, or a key that cannot sign.
        RefusedError: The wave is not active or expired, its signed plan
            has a stage whose ``not_before`` is still ahead, its signed policy
            needs an offline completion
            (:func:`~tufwaves.server.waves.fold_into_production`), or too few
            rollout keys can sign.
    """
    _transition(repo, inv, wave, "complete", keys)


def ripple_members(repo: Repository, inv: Inventory, wave_name: str, index: int) -> list[str]:
    """The devices ripple ``index`` names, sorted.

    Recorded ones for list and Merkle ripples, recomputed from the inventory
    for fraction ripples.

    Args:
        repo: The repository.
        inv: Its inventory.
        wave_name: The wave's name.
        index: The ripple's index, from 1.

    Returns:
        Canonical UUIDs, sorted.

    Raises:
        InputError: No such wave or ripple.
    """
    wave = load_wave(repo, wave_name)
    if not 1 <= index <= wave.ripple_count:
        raise InputError(f"wave {wave_name} has no ripple {index} (it has {wave.ripple_count})")
    ripple = repo.load_targets(ripple_role(wave_name, index), wave.state)
    membership = membership_from_dict(
        ripple.signed.unrecognized_fields["x-tufwaves-ripple"]["membership"]
    )
    if not isinstance(membership, FractionMembership):
        return list(inv.ripple_members(wave_name, index))
    salt = wave.fraction_salt
    return sorted(
        d.uuid
        for d in inv.list_devices(tag=wave.info.tag)
        if d.hardware_id in wave.hardware_ids
        and fraction_member(salt, d.uuid, membership.parts_per_million)
    )


@dataclass(frozen=True)
class RolloutStatus:
    """How far a wave got (``waves status``), from :func:`rollout_status`.

    Attributes:
        wave: The wave's name.
        status: ``active``, ``cancelled`` or ``complete``.
        ripples: How many ripples were signed.
        groups: Per-group counts: one row per group in name order, then the
            ungrouped row, then the total row.
    """

    wave: str
    status: str
    ripples: int
    groups: tuple[GroupStatus, ...]

    def to_dict(self) -> dict[str, Any]:
        """The status as JSON-ready data (what ``--json`` prints).

        Returns:
            A dict of JSON types.
        """
        return {
            "wave": self.wave,
            "status": self.status,
            "ripples": self.ripples,
            "groups": [g.to_dict() for g in self.groups],
        }


def rollout_status(repo: Repository, inv: Inventory, wave_name: str) -> RolloutStatus:
    """A wave's rollout state and, per group, its total, eligible, selected and
    updated devices (fraction ripples included, see :func:`wave_status`).

    Args:
        repo: The repository.
        inv: Its inventory.
        wave_name: A published wave.

    Returns:
        The status.

    Raises:
        InputError: No such published wave.
    """
    wave, rows = wave_status(repo, inv, wave_name)
    return RolloutStatus(wave_name, wave.status, wave.ripple_count, tuple(rows))


def wave_status(
    repo: Repository, inv: Inventory, wave_name: str
) -> tuple[WaveContext, list[GroupStatus]]:
    """Per-group counts of the wave, fraction ripples included.

    The inventory records the devices of list and Merkle ripples; the members
    of fraction ripples are recomputed here with the function devices use
    (the largest fraction holds every smaller one). Such a member counts as
    selected, and no longer as eligible.

    Args:
        repo: The repository.
        inv: Its inventory.
        wave_name: A published wave.

    Returns:
        The wave and its status rows (as :meth:`Inventory.status`).

    Raises:
        InputError: No such published wave.
    """
    wave = load_wave(repo, wave_name)
    rows = inv.status(wave.eligibility())
    ripples = inv.ripples(wave_name)
    ppm = max(
        (int(r.selector_data.get("fraction_ppm", 0)) for r in ripples if r.encoding == "fraction"),
        default=0,
    )
    if not ppm:
        return wave, rows
    listed: set[str] = set()
    for r in ripples:
        if r.encoding != "fraction":
            listed.update(inv.ripple_members(wave_name, r.index))
    salt = wave.fraction_salt
    selected: Counter[tuple[str, str | None]] = Counter()
    eligible: Counter[tuple[str, str | None]] = Counter()
    for d in inv.list_devices(tag=wave.info.tag):
        if d.hardware_id not in wave.hardware_ids or d.uuid in listed:
            continue
        if not fraction_member(salt, d.uuid, ppm):
            continue
        keys: list[tuple[str, str | None]] = [("group", g) for g in d.groups]
        keys = keys or [("ungrouped", None)]
        keys.append(("total", None))
        selected.update(keys)
        if d.installed_version is None or d.installed_version < wave.info.version:
            eligible.update(keys)
    return wave, [
        replace(
            r,
            selected=r.selected + selected[r.kind, r.group],
            eligible=r.eligible - eligible[r.kind, r.group],
        )
        for r in rows
    ]
