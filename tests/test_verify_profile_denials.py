"""Every way signed metadata can break the tufwaves profile (specs/verifier.md §3).

Each case changes one thing in a simulated repository that the simulator then
signs with the real keys: the TUF workflow verifies, the profile check denies
the whole decision with the exact reason and names the wave. The metadata
verified completely, so the trust state is updated all the same (§5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tuf.api.metadata import DelegatedRole, Delegations, SuccinctRoles, TargetFile

from tests.simulator import NOW, Simulator, device, signer
from tufwaves.device.bundle import Bundle
from tufwaves.device.membership import MerkleEvidence
from tufwaves.verify import DeviceIdentity, Reason, Verifier

MEMBER = device(1)
MERKLE_MEMBER = device(20)
OUTSIDER = device(3)
ARTIFACT = "waves/w1/hw-a/fw-7.bin"

Build = Callable[[], tuple[Simulator, Bundle]]


def base(**wave: Any) -> Simulator:
    """Production v5; wave w1 v7 with a list ripple and a Merkle ripple."""
    sim = Simulator()
    sim.add_production(5)
    sim.add_wave("w1", 7, **wave)
    sim.add_list_ripple("w1", [MEMBER, device(2)])
    sim.add_merkle_ripple("w1", [device(i) for i in range(10, 40)])
    return sim


def edited(edit: Callable[[Simulator], object], uuid: str = MEMBER, **wave: Any) -> Build:
    """The base repository (wave options ``wave``) changed by ``edit``."""

    def build() -> tuple[Simulator, Bundle]:
        sim = base(**wave)
        edit(sim)
        return sim, sim.bundle(uuid)

    return build


# -- what to edit -----------------------------------------------------------------


def wave_field(sim: Simulator) -> dict[str, Any]:
    field: dict[str, Any] = sim.waves["w1"].wave.signed.unrecognized_fields["x-tufwaves-wave"]
    return field


def policy(sim: Simulator) -> dict[str, Any]:
    p: dict[str, Any] = wave_field(sim)["policy"]
    return p


def rollout_field(sim: Simulator) -> dict[str, Any]:
    field: dict[str, Any] = sim.waves["w1"].rollout.signed.unrecognized_fields["x-tufwaves-rollout"]
    return field


def ripple_field(sim: Simulator, k: int = 1) -> dict[str, Any]:
    field: dict[str, Any] = (
        sim.waves["w1"].ripples[k].signed.unrecognized_fields["x-tufwaves-ripple"]
    )
    return field


def custom(sim: Simulator) -> dict[str, Any]:
    c: dict[str, Any] = sim.waves["w1"].wave.signed.targets[ARTIFACT].unrecognized_fields["custom"]
    return c


def wave_delegations(sim: Simulator) -> dict[str, DelegatedRole]:
    d = sim.waves["w1"].wave.signed.delegations
    assert d is not None and d.roles is not None
    return d.roles


def rollout_delegations(sim: Simulator) -> dict[str, DelegatedRole]:
    d = sim.waves["w1"].rollout.signed.delegations
    assert d is not None and d.roles is not None
    return d.roles


def setitem(get: Callable[[Simulator], dict[str, Any]], key: str, value: object) -> Build:
    return edited(lambda sim: get(sim).__setitem__(key, value))


def delitem(get: Callable[[Simulator], dict[str, Any]], key: str) -> Build:
    return edited(lambda sim: get(sim).pop(key))


def replace_field(role: str, value: object) -> Build:
    def edit(sim: Simulator) -> None:
        fields = sim.signed_of(role).unrecognized_fields
        name = next(k for k in fields if k.startswith("x-tufwaves-"))
        fields[name] = value

    return edited(edit)


def remove_field(role: str) -> Build:
    def edit(sim: Simulator) -> None:
        fields = sim.signed_of(role).unrecognized_fields
        for name in [k for k in fields if k.startswith("x-tufwaves-")]:
            del fields[name]

    return edited(edit)


# -- special builders ---------------------------------------------------------------


def wave_delegates_extra_role(sim: Simulator) -> None:
    roles = wave_delegations(sim)
    keyids = roles["rollout.w1"].keyids
    roles["rollout.w1-extra"] = DelegatedRole("rollout.w1-extra", keyids, 1, True, paths=[])


def rollout_delegation_with_hash_prefixes(sim: Simulator) -> None:
    roles = wave_delegations(sim)
    old = roles["rollout.w1"]
    roles["rollout.w1"] = DelegatedRole(
        "rollout.w1", old.keyids, old.threshold, True, path_hash_prefixes=["ab"]
    )


def ripple_delegation(edit: Callable[[DelegatedRole], None], **wave: Any) -> Build:
    return edited(lambda sim: edit(rollout_delegations(sim)["ripple.w1.1"]), **wave)


def ripple_delegation_other_keys(role: DelegatedRole) -> None:
    role.keyids = sorted([*role.keyids, signer("stranger").public_key.keyid])


def ripples_out_of_order(sim: Simulator) -> None:
    d = sim.waves["w1"].rollout.signed.delegations
    assert d is not None and d.roles is not None
    d.roles = dict(reversed(list(d.roles.items())))


def rollout_hashed_bins() -> tuple[Simulator, Bundle]:
    sim = Simulator()
    sim.add_wave("w1", 7)  # no ripples, so none in the bundle
    w = sim.waves["w1"]
    keyids = [s.public_key.keyid for s in w.rollout_signers]
    w.rollout.signed.delegations = Delegations(
        keys={s.public_key.keyid: s.public_key for s in w.rollout_signers},
        succinct_roles=SuccinctRoles(keyids, 1, 4, "ripple.w1"),
    )
    return sim, sim.bundle(MEMBER)


def ripple_lists_artifact(sim: Simulator) -> None:
    path = "waves/w1/hw-a/fw-8.bin"
    sim.waves["w1"].ripples[1].signed.targets[path] = sim.artifact(path, 7, ["hw-a"], ["main"])


def ripple_delegates(sim: Simulator) -> None:
    sim.waves["w1"].ripples[1].signed.delegations = Delegations(keys={}, roles={})


def rollout_lists_artifact(sim: Simulator) -> None:
    path = "waves/w1/hw-a/evil.bin"
    sim.waves["w1"].rollout.signed.targets[path] = sim.artifact(path, 99, ["hw-a"], ["main"])


def artifact_outside_paths(sim: Simulator) -> None:
    path = "production/hw-a/fw-7.bin"
    sim.waves["w1"].wave.signed.targets[path] = sim.artifact(path, 7, ["hw-a"], ["main"])


def artifact_custom_not_object(sim: Simulator) -> None:
    sim.waves["w1"].wave.signed.targets[ARTIFACT].unrecognized_fields["custom"] = "fw-7"


def evidence_for_list_ripple() -> tuple[Simulator, Bundle]:
    sim = base()
    b = sim.bundle(MEMBER)
    proof = sim.evidence("w1", 2, MERKLE_MEMBER)
    assert proof is not None
    evidence = MerkleEvidence("ripple.w1.1", proof.leaf_index, proof.path)
    return sim, Bundle(MEMBER, b.files, (evidence,))


def evidence_for_another_device() -> tuple[Simulator, Bundle]:
    sim = base()
    b = sim.bundle(MERKLE_MEMBER)
    other = sim.evidence("w1", 2, device(21))
    assert other is not None
    return sim, Bundle(MERKLE_MEMBER, b.files, (other,))


def complete_without_online_complete(sim: Simulator) -> None:
    sim.set_state("w1", "complete")


@dataclass(frozen=True)
class Case:
    build: Build
    reason: Reason
    uuid: str = MEMBER
    installed: int = 4


W, R, P = Reason.WAVE_INVALID, Reason.RIPPLE_INVALID, Reason.POLICY_VIOLATION

CASES: dict[str, Case] = {
    # wave.W: x-tufwaves-wave
    "wave-field-missing": Case(remove_field("wave.w1"), W),
    "wave-field-not-object": Case(replace_field("wave.w1", ["w1"]), W),
    "wave-field-extra-member": Case(setitem(wave_field, "note", "x"), W),
    "wave-names-another-wave": Case(setitem(wave_field, "name", "w9"), W),
    "wave-tag-not-a-label": Case(setitem(wave_field, "tag", "-main"), W),
    "wave-tag-not-a-string": Case(setitem(wave_field, "tag", 7), W),
    "wave-version-not-a-string": Case(setitem(wave_field, "version", 7), W),
    "wave-version-leading-zero": Case(setitem(wave_field, "version", "07"), W),
    "policy-not-object": Case(setitem(wave_field, "policy", "strict"), W),
    "policy-unknown-member": Case(setitem(policy, "max_per_hour", 10), Reason.POLICY_UNSUPPORTED),
    "policy-incomplete": Case(delitem(policy, "fraction_salt"), W),
    "policy-max-ripple-size-zero": Case(setitem(policy, "max_ripple_size", 0), W),
    "policy-max-ripple-size-bool": Case(setitem(policy, "max_ripple_size", True), W),
    "policy-max-ripple-size-string": Case(setitem(policy, "max_ripple_size", "10"), W),
    "policy-online-complete-not-bool": Case(setitem(policy, "online_complete", 1), W),
    "policy-salt-uppercase": Case(setitem(policy, "fraction_salt", "5A" * 32), W),
    "policy-salt-short": Case(setitem(policy, "fraction_salt", "5a" * 31), W),
    "policy-salt-not-a-string": Case(setitem(policy, "fraction_salt", 5), W),
    "policy-salt-carried-in-version-1": Case(setitem(policy, "fraction_salt", "5a" * 32), W),
    "policy-max-fraction-negative": Case(setitem(policy, "max_fraction_ppm", -1), W),
    "policy-max-fraction-over-million": Case(setitem(policy, "max_fraction_ppm", 1_000_001), W),
    # wave.W delegates exactly rollout.W, terminating, no paths
    "wave-delegates-extra-role": Case(edited(wave_delegates_extra_role), W),
    "rollout-delegation-not-terminating": Case(
        edited(lambda s: setattr(wave_delegations(s)["rollout.w1"], "terminating", False)), W
    ),
    "rollout-delegation-with-paths": Case(
        edited(lambda s: setattr(wave_delegations(s)["rollout.w1"], "paths", ["waves/*"])), W
    ),
    "rollout-delegation-hash-prefixes": Case(edited(rollout_delegation_with_hash_prefixes), W),
    # rollout.W: x-tufwaves-rollout and its delegations
    "rollout-field-missing": Case(remove_field("rollout.w1"), W),
    "rollout-field-not-object": Case(replace_field("rollout.w1", "active"), W),
    "rollout-field-extra-member": Case(setitem(rollout_field, "note", "x"), W),
    "rollout-names-another-wave": Case(setitem(rollout_field, "wave", "w9"), W),
    "rollout-state-unknown": Case(setitem(rollout_field, "state", "suspended"), W),
    "rollout-state-not-a-string": Case(setitem(rollout_field, "state", ["active"]), W),
    "rollout-ripple-count-negative": Case(setitem(rollout_field, "ripples", -1), W),
    "rollout-ripple-count-bool": Case(setitem(rollout_field, "ripples", True), W),
    "rollout-ripple-count-mismatch": Case(setitem(rollout_field, "ripples", 3), W),
    "rollout-lists-artifact": Case(edited(rollout_lists_artifact), W),
    "rollout-hashed-bins": Case(rollout_hashed_bins, W),
    "rollout-ripples-out-of-order": Case(edited(ripples_out_of_order), W),
    "ripple-delegation-not-terminating": Case(
        ripple_delegation(lambda r: setattr(r, "terminating", False)), W
    ),
    "ripple-delegation-with-paths": Case(
        ripple_delegation(lambda r: setattr(r, "paths", ["waves/*"])), W
    ),
    "ripple-delegation-other-keys": Case(ripple_delegation(ripple_delegation_other_keys), W),
    "ripple-delegation-other-threshold": Case(
        ripple_delegation(lambda r: setattr(r, "threshold", 2), rollout_keys=2), W
    ),
    # ripple.W.K: x-tufwaves-ripple
    "ripple-field-missing": Case(remove_field("ripple.w1.1"), R),
    "ripple-field-not-object": Case(replace_field("ripple.w1.1", 1), R),
    "ripple-field-extra-member": Case(edited(lambda s: ripple_field(s).update(note="x")), R),
    "ripple-names-another-wave": Case(edited(lambda s: ripple_field(s).update(wave="w2")), R),
    "ripple-names-another-index": Case(edited(lambda s: ripple_field(s).update(index=2)), R),
    "ripple-index-not-an-integer": Case(edited(lambda s: ripple_field(s).update(index="1")), R),
    "ripple-lists-artifact": Case(edited(ripple_lists_artifact), R),
    "ripple-delegates": Case(edited(ripple_delegates), R),
    "ripple-membership-unknown-encoding": Case(
        edited(lambda s: ripple_field(s).update(membership={"encoding": "bloom"})), R
    ),
    "ripple-membership-not-object": Case(
        edited(lambda s: ripple_field(s).update(membership=[MEMBER])), R
    ),
    # what the rollout keys may sign, per the wave's policy
    "list-ripple-over-max-size": Case(
        edited(lambda s: policy(s).update(max_ripple_size=1), OUTSIDER), P, OUTSIDER
    ),
    "merkle-ripple-over-max-size": Case(
        edited(lambda s: policy(s).update(max_ripple_size=29), OUTSIDER), P, OUTSIDER
    ),
    "fraction-ripple-over-max-ppm": Case(
        edited(
            lambda s: s.add_fraction_ripple("w1", 500_001), policy={"max_fraction_ppm": 500_000}
        ),
        P,
    ),
    "complete-without-online-complete": Case(
        edited(
            complete_without_online_complete,
            OUTSIDER,
            policy={"online_complete": False, "max_fraction_ppm": 0},
        ),
        P,
        OUTSIDER,
        installed=5,
    ),
    # the wave's artifacts
    "artifact-custom-not-object": Case(edited(artifact_custom_not_object), W),
    "artifact-custom-missing": Case(
        edited(lambda s: s.waves["w1"].wave.signed.targets[ARTIFACT].unrecognized_fields.clear()),
        W,
    ),
    "artifact-no-hardware-ids": Case(setitem(custom, "hardwareIds", []), W),
    "artifact-hardware-id-not-a-string": Case(setitem(custom, "hardwareIds", [1]), W),
    "artifact-tags-missing": Case(delitem(custom, "tags"), W),
    "artifact-tags-empty": Case(setitem(custom, "tags", []), W),
    "artifact-tag-not-a-string": Case(setitem(custom, "tags", ["main", None]), W),
    "artifact-version-not-a-string": Case(setitem(custom, "version", 7), W),
    "artifact-version-not-the-waves": Case(setitem(custom, "version", "8"), W),
    "artifact-outside-delegated-paths": Case(edited(artifact_outside_paths), W),
    # evidence
    "evidence-for-list-ripple": Case(evidence_for_list_ripple, Reason.EVIDENCE_INVALID),
    "evidence-for-another-device": Case(
        evidence_for_another_device, Reason.EVIDENCE_INVALID, MERKLE_MEMBER
    ),
}


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
def test_profile_denial(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    sim, bundle = case.build()
    (tmp_path / "root.json").write_bytes(sim.trusted_root())
    verifier = Verifier.from_state_dir(tmp_path)
    identity = DeviceIdentity(case.uuid, "hw-a", "main", case.installed)

    decision = verifier.decide(bundle, identity, NOW)

    assert decision.reason is case.reason, decision.message
    assert not decision.allowed and decision.artifact is None
    assert decision.wave == ("w1" if case.reason is not Reason.EVIDENCE_INVALID else None)
    assert decision.ripple is None
    # The metadata verified completely: the state records it, denial or not.
    assert (tmp_path / "state.json").exists()
    assert verifier.decide(bundle, identity, NOW).reason is case.reason


def test_fraction_ripple_is_not_bound_by_the_size_cap() -> None:
    sim = Simulator()
    sim.add_wave("w1", 7, policy={"max_ripple_size": 5})
    sim.add_fraction_ripple("w1", 1_000_000)
    verifier = Verifier.from_trusted_root(sim.trusted_root())
    d = verifier.decide(sim.bundle(OUTSIDER), DeviceIdentity(OUTSIDER, "hw-a", "main", 4), NOW)
    assert (d.reason, d.wave, d.ripple) == (Reason.ALLOWED_FRACTION, "w1", 1)


def test_production_target_outside_the_profile_is_ignored() -> None:
    sim = Simulator()
    path = "production/hw-a/fw-9.bin"
    sim.targets.targets[path] = TargetFile(4, {"sha256": "00" * 32}, path)
    sim.targets.version += 1
    verifier = Verifier.from_trusted_root(sim.trusted_root())
    d = verifier.decide(sim.bundle(MEMBER), DeviceIdentity(MEMBER, "hw-a", "main", 4), NOW)
    assert d.reason is Reason.NO_MATCHING_ARTIFACT
