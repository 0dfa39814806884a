"""Signers behind a private-key URI: hardware tokens (HSM, smart card, YubiKey PIV), KMS.

securesystemslib does the signing (``Signer.from_priv_key_uri``); this module
supplies what it asks for and turns its failures into tufwaves errors:

* the secret a signer asks for (an HSM's PIN) comes from ``TUFWAVES_HSM_PIN``
  or a terminal prompt, never from the command line, and never appears in a
  message; it is asked once per signer and reused for each role it signs;
* ``import_hsm_key`` reads the public half of a key on a PKCS#11 token (the
  module named by ``PYKCS11LIB``) and the ``hsm:`` URI that signs with it.

HSM keys must be ECDSA P-256 or P-384 (securesystemslib's ``HSMSigner``).
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from securesystemslib.exceptions import UnsupportedLibraryError
from securesystemslib.signer import HSMSigner, Key, SecretsHandler, Signer, SSlibKey

from tufwaves.errors import KeyUseError, TufwavesError

__all__ = [
    "HSM_PIN_ENV",
    "PKCS11_MODULE_ENV",
    "import_hsm_key",
    "public_pem",
    "secrets_handler",
    "signer_from_uri",
    "signing_failed",
]

HSM_PIN_ENV = "TUFWAVES_HSM_PIN"
PKCS11_MODULE_ENV = "PYKCS11LIB"  # securesystemslib's name for the PKCS#11 module path
_INSTALL_HINT = "install the hsm extra: pip install 'tufwaves[hsm]'"


def _ask(secret: str, purpose: str) -> str:
    env = os.environ.get(HSM_PIN_ENV)
    if env is not None:
        if not env:
            raise KeyUseError(f"{HSM_PIN_ENV} is set but empty; set the {secret}")
        return env
    if not sys.stdin.isatty():
        raise KeyUseError(
            f"the {secret} for {purpose} is needed: set {HSM_PIN_ENV} "
            "or run the command at a terminal"
        )
    value = getpass.getpass(f"{secret.upper()} for {purpose}: ")
    if not value:
        raise KeyUseError(f"an empty {secret} is not allowed")
    return value


def secrets_handler(purpose: str) -> SecretsHandler:
    """A securesystemslib secrets handler that asks once, then reuses the answer."""
    answers: dict[str, str] = {}

    def handler(secret: str) -> str:
        if secret not in answers:
            answers[secret] = _ask(secret, purpose)
        return answers[secret]

    return handler


def _check_pkcs11_module() -> None:
    module = os.environ.get(PKCS11_MODULE_ENV)
    if not module:
        raise KeyUseError(
            f"set {PKCS11_MODULE_ENV} to the token's PKCS#11 module "
            "(e.g. /usr/lib/softhsm/libsofthsm2.so or libykcs11.so)"
        )
    if not Path(module).is_file():
        raise KeyUseError(f"{PKCS11_MODULE_ENV}={module} is not a file")


def signer_from_uri(uri: str, key: Key, purpose: str) -> Signer:
    """The securesystemslib signer behind ``uri``, with a secrets handler."""
    if urlparse(uri).scheme == HSMSigner.SCHEME:
        _check_pkcs11_module()
    try:
        return Signer.from_priv_key_uri(uri, key, secrets_handler(purpose))
    except UnsupportedLibraryError:
        raise KeyUseError(f"cannot load the signer of {purpose}: {_INSTALL_HINT}") from None
    except Exception as e:
        raise KeyUseError(f"cannot load the signer of {purpose}: {type(e).__name__}") from None


def signing_failed(who: str, role: str, error: BaseException) -> TufwavesError:
    """The error to raise when a signer failed to sign ``role``.

    A tufwaves error from the secrets handler is passed through; a token's
    refusal is named by its PKCS#11 exception (``PinIncorrect``, ``PinLocked``,
    ``TokenNotPresent``...), a ``ValueError`` (key or token not found) by its text.
    """
    if isinstance(error, TufwavesError):
        return error
    detail = type(error).__name__
    if isinstance(error, ValueError) and str(error):
        detail = str(error)
    hint = f" (check {HSM_PIN_ENV})" if detail.startswith("Pin") else ""
    return KeyUseError(f"{who} could not sign {role}: {detail}{hint}")


def import_hsm_key(hsm_keyid: int | None, token_label: str | None) -> tuple[str, SSlibKey]:
    """The ``hsm:`` URI and public key of a key pair on a PKCS#11 token.

    ``hsm_keyid`` is the key's CKA_ID as an integer (default 2: YubiKey PIV
    slot 9c); ``token_label`` picks the token when more than one is present.
    The PIN is asked only if the public key is not readable without it.
    """
    _check_pkcs11_module()
    try:
        return HSMSigner.import_(hsm_keyid, token_label, secrets_handler("the token"))
    except UnsupportedLibraryError:
        raise KeyUseError(f"cannot use PKCS#11: {_INSTALL_HINT}") from None
    except TufwavesError:
        raise
    except ValueError as e:
        raise KeyUseError(f"cannot import the key from the token: {e}") from None
    except Exception as e:  # PKCS#11 errors: PinIncorrect, TokenNotPresent, ...
        raise KeyUseError(f"cannot import the key from the token: {type(e).__name__}") from None


def public_pem(key: SSlibKey) -> bytes:
    """The key as a PEM SubjectPublicKeyInfo."""
    return key._crypto_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
