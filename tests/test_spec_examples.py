"""The worked examples in specs/examples/ are current and verify."""

from __future__ import annotations

import pytest
from tuf.api.metadata import Metadata

from tests.spec_examples import OUT, build_examples

EXAMPLES = build_examples()


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_matches_generator(name: str) -> None:
    assert (OUT / name).read_bytes() == EXAMPLES[name], (
        "regenerate with 'python -m tests.spec_examples'"
    )
    Metadata.from_bytes(EXAMPLES[name])


def test_examples_form_a_verified_chain() -> None:
    md = {name: Metadata.from_bytes(data) for name, data in EXAMPLES.items()}
    root = md["1.root.json"].signed
    root.verify_delegate("root", md["1.root.json"].signed_bytes, md["1.root.json"].signatures)
    for parent, role, child in [
        ("1.root.json", "targets", "2.targets.json"),
        ("1.root.json", "snapshot", "5.snapshot.json"),
        ("1.root.json", "timestamp", "timestamp.json"),
        ("2.targets.json", "wave.spring-fix", "1.wave.spring-fix.json"),
        ("1.wave.spring-fix.json", "rollout.spring-fix", "4.rollout.spring-fix.json"),
        *[
            ("4.rollout.spring-fix.json", f"ripple.spring-fix.{k}", f"1.ripple.spring-fix.{k}.json")
            for k in (1, 2, 3)
        ],
    ]:
        md[parent].signed.verify_delegate(role, md[child].signed_bytes, md[child].signatures)


def test_example_fraction_salt_is_derived_from_the_signatures() -> None:
    """The example wave carries no salt; specs/membership.md 6.1 gives the derived value."""
    from pathlib import Path

    from tufwaves.device.salt import signature_salt

    wave = Metadata.from_bytes(EXAMPLES["1.wave.spring-fix.json"])
    top = Metadata.from_bytes(EXAMPLES["2.targets.json"]).signed
    assert wave.signed.unrecognized_fields["x-tufwaves-wave"]["policy"]["fraction_salt"] is None
    salt = signature_salt(top, "wave.spring-fix", wave).hex()
    assert salt == "8cfaeeae9174ef63758fdcc28dedeb77410b75fec6cdff8a71dff4c582b28428"
    spec = Path(__file__).resolve().parent.parent / "specs" / "membership.md"
    assert salt in spec.read_text(encoding="utf-8")
