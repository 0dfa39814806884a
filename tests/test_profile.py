"""The writer and the verifier agree on the metadata profile.

For every candidate value of a profile field: if the server's builders
(``tufwaves.server.metadata``) accept it, the verifier accepts what they
wrote; and if the verifier refuses the value (put straight into otherwise
valid metadata), the builders refuse it too.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import DelegatedRole, Delegations, Metadata, Targets

from tests.conftest import RepoFactory
from tufwaves.cli import main
from tufwaves.device._rules import VerifiedMetadata, VerifiedWave, decide_rules
from tufwaves.device.bundle import BundleError, parse_role_name
from tufwaves.device.membership import ListMembership
from tufwaves.device.profile import MAX_INT, MAX_VERSION, PPM, canonical_uuid
from tufwaves.errors import InputError
from tufwaves.server.metadata import (
    Policy,
    WaveInfo,
    artifact_target,
    build_ripple,
    build_rollout,
    build_wave,
    parse_version,
    rollout_info,
    wave_info,
)
from tufwaves.server.waves import init_wave
from tufwaves.verify import Decision, DeviceIdentity, Reason

EXPIRES = datetime(2099, 1, 1, tzinfo=UTC)
ROLLOUT_KEY = CryptoSigner.generate_ed25519().public_key
UUID = "0f0e0d0c-0b0a-4908-8706-050403020100"
SALT = "ab" * 32
NAME, TAG, HW, VERSION = "w1", "prod", "hw-1", 7
INVALID = (Reason.WAVE_INVALID, Reason.RIPPLE_INVALID)

# Candidate values: valid ones, near misses and junk of every JSON-ish type.
_junk = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=1),
)
_edge_ints = st.sampled_from(
    [-(2**64), -(2**63), -1, 0, 1, 10**18 - 1, 10**18, MAX_INT, MAX_INT + 1, 2**64 - 1, 2**64]
)
ints = st.one_of(st.integers(), st.integers(-5, 5), _edge_ints)
names = st.one_of(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,66}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,66}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,8}", fullmatch=True).map(lambda s: s + "\n"),
    st.text(max_size=70),
    st.sampled_from(["w3\n", "w3\r\n", "\nw3", "w 3", "w.3", "w/3", "-w", "", "a" * 64, "a" * 65]),
)
labels = names
version_texts = st.one_of(
    ints.map(str),
    st.from_regex(r"[0-9]{1,21}", fullmatch=True),
    st.sampled_from(["7\n", " 7", "+7", "07", "7.0", "1_000", "\u0667", "0x10"]),
    st.text(max_size=25),
)


def _refuses(fn: Callable[[], object]) -> bool:
    try:
        fn()
    except InputError:
        return True
    return False


# --------------------------------------------------------------------------
# A writer: the server's builders.


def write(
    *,
    name: Any = NAME,
    tag: Any = TAG,
    hw: Any = HW,
    version: Any = VERSION,
    policy: Callable[[], Policy] = Policy,
    ripples: Any = 1,
) -> tuple[Metadata[Targets], Metadata[Targets], Metadata[Targets]]:
    """wave, rollout and ripple 1 as the builders write them (InputError if refused)."""
    info = WaveInfo(name, tag, version, policy())
    target = artifact_target(
        f"waves/{name}/{hw}/fw.img", b"fw", hardware_ids=[hw], tag=tag, version=version, name="fw"
    )
    wave = build_wave(info, [target], [ROLLOUT_KEY], 1, EXPIRES)
    keys = {ROLLOUT_KEY.keyid: ROLLOUT_KEY}
    rollout = build_rollout(name, "active", ripples, list(keys), keys, 1, 1, EXPIRES)
    members = ListMembership.from_uuids([UUID]).to_dict()
    ripple = build_ripple(name, 1, members, EXPIRES)
    return wave, rollout, ripple


# --------------------------------------------------------------------------
# The verifier: its decision rules over (already signature-checked) roles.


def decide(
    wave: Targets,
    rollout: Targets,
    ripple: Targets | None,
    *,
    name: str = NAME,
    device: DeviceIdentity | None = None,
    salt: bytes | None = b"\x5a" * 32,
) -> Decision:
    top = Targets(
        version=1,
        expires=EXPIRES,
        targets={},
        delegations=Delegations(
            keys={ROLLOUT_KEY.keyid: ROLLOUT_KEY},
            roles={
                f"wave.{name}": DelegatedRole(
                    f"wave.{name}",
                    [ROLLOUT_KEY.keyid],
                    1,
                    True,
                    paths=[f"waves/{name}/*", f"waves/{name}/*/*"],
                )
            },
        ),
    )
    ripples = ((1, ripple),) if ripple is not None else ()
    # Signatures are not checked here; the salt they would derive is a constant.
    verified = VerifiedWave(name, wave, rollout, ripples, signature_salt=salt)
    md = VerifiedMetadata(top, (verified,), ())
    return decide_rules(md, device or DeviceIdentity(UUID, HW, TAG, VERSION - 1))


def verifier_accepts(
    *,
    wave: Mapping[str, Any] | None = None,
    custom: Mapping[str, Any] | None = None,
    rollout: Mapping[str, Any] | None = None,
) -> bool:
    """Whether the verifier accepts valid metadata with these fields replaced."""
    w, r, rip = (md.signed for md in write())
    w, r = copy.deepcopy(w), copy.deepcopy(r)
    # A re-signed version, which may carry a fraction salt: the builders write
    # one for re-signing, and version 1 refusing it is tested with the denials.
    w.version = 2
    if wave:
        w.unrecognized_fields["x-tufwaves-wave"].update(wave)
    if custom:
        for t in w.targets.values():
            t.unrecognized_fields["custom"].update(custom)
    if rollout:
        r.unrecognized_fields["x-tufwaves-rollout"].update(rollout)
        count = rollout.get("ripples")
        if isinstance(count, int) and not isinstance(count, bool) and 0 <= count <= 3:
            r.delegations = _ripple_delegations(count)
    return decide(w, r, rip).reason not in INVALID


def _ripple_delegations(count: int) -> Delegations | None:
    if count == 0:
        return None
    keys = {ROLLOUT_KEY.keyid: ROLLOUT_KEY}
    roles = {
        f"ripple.{NAME}.{k}": DelegatedRole(
            f"ripple.{NAME}.{k}", [ROLLOUT_KEY.keyid], 1, True, paths=[]
        )
        for k in range(1, count + 1)
    }
    return Delegations(keys=keys, roles=roles)


def check_agreement(writer: Callable[[], Any], verifier: Callable[[], bool]) -> None:
    """writer accepts => its output verifies; verifier refuses => writer refuses."""
    try:
        written = writer()
    except InputError:
        return  # refused by the writer: nothing to check
    assert verifier(), "the verifier refuses a value the writer accepts"
    if written is not None:
        wave, rollout, ripple = written
        name = wave.signed.unrecognized_fields["x-tufwaves-wave"]["name"]
        count = rollout.signed.unrecognized_fields["x-tufwaves-rollout"]["ripples"]
        d = decide(wave.signed, rollout.signed, ripple.signed if count else None, name=name)
        assert d.reason not in INVALID, d.message


# --------------------------------------------------------------------------
# Properties, field by field.


@settings(max_examples=300, deadline=None)
@given(names)
def test_wave_names_agree(name: str) -> None:
    def verifier() -> bool:
        try:
            parse_role_name(f"wave.{name}")
            parse_role_name(f"rollout.{name}")
            parse_role_name(f"ripple.{name}.1")
        except BundleError:
            return False
        return True

    check_agreement(lambda: write(name=name), verifier)


@settings(max_examples=300, deadline=None)
@given(labels)
def test_tags_agree(tag: str) -> None:
    check_agreement(
        lambda: write(tag=tag),
        lambda: (
            verifier_accepts(wave={"tag": tag}, custom={"tags": [tag]})
            and not _refuses(lambda: DeviceIdentity(UUID, HW, tag, 0))
        ),
    )


@settings(max_examples=300, deadline=None)
@given(labels)
def test_hardware_ids_agree(hw: str) -> None:
    check_agreement(
        lambda: write(hw=hw),
        lambda: (
            verifier_accepts(custom={"hardwareIds": [hw]})
            and not _refuses(lambda: DeviceIdentity(UUID, hw, TAG, 0))
        ),
    )


@settings(max_examples=300, deadline=None)
@given(st.one_of(ints, _junk, version_texts))
def test_versions_agree(version: object) -> None:
    """Wave, artifact and installed versions: one bound, 0..2**63-1."""
    text = str(version) if isinstance(version, int) else version
    check_agreement(
        lambda: write(version=version),
        lambda: verifier_accepts(wave={"version": text}, custom={"version": text}),
    )
    device_ok = not _refuses(lambda: DeviceIdentity(UUID, HW, TAG, version))  # type: ignore[arg-type]
    writer_ok = not _refuses(lambda: WaveInfo(NAME, TAG, version, Policy()))  # type: ignore[arg-type]
    assert device_ok == writer_ok


@settings(max_examples=300, deadline=None)
@given(st.one_of(version_texts, _junk))
def test_version_texts_agree(text: object) -> None:
    """The server's parser of stored versions and the verifier's agree exactly."""
    server_ok = not _refuses(lambda: parse_version(text))
    assert server_ok == verifier_accepts(wave={"version": text}, custom={"version": text})
    if server_ok:
        assert 0 <= parse_version(text) <= MAX_VERSION


@settings(max_examples=300, deadline=None)
@given(st.one_of(ints, _junk, st.text(max_size=5)))
def test_ripple_counts_agree(count: object) -> None:
    # A builder really delegates ``count`` ripples: only small valid counts
    # are built (every invalid count is refused before anything is built).
    if isinstance(count, int) and not isinstance(count, bool) and 3 < count <= MAX_INT:
        return

    def writer() -> Any:
        return write(ripples=count)

    check_agreement(writer, lambda: verifier_accepts(rollout={"ripples": count}))
    raw = {"wave": NAME, "state": "active", "ripples": count}
    _, r, _ = write()
    r.signed.unrecognized_fields["x-tufwaves-rollout"] = raw
    if not verifier_accepts(rollout={"ripples": count}):
        assert _refuses(lambda: rollout_info(r))


@pytest.mark.parametrize("count", [True, False, -1, 2**63, 1.0, "1", None])
def test_bad_ripple_counts_are_refused_by_both(count: object) -> None:
    keys = {ROLLOUT_KEY.keyid: ROLLOUT_KEY}
    with pytest.raises(InputError):
        build_rollout(NAME, "active", count, list(keys), keys, 1, 1, EXPIRES)  # type: ignore[arg-type]
    assert not verifier_accepts(rollout={"ripples": count})


@settings(max_examples=300, deadline=None)
@given(
    size=st.one_of(ints, _junk),
    online=st.one_of(st.booleans(), _junk, st.integers(0, 1)),
    salt=st.one_of(st.none(), st.just(SALT), st.text(max_size=65), st.just(SALT.upper()), _junk),
    cap=st.one_of(ints, st.integers(0, PPM + 1), st.just(PPM), _junk),
)
def test_policies_agree(size: Any, online: Any, salt: Any, cap: Any) -> None:
    policy = {
        "max_ripple_size": size,
        "online_complete": online,
        "fraction_salt": salt,
        "max_fraction_ppm": cap,
    }
    # Policy(max_fraction_ppm=None) means the default cap, which it writes.
    written = dict(policy, max_fraction_ppm=(PPM if online is True else 0) if cap is None else cap)
    check_agreement(
        lambda: write(policy=lambda: Policy(size, online, salt, cap)),
        lambda: verifier_accepts(wave={"policy": written}),
    )
    # The server's parser of stored policies agrees with the verifier exactly.
    assert _refuses(lambda: Policy.from_dict(policy)) != verifier_accepts(wave={"policy": policy})


@given(st.one_of(st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()), st.text()))
def test_one_uuid_rule(text: str) -> None:
    from tufwaves.device.membership import canonical_uuid as device_side
    from tufwaves.server.inventory import canonical_uuid as server_side

    assert device_side is canonical_uuid is server_side
    if not _refuses(lambda: canonical_uuid(text)):
        assert canonical_uuid(text) == text.lower()
        assert DeviceIdentity(text, HW, TAG, 0).uuid == text.lower()


def test_written_metadata_parses_back() -> None:
    wave, rollout, _ = write(version=MAX_VERSION)
    info = wave_info(wave)
    assert (info.name, info.tag, info.version) == (NAME, TAG, MAX_VERSION)
    assert rollout_info(rollout).ripples == 1
    assert decide(wave.signed, rollout.signed, write()[2].signed).reason is Reason.ALLOWED_RIPPLE


# --------------------------------------------------------------------------
# A name with a trailing newline (once accepted by a ``^...$`` pattern).


@pytest.mark.parametrize("name", ["w3\n", "w3\r\n", "\nw3"])
def test_init_wave_refuses_a_name_with_a_newline(
    make_repo: RepoFactory, artifact: Path, name: str
) -> None:
    repo = make_repo()
    with pytest.raises(InputError, match="bad wave name"):
        init_wave(
            repo, name, 1, "prod", artifacts=[artifact], hardware_ids=["hw1"], expires=EXPIRES
        )
    assert not list(repo.metadata_dir.glob("*wave*"))


def test_cli_waves_init_refuses_a_name_with_a_newline(
    make_repo: RepoFactory, artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo()
    argv = ["waves", "init", "w3\n", "1", "prod", "--repo", str(repo.path)]
    argv += ["--artifact", str(artifact), "--hardware-id", "hw1"]
    assert main(argv) == 2
    assert "bad wave name 'w3\\n'" in capsys.readouterr().err
    assert not list(repo.metadata_dir.glob("*wave*"))


@pytest.mark.parametrize("tag", ["prod\n", "prod "])
def test_init_wave_refuses_a_tag_with_trailing_space(
    make_repo: RepoFactory, artifact: Path, tag: str
) -> None:
    with pytest.raises(InputError, match="bad tag"):
        init_wave(
            make_repo(), "w1", 1, tag, artifacts=[artifact], hardware_ids=["hw1"], expires=EXPIRES
        )


@pytest.mark.parametrize("text", ["1\n", "01", "-1", "9223372036854775808", "x"])
def test_cli_waves_init_validates_the_version_text(
    make_repo: RepoFactory, artifact: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    repo = make_repo()
    argv = ["waves", "init", "w1", text, "prod", "--repo", str(repo.path)]
    argv += ["--artifact", str(artifact), "--hardware-id", "hw1"]
    assert main(argv) == 2
    assert "bad version" in capsys.readouterr().err


def test_cli_waves_init_accepts_the_largest_version(
    make_repo: RepoFactory, artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo()
    argv = ["waves", "init", "w1", str(MAX_VERSION), "prod", "--repo", str(repo.path)]
    argv += ["--artifact", str(artifact), "--hardware-id", "hw1", "--dry-run"]
    assert main(argv) == 0, capsys.readouterr().err
