"""Property tests: wave metadata round-trips exactly; any signed change breaks it."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Targets

from tufwaves.errors import InputError
from tufwaves.server.metadata import (
    Policy,
    WaveInfo,
    artifact_target,
    build_wave,
    check_wave_name,
    parse_version,
    wave_info,
)

SIGNER = CryptoSigner.generate_ed25519()
ROLLOUT = CryptoSigner.generate_ed25519().public_key
EXPIRES = datetime(2099, 1, 1, tzinfo=UTC)

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,20}", fullmatch=True)
labels = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,20}", fullmatch=True)
versions = st.integers(min_value=0, max_value=10**18 - 1)


@st.composite
def waves(draw: st.DrawFn) -> Metadata[Targets]:
    name = draw(names)
    tag = draw(labels)
    version = draw(versions)
    policy = Policy(
        max_ripple_size=draw(st.none() | st.integers(1, 10**7)),
        online_complete=draw(st.booleans()),
    )
    hws = draw(st.lists(labels, min_size=1, max_size=3, unique=True))
    data = draw(st.binary(max_size=64))
    targets = [
        artifact_target(
            f"waves/{name}/{hw}/a.img",
            data,
            hardware_ids=[hw],
            tag=tag,
            version=version,
            name="a.img",
        )
        for hw in hws
    ]
    md = build_wave(WaveInfo(name, tag, version, policy), targets, [ROLLOUT], 1, EXPIRES)
    md.sign(SIGNER)
    return md


@settings(max_examples=60, deadline=None)
@given(waves())
def test_round_trip_is_exact(md: Metadata[Targets]) -> None:
    data = md.to_bytes()
    again = Metadata[Targets].from_bytes(data)
    assert again.to_bytes() == data
    assert again.signed_bytes == md.signed_bytes
    assert wave_info(again) == wave_info(md)
    SIGNER.public_key.verify_signature(
        again.signatures[SIGNER.public_key.keyid], again.signed_bytes
    )


def _paths(obj: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.extend(_paths(v, (*prefix, i)))
    else:
        out.append(prefix)
    return out


def _mutate(value: object) -> object:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if value is None:
        return 1
    assert isinstance(value, str)
    return value + "x"


@settings(max_examples=80, deadline=None)
@given(waves(), st.data())
def test_any_signed_change_breaks_verification(md: Metadata[Targets], data: st.DataObject) -> None:
    doc = json.loads(md.to_bytes())
    leaf = data.draw(st.sampled_from(_paths(doc["signed"])))
    changed = copy.deepcopy(doc)
    node = changed["signed"]
    for part in leaf[:-1]:
        node = node[part]
    node[leaf[-1]] = _mutate(node[leaf[-1]])
    try:
        tampered = Metadata[Targets].from_bytes(json.dumps(changed).encode())
    except Exception:
        return
    sig = tampered.signatures[SIGNER.public_key.keyid]
    with pytest.raises(Exception):  # noqa: B017 - any verification failure
        SIGNER.public_key.verify_signature(sig, tampered.signed_bytes)


@given(st.text(max_size=80))
def test_wave_names_and_versions_never_crash(text: str) -> None:
    for check in (check_wave_name, parse_version):
        try:
            check(text)
        except InputError as e:
            assert repr(text)[:10] in str(e) or text in str(e) or str(e)
