"""The fraction salt of a wave, derived from the wave role's offline signatures.

``specs/membership.md`` section 6.1 is the normative definition. The salt of a
wave whose ``policy.fraction_salt`` is null is

    SHA-256("tufwaves-fraction-salt-v1" || 0x00 ||
            for each of the first THRESHOLD valid signatures, in key id order:
                u32(len(keyid)) || keyid || u32(len(sig)) || sig)

where the signatures are those of the wave role by the keys of its delegation
(the offline targets keys) and ``sig`` is the raw signature bytes. Nobody who
lacks a threshold of those keys can compute it before the signers sign, so
whoever prepares the ceremony cannot grind it. The device verifier and the
server both call :func:`signature_salt`, so they agree on fraction members.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from tuf.api.metadata import Metadata, Root, Targets

from tufwaves.errors import InputError

__all__ = ["SALT_DOMAIN", "signature_salt"]

SALT_DOMAIN: Final = b"tufwaves-fraction-salt-v1\x00"
"""Domain-separation prefix of the salt derivation."""


def _field(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def signature_salt(delegator: Targets | Root, role: str, md: Metadata[Any]) -> bytes:
    """The 32-byte salt derived from ``md``'s signatures as ``delegator`` delegates ``role``.

    Only signatures that verify, by keys of the delegation, count; of those the
    first ``threshold`` in ascending key id order are hashed. Extra, unknown
    or invalid signatures therefore change nothing.

    Raises:
        InputError: fewer than ``threshold`` valid signatures, no such
            delegation, or a signature that is not hex.
    """
    try:
        result = delegator.get_verification_result(role, md.signed_bytes, md.signatures)
        chosen = sorted(result.signed)[: result.threshold]
        parts = [
            _field(k.encode("utf-8")) + _field(bytes.fromhex(md.signatures[k].signature))
            for k in chosen
        ]
    except (ValueError, UnicodeError) as e:
        raise InputError(f"cannot derive the fraction salt of {role}: {e}") from None
    if not result.verified:
        raise InputError(
            f"cannot derive the fraction salt of {role}: it has {len(result.signed)} valid "
            f"signatures of the {result.threshold} its threshold needs"
        )
    return hashlib.sha256(SALT_DOMAIN + b"".join(parts)).digest()
