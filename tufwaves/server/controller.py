"""The rollout controller: evaluate a planned wave's gates and act on them.

:func:`evaluate` gathers what :func:`~tufwaves.server.gates.evaluate_gates`
needs from the published metadata and the inventory (the devices each
ripple offered, the latest stored report of each, the stage start times);
:func:`advance` evaluates and then acts: it signs the next stage
(:func:`~tufwaves.server.rollout.sign_stage`), completes the wave, or pauses
or cancels it through the same signed transitions as ``waves pause`` and
``waves cancel``. It decides under the repository lock (on PostgreSQL also
an advisory lock across machines), re-reading the published state inside
it, so two controllers never take the same decision twice. Every decision
that acts is in the audit log with the figures it was based on.
``specs/gates.md`` is the normative definition.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from tufwaves.device.membership import fraction_member
from tufwaves.errors import InputError, RefusedError, TufwavesError
from tufwaves.server.gates import GateEvaluation, GateInputs, evaluate_gates
from tufwaves.server.inventory import Inventory
from tufwaves.server.keys import KeyRef
from tufwaves.server.metadata import Clock, ripple_role, rollout_role
from tufwaves.server.repository import Repository
from tufwaves.server.rollout import (
    WaveContext,
    cancel,
    complete,
    load_wave,
    open_inventory,
    pause,
    sign_stage,
    stage_starts,
)
from tufwaves.server.waves import list_waves

__all__ = [
    "SOURCES",
    "ControllerLoop",
    "Decision",
    "advance",
    "advance_all",
    "evaluate",
    "gate_inputs",
    "planned_waves",
]

logger = logging.getLogger("tufwaves.controller")

SOURCES: Final = ("advance", "controller")
"""Audit actions of controller decisions: ``waves advance`` or the controller loop."""


@dataclass(frozen=True)
class Decision:
    """What :func:`advance` decided and did.

    Attributes:
        wave: The wave's name.
        action: The evaluation's action (``advance``, ``complete``, ``pause``,
            ``cancel``, ``wait`` or ``none``).
        acted: True when it signed and published the action.
        dry_run: True when it was asked only to evaluate.
        evaluation: The evaluation the decision is based on (taken under the lock).
        ripple: For ``advance``, the index of the ripple signed (or that would be).
        devices: For ``advance``, how many devices the ripple names (0 for a fraction).
        refused: Why the action could not be signed (the rollout rules refused
            it), or None.
        audit_id: The audit-log entry of the decision, or None (nothing acted).
    """

    wave: str
    action: str
    acted: bool
    dry_run: bool
    evaluation: GateEvaluation
    ripple: int | None = None
    devices: int | None = None
    refused: str | None = None
    audit_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (what ``waves advance --json`` prints).

        Returns:
            A dict of JSON types.
        """
        return {
            "wave": self.wave,
            "action": self.action,
            "acted": self.acted,
            "dry_run": self.dry_run,
            "ripple": self.ripple,
            "devices": self.devices,
            "refused": self.refused,
            "audit_id": self.audit_id,
            "evaluation": self.evaluation.to_dict(),
        }


def _offered(inv: Inventory, wave: WaveContext) -> dict[str, int]:
    """Device -> the published ripple that offered it the wave (as reports record it).

    A list or Merkle ripple that selected the device, else the first fraction
    ripple whose fraction holds it (``tufwaves.server.reports.offered_ripple``).
    """
    published = wave.ripple_count
    offered = {u: k for u, k in inv.wave_selections(wave.name) if k <= published}
    fractions = sorted(
        (r.index, int(r.selector_data.get("fraction_ppm", 0)))
        for r in inv.ripples(wave.name)
        if r.encoding == "fraction" and r.index <= published
    )
    if fractions:
        salt = wave.fraction_salt
        for d in inv.list_devices(tag=wave.info.tag):
            if d.hardware_id not in wave.hardware_ids or d.uuid in offered:
                continue
            for index, ppm in fractions:
                if fraction_member(salt, d.uuid, ppm):
                    offered[d.uuid] = index
                    break
    return offered


def gate_inputs(repo: Repository, inv: Inventory, wave: WaveContext) -> GateInputs:
    """What the gates of a loaded, planned wave are evaluated from, read now.

    Args:
        repo: The repository (its clock is the evaluation time).
        inv: Its inventory.
        wave: The wave (:func:`~tufwaves.server.rollout.load_wave`).

    Returns:
        The inputs of :func:`~tufwaves.server.gates.evaluate_gates`.

    Raises:
        InputError: The wave has no plan.
    """
    plan = wave.plan
    if plan is None:
        raise InputError(f"wave {wave.name} has no plan; only planned waves have gates")
    published = wave.ripple_count
    return GateInputs(
        wave=wave.name,
        plan=plan,
        state=wave.status,
        accounting=wave.accounting,
        ripples={r.index: r.created for r in inv.ripples(wave.name) if r.index <= published},
        starts=stage_starts(inv, wave),
        offered=_offered(inv, wave),
        reports=inv.latest_reports(wave.name),
        now=repo.now(),
        expires=wave.expires,
        online_complete=wave.policy.online_complete,
    )


