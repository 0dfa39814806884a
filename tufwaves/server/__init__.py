"""The server side of tufwaves as a library: the API an update server embeds.

Import everything from here; the submodules are internal and may change.

Overview:

* **Repository** -- :func:`create_repository` makes one (root, targets and
  online keys, first publish or a pending ceremony); :meth:`Repository.open`
  opens one. A repository takes a ``clock`` (the time everything it signs
  and checks uses; default the real UTC time) and the ``passphrase`` of its
  online keys (bytes or a callable; default ``TUFWAVES_KEY_PASSPHRASE`` or a
  terminal prompt, as on the command line). :func:`rotate_root` starts a new
  root version; :func:`rotate_online_keys` replaces the online snapshot,
  timestamp and rollout keys (after a leak) and :func:`rotate_targets_keys`
  the offline targets keys, each in a ceremony that revokes the old keys;
  :meth:`Repository.refresh` re-signs snapshot and timestamp.
* **Keys and signers** -- every function that signs takes :class:`KeyRef`
  values: :meth:`KeyRef.from_signer` wraps any securesystemslib ``Signer``
  (HSM, cloud KMS, in memory); :func:`load_key_ref` reads a key file or URI,
  with ``passphrase=`` given by the caller. :func:`generate_key` and
  :func:`write_key_pair` make key files.
* **Waves and ceremonies** -- :func:`init_wave` creates a release signed by
  the offline targets keys; until a threshold has signed, it waits in a
  :class:`Ceremony`: :func:`sign_ceremony` adds a signature here, or the
  ceremony file (:func:`load_ceremony` then :meth:`Ceremony.to_bytes`) is
  signed elsewhere (:meth:`Ceremony.sign`) and :func:`import_ceremony`-ed.
  :func:`review` is what a signer sees before signing: every key each role
  authorises, named only from the signer's :class:`Keyring`.
  :func:`list_waves` and :func:`wave_summary` show waves;
  :func:`fold_into_production` completes a wave offline.
* **Rollouts** -- :func:`rollout` signs a ripple of devices chosen by a
  :class:`Selector`; :func:`cancel` and :func:`complete` end a wave;
  a wave with a signed :class:`Plan` (:func:`plan_from_input`) moves stage by
  stage with :func:`sign_stage`, :func:`pause` and :func:`resume` (and
  :func:`stage_starts` says when each stage started);
  :func:`rollout_status` counts devices per group.
* **Controller** -- :func:`evaluate` computes a planned wave's health gates
  from the device-signed reports (a :class:`GateEvaluation`, from the pure
  :func:`evaluate_gates` over :class:`GateInputs`); :func:`advance` takes the
  resulting :class:`Decision` exactly once under the repository lock (sign
  the next stage, complete, or pause/cancel on an abort gate), and
  :func:`advance_all` does so for every active planned wave; a
  :class:`ControllerLoop` runs that on a schedule and when poked
  (``specs/gates.md``).
* **Bundles** -- :func:`build_bundle` gives a device everything it needs to
  decide with :class:`tufwaves.verify.Verifier`.
* **Inventory** -- the fleet and rollout history behind the
  :class:`Inventory` protocol; :class:`SqliteInventory` (via
  :func:`open_inventory`) is the embedded default.

Errors are :class:`~tufwaves.errors.TufwavesError` subclasses, re-exported
here; their message says what was wrong and what to do next.

Example (the README's "Embedding" section has a complete one)::

    from tufwaves.server import Repository, Selector, open_inventory, rollout

    repo = Repository.open("repo", passphrase=b"...")
    with open_inventory(repo) as inv:
        ripple = rollout(repo, inv, "spring-fix", Selector(limit=10))
"""

from __future__ import annotations

