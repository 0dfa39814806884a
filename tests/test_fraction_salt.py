"""The fraction salt is derived from the wave's offline signatures (specs/membership.md 6.1).

Finding: when whoever ran ``waves init`` chose the salt, grinding a few
thousand salts put a chosen device under a 0.01 % fraction, and the signers
saw only "fractions up to 0.01%". These tests reproduce the grinding, then
show that the preparer has nothing left to grind.
"""

from __future__ import annotations

import hashlib
import json
import uuid as uuidlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tuf.api.metadata import Metadata, Signature, Targets

from tests.conftest import KeyStore, RepoFactory, publish_wave, tree_digest
from tests.simulator import NOW, Simulator, device
from tests.test_profile import decide as decide_rules
from tests.test_profile import write
from tufwaves.cli import main
from tufwaves.device.bundle import Bundle, BundleFile
from tufwaves.device.membership import fraction_member
from tufwaves.device.salt import SALT_DOMAIN, signature_salt
from tufwaves.errors import InputError
from tufwaves.server.bundler import build_bundle
from tufwaves.server.ceremony import Ceremony
from tufwaves.server.metadata import Policy
from tufwaves.server.review import Keyring, review
from tufwaves.server.rollout import Selector, load_wave, open_inventory, rollout
from tufwaves.server.waves import wave_salt, wave_summary
from tufwaves.verify import DeviceIdentity, Reason, Verifier

TARGET = device(4242)  # the device the attacker wants in
TINY = 100  # 0.01 % in parts per million


def grind(uuid: str, ppm: int, tries: int) -> bytes | None:
    """What a preparer who chooses the salt does: try salts until ``uuid`` is in."""
    for i in range(tries):
        salt = hashlib.sha256(b"grind" + i.to_bytes(8, "big")).digest()
        if fraction_member(salt, uuid, ppm):
            return salt
    return None


def decide(sim: Simulator, uuid: str, bundle: Bundle | None = None) -> Any:
    verifier = Verifier.from_trusted_root(sim.trusted_root())
    return verifier.decide(bundle or sim.bundle(uuid), DeviceIdentity(uuid, "hw-a", "main", 4), NOW)


def sim_salt(sim: Simulator, wave: str = "w1") -> bytes:
    """The salt as the server computes it from the published files."""
    sim.publish()
    top = Metadata[Targets].from_bytes(sim.latest("targets")).signed
    return wave_salt(Metadata[Targets].from_bytes(sim.latest(f"wave.{wave}")), top)


def test_a_chosen_salt_is_ground_in_a_moment() -> None:
    """The old attack: about 10**4 tries put a chosen device under 0.01 %."""
    salt = grind(TARGET, TINY, 200_000)
    assert salt is not None
    assert fraction_member(salt, TARGET, TINY)