def evaluate(repo: Repository, inv: Inventory, wave: str) -> GateEvaluation:
    """Evaluate a planned wave's gates now; sign and change nothing.

    Args:
        repo: The repository (its clock is the evaluation time).
        inv: Its inventory (only stored reports count: their signatures were
            verified on arrival).
        wave: A published, planned wave.

    Returns:
        The evaluation (``specs/gates.md``).

    Raises:
        InputError: No such published wave, or it has no plan.
    """
    return _evaluate(repo, inv, wave)[1]


def _evaluate(repo: Repository, inv: Inventory, wave: str) -> tuple[WaveContext, GateEvaluation]:
    ctx = load_wave(repo, wave)
    return ctx, evaluate_gates(gate_inputs(repo, inv, ctx))


def _signatures(repo: Repository, role: str) -> list[str]:
    return sorted(repo.load_targets(role, repo.state()).signatures)


def advance(
    repo: Repository,
    inv: Inventory,
    wave: str,
    *,
    keys: Sequence[KeyRef] = (),
    dry_run: bool = False,
    source: str = "advance",
) -> Decision:
    """Evaluate a planned wave's gates and take the decision, exactly once.

    Under the repository lock and one inventory transaction the published
    state is read again and evaluated; then ``advance`` signs the next
    stage's ripple (:func:`~tufwaves.server.rollout.sign_stage`),
    ``complete`` completes the wave, ``pause``/``cancel`` sign the same
    transition as ``waves pause``/``waves cancel``; ``wait`` and ``none``
    sign nothing. A decision that acts, or whose action the rollout rules
    refused, is appended to the audit log as ``source`` with the evaluation.
    A second controller waiting on the lock then evaluates the new state, so
    the same decision is never taken twice.

    Args:
        repo: The repository.
        inv: Its inventory.
        wave: A published, planned wave.
        keys: The wave's rollout keys, when not the repository's online key.
        dry_run: Evaluate only (under the shared lock): sign, write and audit nothing.
        source: The audit action: ``advance`` (``waves advance``) or
            ``controller`` (the controller loop).

    Returns:
        The decision.

    Raises:
        InputError: No such wave, no plan, an unknown ``source``, or a key
            that cannot sign.
        StorageError: The lock could not be taken or a file not written.
    """
    if source not in SOURCES:
        raise InputError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
    if dry_run:
        with repo.locked(shared=True):
            ctx, ev = _evaluate(repo, inv, wave)
        next_ripple = ctx.ripple_count + 1 if ev.action == "advance" else None
        return Decision(wave, ev.action, False, True, ev, next_ripple)
    with repo.locked(), inv.transaction():
        _, ev = _evaluate(repo, inv, wave)  # the published state, read under the lock
        if not ev.acts:
            return Decision(wave, ev.action, False, False, ev)
        ripple = devices = None
        try:
            if ev.action == "advance":
                assert ev.next_stage is not None  # noqa: S101 - advance has a next stage
                result = sign_stage(repo, wave, ev.next_stage, inv=inv, keys=keys)
                ripple, devices = result.index, len(result.uuids)
                key_ids = _signatures(repo, ripple_role(wave, result.index))
            else:
                transition = {"complete": complete, "pause": pause, "cancel": cancel}
                transition[ev.action](repo, inv, wave, keys=keys)
                key_ids = _signatures(repo, rollout_role(wave))
        except RefusedError as e:
            entry = inv.audit(
                source,
                [],
                _audit_arguments(ev, ripple, devices, str(e)),
                repo.now(),
            )
            return Decision(wave, ev.action, False, False, ev, refused=str(e), audit_id=entry.id)
        entry = inv.audit(source, key_ids, _audit_arguments(ev, ripple, devices, None), repo.now())
    return Decision(wave, ev.action, True, False, ev, ripple, devices, audit_id=entry.id)


def _audit_arguments(
    ev: GateEvaluation, ripple: int | None, devices: int | None, refused: str | None
) -> dict[str, Any]:
    return {
        "wave": ev.wave,
        "action": ev.action,
        "stage": ev.stage,
        "next_stage": ev.next_stage if ev.action == "advance" else None,
        "ripple": ripple,
        "devices": devices,
        "refused": refused,
        "evaluation": ev.to_dict(),
    }


def planned_waves(repo: Repository) -> list[str]:
    """The published, active waves that have a plan, by name (what the controller watches).

    Args:
        repo: The repository.

    Returns:
        Wave names.
    """
    if not repo.is_published():
        return []
    return [w.name for w in list_waves(repo, status="active") if w.policy.plan is not None]


