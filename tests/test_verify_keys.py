"""Delegated keys are compared by key material, not only by key id.

python-tuf takes a delegation's key ids as the metadata states them. A key id
bound to other key material would let a never-authorised key sign
(``specs/verifier.md`` §3).
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner, SSlibKey

from tests.forge import sign, with_files
from tests.simulator import NOW, Simulator, device
from tufwaves.device.profile import key_id_of, same_key
from tufwaves.verify import DeviceIdentity, Reason, Verifier

D = device(1)
ME = DeviceIdentity(D, "hw-a", "main", 4)


def impostor(keyid: str, name: str = "stranger") -> CryptoSigner:
    """A signer with the key material of ``name`` that claims key id ``keyid``."""
    seed = hashlib.sha256(b"tufwaves-test-key:" + name.encode()).digest()
    private = Ed25519PrivateKey.from_private_bytes(seed)
    real = CryptoSigner(private).public_key
    return CryptoSigner(private, SSlibKey(keyid, real.keytype, real.scheme, real.keyval))


def test_a_ripple_signed_by_other_key_material_under_the_rollout_key_id() -> None:
    sim = Simulator()
    w = sim.add_wave("w1", 7)
    sim.add_list_ripple("w1", [device(2)])
    authorised = w.rollout_signers[0].public_key.keyid
    fake = impostor(authorised)
    # The rollout keys sign a rollout role that binds their key id to the
    # stranger's material, and ripple 2 is signed by the stranger.
    sim.add_list_ripple("w1", [D])
    d = w.rollout.signed.delegations
    assert d is not None
    d.keys[authorised] = fake.public_key
    bundle = sim.bundle(D)
    forged = with_files(
        bundle,
        {
            f"ripple.w1.{k}": (r.signed.version, sign(r.signed, [fake]))
            for k, r in w.ripples.items()
        },
    )

    decision = Verifier.from_trusted_root(sim.trusted_root()).decide(forged, ME, NOW)

    assert decision.reason is Reason.WAVE_INVALID, decision.message
    assert "key material" in decision.message
    assert decision.wave == "w1"


def test_a_rollout_key_whose_id_is_not_its_material() -> None:
    sim = Simulator()
    w = sim.add_wave("w1", 7)
    authorised = w.rollout_signers[0].public_key.keyid
    fake = impostor(authorised)
    wave_d = w.wave.signed.delegations
    assert wave_d is not None
    wave_d.keys[authorised] = fake.public_key  # signed by the targets key
    w.rollout_signers = [fake]  # rollout and ripples are signed by the stranger
    sim.add_list_ripple("w1", [D])

    decision = Verifier.from_trusted_root(sim.trusted_root()).decide(sim.bundle(D), ME, NOW)

    assert decision.reason is Reason.WAVE_INVALID, decision.message
    assert "SHA-256 of its key material" in decision.message
    assert decision.wave == "w1"


def test_genuine_keys_pass() -> None:
    sim = Simulator()
    sim.add_wave("w1", 7, rollout_keys=2, rollout_threshold=2)
    sim.add_list_ripple("w1", [D])
    decision = Verifier.from_trusted_root(sim.trusted_root()).decide(sim.bundle(D), ME, NOW)
    assert decision.reason is Reason.ALLOWED_RIPPLE, decision.message


def test_key_id_of_and_same_key() -> None:
    real = impostor("x", "k").public_key
    genuine = CryptoSigner(
        Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"tufwaves-test-key:k").digest())
    ).public_key
    assert key_id_of(genuine) == genuine.keyid
    assert key_id_of(real) == genuine.keyid != real.keyid
    assert same_key(real, genuine)
    assert not same_key(real, impostor("x", "other").public_key)
    assert not same_key(real, None)
    odd = SSlibKey("y", "x-odd", "x-odd", {"public": "a", "n": 1.5})  # no canonical JSON
    assert key_id_of(odd) is None