def test_the_preparer_cannot_sign_a_ground_salt_into_a_new_wave(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> None:
    salt = grind(TARGET, TINY, 200_000)
    assert salt is not None
    repo = make_repo()
    before = tree_digest(repo.path)
    with pytest.raises(InputError, match="cannot be given a fraction salt"):
        publish_wave(
            repo, keystore, artifact, policy=Policy(fraction_salt=salt.hex(), max_fraction_ppm=TINY)
        )
    assert tree_digest(repo.path) == before


def test_devices_refuse_a_salt_in_a_first_version_even_if_signed() -> None:
    """A version-1 wave carrying a salt is wave_invalid, however it was signed."""
    salt = grind(TARGET, TINY, 200_000)
    assert salt is not None
    sim = Simulator()
    sim.add_wave("w1", 7, policy={"fraction_salt": salt.hex(), "max_fraction_ppm": TINY})
    sim.add_fraction_ripple("w1", TINY)
    d = decide(sim, TARGET)
    assert d.reason is Reason.WAVE_INVALID and "first version" in d.message


def test_the_device_uses_the_salt_derived_from_the_signatures() -> None:
    sim = Simulator()
    sim.add_wave("w1", 7, policy={"max_fraction_ppm": 500_000})
    sim.add_fraction_ripple("w1", 500_000)
    salt = sim_salt(sim)
    wave = Metadata[Targets].from_bytes(sim.latest("wave.w1"))
    (keyid, sig), *_ = wave.signatures.items()
    raw = bytes.fromhex(sig.signature)
    by_hand = hashlib.sha256(
        SALT_DOMAIN
        + len(keyid).to_bytes(4, "big")
        + keyid.encode()
        + len(raw).to_bytes(4, "big")
        + raw
    ).digest()
    assert salt == by_hand
    members = [u for u in map(device, range(40)) if fraction_member(salt, u, 500_000)]
    assert 0 < len(members) < 40
    for i in range(40):
        u = device(i)
        d = decide(sim, u)
        assert (d.reason is Reason.ALLOWED_FRACTION) == (u in members), (u, d.message)


def _edit_wave(bundle: Bundle, edit: Any) -> Bundle:
    files = []
    for f in bundle.files:
        if f.role == "wave.w1":
            data = json.loads(f.data)
            edit(data)
            files.append(BundleFile(f.role, f.version, json.dumps(data).encode()))
        else:
            files.append(f)
    return Bundle(bundle.device, tuple(files), bundle.evidence)


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["signed"]["x-tufwaves-wave"]["policy"].update(max_fraction_ppm=999_999),
        lambda d: d["signed"]["x-tufwaves-wave"]["policy"].update(fraction_salt="5a" * 32),
        lambda d: d["signed"].update(expires="2098-01-01T00:00:00Z"),
    ],
    ids=["cap", "salt", "expiry"],
)
def test_changing_the_wave_without_re_signing_is_refused(edit: Any) -> None:
    sim = Simulator()
    sim.add_wave("w1", 7, policy={"max_fraction_ppm": 500_000})
    sim.add_fraction_ripple("w1", 500_000)
    d = decide(sim, TARGET, _edit_wave(sim.bundle(TARGET), edit))
    assert d.reason is Reason.DELEGATION_INVALID


def test_extra_and_invalid_signatures_do_not_change_the_salt() -> None:
    sim = Simulator()
    sim.add_wave("w1", 7, policy={"max_fraction_ppm": 500_000})
    sim.add_fraction_ripple("w1", 500_000)
    salt = sim_salt(sim)
    top = Metadata[Targets].from_bytes(sim.latest("targets")).signed
    wave = Metadata[Targets].from_bytes(sim.latest("wave.w1"))
    for keyid in ("00" * 32, "ff" * 32):  # not keys of the delegation
        wave.signatures[keyid] = Signature(keyid, "ab" * 64)
    assert signature_salt(top, "wave.w1", wave) == salt

    def add_junk(d: Any) -> None:
        d["signatures"].insert(0, {"keyid": "00" * 32, "sig": "ab" * 64})

    for u in map(device, range(20)):
        plain, padded = decide(sim, u), decide(sim, u, _edit_wave(sim.bundle(u), add_junk))
        assert plain.reason is padded.reason and plain.ripple == padded.ripple


