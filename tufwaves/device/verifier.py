"""The device-side verifier: may this device install an update, and if not, why.

Usage::

    verifier = Verifier.from_state_dir(Path("/var/lib/ota/trust"))
    decision = verifier.decide(bundle_bytes, DeviceIdentity(uuid, hw, tag, 41))
    if decision.allowed:
        install(decision.artifact)
    else:
        log(decision.reason.value, decision.message)

:meth:`Verifier.decide` runs the full TUF client workflow over the bundle's
exact bytes (root rotation, timestamp, snapshot, targets, every delegation
``targets -> wave.W -> rollout.W -> ripple.W.K``) at a reference time, then the
tufwaves decision rules. It never raises for anything in the bundle: every
problem is a denial with a :class:`Reason`. The trusted state is updated only
after the metadata verified completely. ``specs/verifier.md`` is the normative
description.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime
from pathlib import Path

from tuf.api.metadata import Metadata

from tufwaves.device._client import (
    BundleSource,
    Chain,
    ChainError,
    ExpiredError,
    TrustState,
    load_role,
    read_state_dir,
    refresh,
    write_state_dir,
)
from tufwaves.device._rules import (
    Artifact,
    Decision,
    DeviceIdentity,
    Reason,
    VerifiedMetadata,
    VerifiedWave,
    decide_rules,
    seen_cancelled,
)
from tufwaves.device.bundle import Bundle, BundleError, BundleTooLargeError
from tufwaves.device.salt import signature_salt
from tufwaves.errors import InputError, VerificationError

__all__ = [
    "Artifact",
    "Decision",
    "DeviceIdentity",
    "Reason",
    "Verifier",
]

logger = logging.getLogger(__name__)


class Verifier:
    """Decides for one device, keeping its TUF trust state between decisions.

    Build one with :meth:`from_trusted_root` (state kept in memory only) or
    :meth:`from_state_dir` (state persisted in a directory after each
    decision whose metadata verified completely).
    """

    def __init__(self, state: TrustState, state_dir: Path | None = None) -> None:
        """Use :meth:`from_trusted_root` or :meth:`from_state_dir` instead.

        Raises:
            VerificationError: the trusted root does not parse or is not
                signed by its own threshold of root keys.
        """
        try:
            chain = Chain(state, datetime.now(UTC))
        except ChainError as e:
            raise VerificationError(f"the trusted root is not usable: {e}") from None
        self._state = state
        self._root_version = chain.root.version
        self._dir = state_dir

    @classmethod
    def from_trusted_root(cls, root_bytes: bytes) -> Verifier:
        """A verifier that trusts ``root_bytes`` (exact bytes of a root.json).

        Its state lives in memory: rollback protection holds across decisions
        of this object only.

        Raises:
            VerificationError: the root is malformed or not self-signed.
        """
        if not isinstance(root_bytes, bytes):
            raise InputError("the trusted root must be bytes")
        return cls(TrustState(root_bytes))

    @classmethod
    def from_state_dir(cls, path: Path | str) -> Verifier:
        """A verifier whose trust state lives in the directory ``path``.

        A new directory holds just the provisioned trusted root as
        ``root.json``; after a decision it also holds ``state.json`` and
        ``roots/N.root.json`` (see ``specs/verifier.md``).

        Raises:
            StorageError: the directory or its files cannot be read or are
                inconsistent.
            VerificationError: the trusted root is malformed or not self-signed.
        """
        directory = Path(path)
        return cls(read_state_dir(directory), directory)

    @property
    def trusted_root_version(self) -> int:
        """The version of the root this verifier currently trusts."""
        return self._root_version

    def decide(
        self,
        bundle: Bundle | bytes,
        device: DeviceIdentity,
        at: datetime | None = None,
    ) -> Decision:
        """Decide whether ``device`` may install an artifact from ``bundle``.

        ``at`` is the reference time for expiry (default: now, UTC). The trust
        state is updated after every decision whose metadata verified
        completely, allowed or not.

        Raises:
            InputError: ``at`` is not timezone-aware or ``device`` is not a
                :class:`DeviceIdentity` (misuse of the API, not bad input).
        """
        if at is None:
            at = datetime.now(UTC)
        elif not isinstance(at, datetime) or at.tzinfo is None:
            raise InputError("the reference time must be a timezone-aware datetime")
        if not isinstance(device, DeviceIdentity):
            raise InputError("device must be a DeviceIdentity")
        try:
            decision, new_state = self._decide(bundle, device, at)
        except Exception:  # last resort: fail closed, never allow
            logger.exception("verifier failed unexpectedly")
            return Decision.deny(
                Reason.INTERNAL_ERROR,
                "the verifier failed unexpectedly; the bundle is refused",
            )
        if new_state is not None:
            try:
                self._commit(new_state)
            except Exception as e:
                logger.warning("trust state not saved: %s", e)
                if decision.allowed:
                    return Decision.deny(
                        Reason.STATE_WRITE_FAILED,
                        f"the metadata verified but the trust state could not be "
                        f"saved ({e}); not installing",
                    )
        logger.debug("decision %s: %s", decision.reason.value, decision.message)
        return decision

    def _commit(self, state: TrustState) -> None:
        if self._dir is not None:
            write_state_dir(self._dir, state)
        chain = Chain(state, datetime.now(UTC))
        self._state = state
        self._root_version = chain.root.version

    def _decide(
        self, raw: Bundle | bytes, device: DeviceIdentity, at: datetime
    ) -> tuple[Decision, TrustState | None]:
        if isinstance(raw, Bundle):
            bundle = raw
        elif isinstance(raw, bytes | bytearray | memoryview):
            try:
                bundle = Bundle.from_bytes(bytes(raw))
            except BundleTooLargeError as e:
                return Decision.deny(Reason.BUNDLE_TOO_LARGE, str(e)), None
            except (BundleError, InputError) as e:
                return Decision.deny(Reason.BUNDLE_MALFORMED, str(e)), None
        else:
            return Decision.deny(Reason.BUNDLE_MALFORMED, "not a bundle"), None
        if bundle.device != device.uuid:
            return (
                Decision.deny(
                    Reason.DEVICE_MISMATCH,
                    f"the bundle was made for device {bundle.device}, not {device.uuid}",
                ),
                None,
            )
        try:
            chain = Chain(self._state, at)
            verified, left_out = _verify_bundle(chain, bundle)
        except ChainError as e:
            return Decision.deny(e.reason, e.message), None
        cancelled = self._state.cancelled | seen_cancelled(verified)
        new_state = dataclasses.replace(chain.state(), cancelled=cancelled)
        decision = decide_rules(verified, device, cancelled, at)
        if left_out and not decision.allowed:
            note = "; ".join(left_out)
            decision = dataclasses.replace(
                decision, message=f"{decision.message} (left out: {note})"
            )
        return decision, new_state


def _verify_bundle(chain: Chain, bundle: Bundle) -> tuple[VerifiedMetadata, list[str]]:
    """Run the TUF workflow over every file of ``bundle``, in the bundle's order.

    An expired ``wave.W`` or ``rollout.W`` leaves its wave out of the
    decision, an expired ``ripple.W.K`` that ripple (``specs/verifier.md``
    step 5): expired metadata is not trusted, and a wave can only add
    permissions. Returns the verified metadata and why anything was left out.
    """
    for f in bundle.roots():
        if f.version <= chain.root.version:
            chain.check_known_root(f.data, f.version)
    source = BundleSource(bundle, chain.root.version)
    refresh(chain, source)
    waves = []
    left_out: list[str] = []
    verified: set[str] = set()
    for name in bundle.waves():
        try:
            wave = load_role(chain, source, f"wave.{name}", "targets")
            rollout = load_role(chain, source, f"rollout.{name}", f"wave.{name}")
        except ExpiredError as e:
            left_out.append(f"wave {name}, {e.message}")
            continue
        ripples = []
        for k in bundle.ripples(name):
            role = f"ripple.{name}.{k}"
            try:
                ripples.append((k, load_role(chain, source, role, f"rollout.{name}")))
            except ExpiredError as e:
                left_out.append(e.message)
            else:
                verified.add(role)
        waves.append(VerifiedWave(name, wave, rollout, tuple(ripples), _salt(chain, bundle, name)))
    # Evidence for a ripple left out proves nothing and is dropped with it.
    evidence = tuple(e for e in bundle.evidence if e.role in verified)
    return VerifiedMetadata(chain.role("targets"), tuple(waves), evidence), left_out


def _salt(chain: Chain, bundle: Bundle, name: str) -> bytes:
    """The fraction salt derived from ``wave.W``'s signatures (``specs/membership.md`` 6.1).

    ``load_role`` has just verified the bundle's ``wave.W`` file against the
    delegation in ``targets``; this reads the same bytes again for the
    signatures, which the verified ``Targets`` object does not keep.
    """
    role = f"wave.{name}"
    f = bundle.file(role)
    data = f.data if f is not None else b""
    return signature_salt(chain.role("targets"), role, Metadata.from_bytes(data))