from tufwaves.errors import (
    InputError,
    KeyUseError,
    RefusedError,
    StorageError,
    TufwavesError,
    VerificationError,
)
from tufwaves.server.bundler import BundlePlan, BundleSource, build_bundle
from tufwaves.server.ceremony import Ceremony, PendingRole, RoleStatus
from tufwaves.server.controller import (
    ControllerLoop,
    Decision,
    advance,
    advance_all,
    evaluate,
    gate_inputs,
    planned_waves,
)
from tufwaves.server.gates import (
    Check,
    GateEvaluation,
    GateInputs,
    GateReason,
    StageFigures,
    evaluate_gates,
)
from tufwaves.server.inventory import (
    AuditEntry,
    Device,
    DeviceRow,
    Eligibility,
    GroupStatus,
    ImportResult,
    Inventory,
    RippleRecord,
    StoredReport,
)
from tufwaves.server.inventory.sqlite import SqliteInventory
from tufwaves.server.keys import (
    PASSPHRASE_ENV,
    KeyRef,
    Passphrase,
    generate_key,
    load_key_ref,
    load_public_key,
    write_key_pair,
)
from tufwaves.server.metadata import Clock, Policy, expiry, now
from tufwaves.server.plan import Plan, plan_from_input
from tufwaves.server.repository import PublishedState, Repository
from tufwaves.server.review import Keyring, Review, fingerprint, review
from tufwaves.server.rollout import (
    RolloutResult,
    RolloutStatus,
    Selector,
    WaveContext,
    cancel,
    complete,
    load_wave,
    open_inventory,
    pause,
    resume,
    ripple_members,
    rollout,
    rollout_status,
    sign_stage,
    stage_starts,
)
from tufwaves.server.roots import create_repository, repository_ceremony, rotate_root
from tufwaves.server.rotation import rotate_online_keys, rotate_targets_keys
from tufwaves.server.staging import load_ceremony, pending_ids
from tufwaves.server.waves import (
    WaveSummary,
    ceremony_for_wave,
    discard_ceremony,
    fold_into_production,
    import_ceremony,
    init_wave,
    list_waves,
    sign_ceremony,
    wave_summary,
)

__all__ = [
    "PASSPHRASE_ENV",
    "AuditEntry",
    "BundlePlan",
    "BundleSource",
    "Ceremony",
    "Check",
    "Clock",
    "ControllerLoop",
    "Decision",
    "Device",
    "DeviceRow",
    "Eligibility",
    "GateEvaluation",
    "GateInputs",
    "GateReason",
    "GroupStatus",
    "ImportResult",
    "InputError",
    "Inventory",
    "KeyRef",
    "KeyUseError",
    "Keyring",
    "Passphrase",
    "PendingRole",
    "Plan",
    "Policy",
    "PublishedState",
    "RefusedError",
    "Repository",
    "Review",
    "RippleRecord",
    "RoleStatus",
    "RolloutResult",
    "RolloutStatus",
    "Selector",
    "SqliteInventory",
    "StageFigures",
    "StorageError",
    "StoredReport",
    "TufwavesError",
    "VerificationError",
    "WaveContext",
    "WaveSummary",
    "advance",
    "advance_all",
    "build_bundle",
    "cancel",
    "ceremony_for_wave",
    "complete",
    "create_repository",
    "discard_ceremony",
    "evaluate",
    "evaluate_gates",
    "expiry",
    "fingerprint",
    "fold_into_production",
    "gate_inputs",
    "generate_key",
    "import_ceremony",
    "init_wave",
    "list_waves",
    "load_ceremony",
    "load_key_ref",
    "load_public_key",
    "load_wave",
    "now",
    "open_inventory",
    "pause",
    "pending_ids",
    "plan_from_input",
    "planned_waves",
    "repository_ceremony",
    "resume",
    "review",
    "ripple_members",
    "rollout",
    "rollout_status",
    "rotate_online_keys",
    "rotate_root",
    "rotate_targets_keys",
    "sign_ceremony",
    "sign_stage",
    "stage_starts",
    "wave_summary",
    "write_key_pair",
]