def test_salt_comes_from_the_first_threshold_signatures_in_key_id_order(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> None:
    """2 of 3 signed by all three: extra signatures are ignored; the residual
    choice of a server that presents another valid pair is at most C(3, 2)."""
    repo = make_repo(threshold=2, signers=3)
    publish_wave(repo, keystore, artifact, signers=("t1", "t2", "t3"))
    wave = repo.load_targets("wave.w1")
    top = repo.load_targets("targets").signed
    assert len(wave.signatures) == 3
    salt = load_wave(repo, "w1").fraction_salt
    assert salt == signature_salt(top, "wave.w1", wave)
    first, second, third = sorted(wave.signatures)
    pairs = {}
    for drop in (first, second, third):
        subset = Metadata[Targets].from_bytes(wave.to_bytes())
        del subset.signatures[drop]
        pairs[drop] = signature_salt(top, "wave.w1", subset)
    assert pairs[third] == salt
    assert len({*pairs.values()}) == 3
    one = Metadata[Targets].from_bytes(wave.to_bytes())
    for keyid in (first, second):
        del one.signatures[keyid]
    with pytest.raises(InputError, match="threshold"):
        signature_salt(top, "wave.w1", one)


def test_waves_show_prints_the_salt(
    make_repo: RepoFactory,
    keystore: KeyStore,
    artifact: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = make_repo(threshold=2, signers=2)
    publish_wave(repo, keystore, artifact, "w2", 11, signers=("t1", "t2"))
    assert main(["waves", "show", "w2", "--repo", str(repo.path)]) == 0
    salt = load_wave(repo, "w2").fraction_salt.hex()
    assert f"fraction salt: {salt} (derived from the offline signatures)" in (
        capsys.readouterr().out
    )
    publish_wave(repo, keystore, artifact, "w1", 12, signers=("t1",))
    pending = wave_summary(repo, "w1")
    assert pending.status == "pending" and pending.fraction_salt is None
    assert main(["waves", "show", "w1", "--repo", str(repo.path)]) == 0
    assert "fraction salt: not derived yet" in capsys.readouterr().out
    key = str(keystore.make("t2"))
    assert main(["waves", "sign", "w1", "--repo", str(repo.path), "--key", key]) == 0
    assert wave_summary(repo, "w2").to_dict()["fraction_salt"] == salt
    salt = load_wave(repo, "w1").fraction_salt.hex()
    assert f"fraction salt: {salt} (derived" in capsys.readouterr().out
    assert salt == wave_summary(repo, "w1").fraction_salt


def test_re_signing_must_carry_the_salt() -> None:
    """A wave signed again by new targets keys derives another salt, so members
    change; carrying the old salt in version 2 keeps them."""
    sim = Simulator()
    sim.add_wave("w1", 7, policy={"max_fraction_ppm": 500_000})
    sim.add_fraction_ripple("w1", 500_000)
    devices = [device(i) for i in range(64)]
    before = {u: decide(sim, u).reason for u in devices}
    old = sim_salt(sim)
    sim.rotate_root(keys={"targets": ["targets-new"]})
    sim.publish()
    assert sim_salt(sim) != old
    assert {u: decide(sim, u).reason for u in devices} != before
    wave = sim.waves["w1"].wave.signed
    wave.unrecognized_fields["x-tufwaves-wave"]["policy"]["fraction_salt"] = old.hex()
    wave.version = 2
    sim.publish()
    assert sim_salt(sim) == old
    assert {u: decide(sim, u).reason for u in devices} == before


def _resign_ceremony(carried: str | None, published: bool) -> Ceremony:
    sim = Simulator()
    sim.add_wave("w1", 7)
    sim.publish()
    old = Metadata[Targets].from_bytes(sim.latest("wave.w1"))
    top = Metadata[Targets].from_bytes(sim.latest("targets"))
    new = Metadata[Targets].from_bytes(sim.latest("wave.w1"))
    new.signed.version = 2
    new.signed.unrecognized_fields["x-tufwaves-wave"]["policy"]["fraction_salt"] = carried
    new.signatures.clear()
    delegation = top.signed.delegations
    assert delegation is not None and delegation.roles is not None
    data: dict[str, Any] = {
        "format": "tufwaves-ceremony",
        "version": 1,
        "id": "wave.w1",
        "roles": [
            {
                "role": "targets",
                "metadata": top.to_dict(),
                "threshold": 1,
                "keys": {},
                "published": top.to_dict(),
            },
            {
                "role": "wave.w1",
                "metadata": new.to_dict(),
                "threshold": 1,
                "keys": {k: v.to_dict() for k, v in delegation.keys.items()},
                **({"published": old.to_dict()} if published else {}),
            },
        ],
        "key_names": {},
    }
    return Ceremony.from_bytes(json.dumps(data).encode())


@pytest.mark.parametrize(
    ("carried", "published", "expected"),
    [
        ("same", True, "fraction salt: the same as published version 1"),
        ("5a" * 32, True, "!! the fraction salt differs from published version 1"),
        ("5a" * 32, False, "!! the fraction salt is carried but the wave has no published"),
    ],
    ids=["carried", "differs", "nothing-published"],
)
def test_signers_see_a_carried_salt_checked(carried: str, published: bool, expected: str) -> None:
    if carried == "same":
        sim = Simulator()
        sim.add_wave("w1", 7)
        carried = sim_salt(sim).hex()
    text = "\n".join(review(_resign_ceremony(carried, published), Keyring()).lines)
    assert f"fraction salt {carried}: CARRIED" in text
    assert expected in text


@settings(max_examples=40, deadline=None)
@given(raw=st.binary(min_size=16, max_size=16), ppm=st.integers(1, 999_999))
def test_server_and_verifier_agree_on_random_devices_and_fractions(raw: bytes, ppm: int) -> None:
    uuid = str(uuidlib.UUID(bytes=raw))
    sim = Simulator()
    sim.add_wave("w1", 7, policy={"max_fraction_ppm": 999_999})
    sim.add_fraction_ripple("w1", ppm)
    expected = fraction_member(sim_salt(sim), uuid, ppm)
    d = decide(sim, uuid)
    assert d.reason is (Reason.ALLOWED_FRACTION if expected else Reason.NOT_MEMBER), d.message


def test_repository_members_agree_with_the_verifier(
    make_repo: RepoFactory, keystore: KeyStore, artifact: Path
) -> None:
    """The server's fraction members (the salt of ``load_wave``) are the devices' own."""
    repo = make_repo(threshold=2, signers=3)
    publish_wave(repo, keystore, artifact, signers=("t2", "t3"))
    with open_inventory(repo) as inv:
        rollout(repo, inv, "w1", Selector(fraction_ppm=300_000))
        files = build_bundle(repo, inv, TARGET, waves=["w1"]).files
    salt = load_wave(repo, "w1").fraction_salt
    verifier = Verifier.from_trusted_root(repo.role_bytes("root", 1))

    @settings(max_examples=60, deadline=None)
    @given(raw=st.binary(min_size=16, max_size=16))
    def check(raw: bytes) -> None:
        uuid = str(uuidlib.UUID(bytes=raw))
        d = verifier.decide(Bundle(uuid, files, ()), DeviceIdentity(uuid, "hw1", "prod", 5))
        member = fraction_member(salt, uuid, 300_000)
        assert d.reason is (Reason.ALLOWED_FRACTION if member else Reason.NOT_MEMBER), d.message

    check()


def test_a_wave_without_signatures_to_derive_from_is_invalid() -> None:
    """Decision rules handed a wave with no derived salt deny rather than guess."""
    wave, rollout_md, ripple = (md.signed for md in write())
    d = decide_rules(wave, rollout_md, ripple, salt=None)
    assert d.reason is Reason.WAVE_INVALID and "no signatures" in d.message


def test_salt_of_an_unknown_role_or_a_non_hex_signature_is_an_input_error() -> None:
    sim = Simulator()
    sim.add_wave("w1", 7)
    sim.publish()
    top = Metadata[Targets].from_bytes(sim.latest("targets")).signed
    wave = Metadata[Targets].from_bytes(sim.latest("wave.w1"))
    with pytest.raises(InputError, match=r"fraction salt of wave\.w9"):
        signature_salt(top, "wave.w9", wave)
    for keyid, sig in list(wave.signatures.items()):
        wave.signatures[keyid] = Signature(keyid, sig.signature + "z")
    with pytest.raises(InputError, match=r"fraction salt of wave\.w1"):
        signature_salt(top, "wave.w1", wave)