def advance_all(
    repo: Repository,
    inv: Inventory,
    *,
    keys: Sequence[KeyRef] = (),
    dry_run: bool = False,
    source: str = "controller",
) -> list[Decision]:
    """:func:`advance` every active planned wave once (one pass of the controller).

    Args:
        repo: The repository.
        inv: Its inventory.
        keys: The rollout keys, when not the repository's online key.
        dry_run: Evaluate only.
        source: The audit action (default ``controller``).

    Returns:
        One decision per wave, by wave name.
    """
    return [
        advance(repo, inv, name, keys=keys, dry_run=dry_run, source=source)
        for name in planned_waves(repo)
    ]


PassCallback = Callable[[list[Decision]], None]
ErrorCallback = Callable[[str, Exception], None]


class ControllerLoop:
    """The controller process: :func:`advance` every active planned wave on a
    schedule and soon after each :meth:`poke` (a batch of accepted reports).

    One pass every ``interval`` seconds; a poke brings the next pass forward
    to ``debounce`` seconds after it, so a burst of reports costs one pass.
    :meth:`poke` only sets a flag: it never waits for a pass, so a web
    handler can call it without adding latency. Passes run in the loop's own
    thread (:meth:`start`) or in the caller's (:meth:`run`); every pass opens
    the repository's inventory and closes it again. A wave whose decision
    fails (a key that cannot sign, a lock timeout) is logged and given to
    ``on_error``; the loop goes on. Two loops (processes, replicas) on one
    repository are safe: :func:`advance` takes each decision once.

    Args:
        repo_path: The repository directory.
        interval: Seconds between scheduled passes (above 0).
        debounce: Seconds from a poke to its pass (0 or more).
        keys: The rollout keys, when not the repository's online key.
        clock: The repository clock (default: the real UTC time).
        on_pass: Told the decisions of every pass.
        on_error: Told the wave and the error of every failed decision.

    Raises:
        InputError: ``interval`` or ``debounce`` out of range.
    """

    def __init__(
        self,
        repo_path: Path | str,
        *,
        interval: float = 60.0,
        debounce: float = 1.0,
        keys: Sequence[KeyRef] = (),
        clock: Clock | None = None,
        on_pass: PassCallback | None = None,
        on_error: ErrorCallback | None = None,
    ) -> None:
        if not interval > 0:
            raise InputError(f"the controller interval must be above 0 seconds, not {interval}")
        if not debounce >= 0:
            raise InputError(f"the controller debounce must be 0 seconds or more, not {debounce}")
        self.repo_path = Path(repo_path)
        self.interval = interval
        self.debounce = debounce
        self.keys = tuple(keys)
        self.clock = clock
        self.on_pass = on_pass
        self.on_error = on_error
        self.passes = 0
        self._cond = threading.Condition()
        self._due = time.monotonic()  # the first pass runs at once
        self._stopped = False
        self._thread: threading.Thread | None = None

    def poke(self) -> None:
        """Ask for a pass ``debounce`` seconds from now (or sooner if one is due)."""
        with self._cond:
            self._due = min(self._due, time.monotonic() + self.debounce)
            self._cond.notify()

    def run_once(self) -> list[Decision]:
        """One pass now, in the caller's thread: every active planned wave once.

        Returns:
            The decisions taken (a wave whose decision failed has none).
        """
        repo = Repository.open(self.repo_path, clock=self.clock)
        decisions: list[Decision] = []
        with open_inventory(repo) as inv:
            for name in planned_waves(repo):
                try:
                    decisions.append(advance(repo, inv, name, keys=self.keys, source="controller"))
                except TufwavesError as e:
                    logger.warning("controller: wave %s: %s", name, e)
                    if self.on_error is not None:
                        self.on_error(name, e)
        for d in decisions:
            if d.acted or d.refused:
                logger.info(
                    "controller: wave %s: %s%s",
                    d.wave,
                    d.action,
                    "" if d.acted else f" refused: {d.refused}",
                )
        self.passes += 1
        if self.on_pass is not None:
            self.on_pass(decisions)
        return decisions

    def _wait(self) -> bool:
        """Wait until a pass is due; False once stopped."""
        with self._cond:
            while not self._stopped:
                left = self._due - time.monotonic()
                if left <= 0:
                    self._due = time.monotonic() + self.interval
                    return True
                self._cond.wait(left)
            return False

    def run(self) -> None:
        """Run passes in this thread until :meth:`stop`."""
        while self._wait():
            try:
                self.run_once()
            except TufwavesError as e:  # the inventory or repository could not be opened
                logger.warning("controller: %s", e)
                if self.on_error is not None:
                    self.on_error("", e)

    def start(self) -> ControllerLoop:
        """Run the loop in a background (daemon) thread.

        Returns:
            This loop.
        """
        if self._thread is None:
            thread = threading.Thread(target=self.run, name="tufwaves-controller", daemon=True)
            self._thread = thread
            thread.start()
        return self

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop the loop after the pass in progress.

        Args:
            timeout: Seconds to wait for the loop's thread (None: as long as it takes).
        """
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> ControllerLoop:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
