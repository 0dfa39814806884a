"""Guards of the TUF workflow class that neither entry point can trip.

``Chain`` is shared by the verifier and the conformance client. Both call it
in order, with an aware reference time, through sources that cap sizes
themselves; these guards keep a future caller from skipping a step (say, the
final root's expiry) or feeding it uncapped bytes, so they are kept and
tested here directly rather than deleted.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.simulator import NOW, Simulator
from tufwaves.device._client import Chain, ChainError, TrustState
from tufwaves.device.bundle import LIMITS
from tufwaves.verify import Reason


def chain_at(stage: str) -> tuple[Simulator, Chain]:
    sim = Simulator()
    sim.publish()
    chain = Chain(TrustState(sim.trusted_root()), NOW)
    if stage in ("timestamp", "snapshot", "targets"):
        chain.finish_roots()
    if stage in ("snapshot", "targets"):
        chain.update_timestamp(sim.latest("timestamp"))
    if stage == "targets":
        chain.update_snapshot(sim.latest("snapshot"))
    return sim, chain


def test_reference_time_must_be_aware() -> None:
    sim = Simulator()
    with pytest.raises(ValueError, match="timezone-aware"):
        Chain(TrustState(sim.trusted_root()), datetime(2030, 1, 1))


def test_steps_out_of_order() -> None:
    sim, chain = chain_at("roots")
    with pytest.raises(RuntimeError, match="out of order"):
        chain.update_timestamp(sim.latest("timestamp"))
    with pytest.raises(RuntimeError, match="did not reach the snapshot"):
        chain.state()
    sim, chain = chain_at("targets")
    with pytest.raises(RuntimeError, match="delegated by root"):
        chain.update_targets(sim.latest("targets"), "targets", "wave.w1")


def test_uncapped_snapshot_is_too_large() -> None:
    _, chain = chain_at("snapshot")
    with pytest.raises(ChainError) as e:
        chain.update_snapshot(b" " * (LIMITS.snapshot_bytes + 1))
    assert e.value.reason is Reason.BUNDLE_TOO_LARGE


def test_uncapped_targets_is_too_large_and_unlisted_roles_refused() -> None:
    sim, chain = chain_at("targets")
    with pytest.raises(ChainError) as e:
        chain.update_targets(b" " * (LIMITS.targets_bytes + 1), "targets", "root")
    assert e.value.reason is Reason.BUNDLE_TOO_LARGE
    chain.update_targets(sim.latest("targets"), "targets", "root")
    with pytest.raises(ChainError) as e:
        chain.update_targets(sim.latest("targets"), "wave.w9", "targets")
    assert e.value.reason is Reason.DELEGATION_INVALID
