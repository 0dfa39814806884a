"""Key files, passphrases and signers.

A key pair on disk is two files:

* ``NAME.pub`` -- the public key as TUF key JSON plus its ``keyid`` and the
  key's name (``x-tufwaves-name``); optionally ``x-tufwaves-private-key-uri``
  naming a securesystemslib signer (HSM, cloud KMS, ...) that holds the
  private half.
* ``NAME.key`` -- the private key, PKCS#8 PEM encrypted with the passphrase,
  mode 0600, created exclusively and never overwritten.

The passphrase comes from ``TUFWAVES_KEY_PASSPHRASE`` or an interactive prompt,
never from the command line, and never appears in a message.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    PrivateFormat,
    load_pem_private_key,
    load_pem_public_key,
)
from securesystemslib.signer import CryptoSigner, Key, Signer, SSlibKey

from tufwaves.errors import InputError, KeyError_, StorageError
from tufwaves.server.signers import signer_from_uri

__all__ = [
    "KEY_TYPES",
    "PASSPHRASE_ENV",
    "KeyRef",
    "generate_key",
    "load_key_ref",
    "load_public_key",
    "passphrase",
    "write_key_pair",
]

PASSPHRASE_ENV = "TUFWAVES_KEY_PASSPHRASE"  # noqa: S105 - a variable name
KEY_TYPES = ("ed25519", "ecdsa", "rsa")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_URI_RE = re.compile(r"^[a-z][a-z0-9+.-]*:")
_MAX_KEY_FILE = 64 * 1024


def passphrase(purpose: str, *, confirm: bool = False) -> bytes:
    """The key passphrase from ``TUFWAVES_KEY_PASSPHRASE`` or a prompt."""
    env = os.environ.get(PASSPHRASE_ENV)
    if env is not None:
        if not env:
            raise KeyError_(f"{PASSPHRASE_ENV} is set but empty; set a passphrase")
        return env.encode()
    if not sys.stdin.isatty():
        raise KeyError_(
            f"a passphrase is needed for {purpose}: set {PASSPHRASE_ENV} "
            "or run the command at a terminal"
        )
    first = getpass.getpass(f"Passphrase for {purpose}: ")
    if confirm and getpass.getpass("Repeat passphrase: ") != first:
        raise KeyError_("the passphrases did not match; nothing was written")
    if not first:
        raise KeyError_("an empty passphrase is not allowed")
    return first.encode()


def generate_key(key_type: str = "ed25519") -> CryptoSigner:
    if key_type == "ed25519":
        return CryptoSigner.generate_ed25519()
    if key_type == "ecdsa":
        return CryptoSigner.generate_ecdsa()
    if key_type == "rsa":
        return CryptoSigner.generate_rsa()
    raise InputError(f"unknown key type {key_type!r}; use one of {', '.join(KEY_TYPES)}")


def _write_exclusive(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise StorageError(
            f"{path} already exists; key files are never overwritten "
            "(choose another name or directory)"
        ) from None
    except OSError as e:
        raise StorageError(f"cannot create {path}: {e.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def public_key_json(name: str, key: Key, uri: str | None = None) -> bytes:
    data: dict[str, Any] = {
        "keyid": key.keyid,
        **key.to_dict(),
        "x-tufwaves-name": name,
    }
    if uri:
        data["x-tufwaves-private-key-uri"] = uri
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def write_key_pair(
    name: str, directory: Path, signer: CryptoSigner, secret: bytes
) -> tuple[Path, Path]:
    """Write ``NAME.pub`` and the encrypted ``NAME.key``; never overwrite."""
    if not _NAME_RE.match(name):
        raise InputError(f"bad key name {name!r}: use 1-64 letters, digits, '_', '.', '-'")
    directory.mkdir(parents=True, exist_ok=True)
    pub, priv = directory / f"{name}.pub", directory / f"{name}.key"
    for path in (pub, priv):
        if path.exists():
            raise StorageError(f"{path} already exists; key files are never overwritten")
    pem = signer._private_key.private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(secret)
    )
    _write_exclusive(priv, pem, 0o600)
    _write_exclusive(pub, public_key_json(name, signer.public_key), 0o644)
    return pub, priv


@dataclass(frozen=True)
class KeyRef:
    """A key named on the command line: its public half and maybe a signer.

    ``signer`` is None for a ``.pub`` file whose signature is collected later
    (by a ceremony). The repr never shows key material.
    """

    name: str
    key: Key
    signer: Signer | None = None

    def __repr__(self) -> str:
        return f"KeyRef(name={self.name!r}, keyid={self.key.keyid[:12]}...)"


def _read_small(path: Path) -> bytes:
    try:
        if path.stat().st_size > _MAX_KEY_FILE:
            raise InputError(f"{path} is too large to be a key file")
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyError_(f"key file {path} does not exist") from None
    except OSError as e:
        raise KeyError_(f"cannot read key file {path}: {e.strerror}") from None


def load_public_key(path: Path) -> tuple[str, Key, str | None]:
    """Read a ``.pub`` file: (name, key, private key URI or None)."""
    raw = _read_small(path)
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        data = dict(data)
        keyid = data.pop("keyid")
        name = data.pop("x-tufwaves-name", path.stem)
        uri = data.pop("x-tufwaves-private-key-uri", None)
        key = SSlibKey.from_dict(keyid, data)
        expected = SSlibKey.from_crypto(key._crypto_key()).keyid
    except Exception as e:
        raise InputError(f"{path} is not a tufwaves public key file ({e})") from None
    if keyid != expected:
        raise InputError(f"{path}: keyid does not match the key (expected {expected})")
    if not isinstance(name, str) or (uri is not None and not isinstance(uri, str)):
        raise InputError(f"{path}: x-tufwaves-name / private key URI must be strings")
    return name, key, uri


def _signer_from_pem(path: Path, pem: bytes) -> KeyRef:
    secret = passphrase(f"key {path.name}")
    try:
        private = load_pem_private_key(pem, secret)
    except (ValueError, TypeError):
        raise KeyError_(
            f"cannot decrypt {path}: wrong passphrase or not an encrypted PKCS#8 key"
        ) from None
    public = SSlibKey.from_crypto(private.public_key())
    pub_path = path.with_suffix(".pub")
    name = path.stem
    if pub_path.exists():
        name, key, _ = load_public_key(pub_path)
        if key.keyid != public.keyid:
            raise KeyError_(f"{path} and {pub_path} are not the same key pair")
    return KeyRef(name, public, CryptoSigner(private, public))


def load_key_ref(spec: str) -> KeyRef:
    """Resolve a KEY argument.

    * ``PATH.key``: an encrypted private key file (public half from ``PATH.pub``
      if present), asks for the passphrase;
    * ``PATH.pub``: a public key; a signer if it names a private-key URI;
    * ``SCHEME:...``: a securesystemslib private-key URI; ``file2:`` URIs need
      no more, other schemes need a ``.pub`` that names them
      (``tufwaves keys import-uri``).
    """
    if _URI_RE.match(spec) and not Path(spec).exists():
        if spec.startswith("file2:"):
            path = Path(spec[len("file2:") :])
            pem = _read_small(path)
            try:
                private = load_pem_private_key(pem, None)
            except (ValueError, TypeError):
                raise KeyError_(
                    f"{path} is not an unencrypted PKCS#8 PEM key "
                    "(use the .key file for encrypted keys)"
                ) from None
            public = SSlibKey.from_crypto(private.public_key())
            return KeyRef(path.stem, public, CryptoSigner(private, public))
        raise InputError(
            f"private key URI {spec.split(':', 1)[0]}:... needs its public key: "
            "record it with 'tufwaves keys import-uri NAME --uri URI --public-key PEM' "
            "and pass the .pub file"
        )
    path = Path(spec)
    if path.suffix == ".pub":
        name, key, uri = load_public_key(path)
        if uri is None:
            return KeyRef(name, key)
        return KeyRef(name, key, signer_from_uri(uri, key, f"key {path.name}"))
    pem = _read_small(path)
    if b"PRIVATE KEY" not in pem:
        raise InputError(f"{path} is neither a .pub file nor a PEM private key")
    return _signer_from_pem(path, pem)


def import_uri_key(name: str, directory: Path, uri: str, public_pem: bytes) -> Path:
    """Write ``NAME.pub`` for a key whose private half lives behind ``uri``."""
    if not _NAME_RE.match(name):
        raise InputError(f"bad key name {name!r}")
    try:
        public = SSlibKey.from_crypto(load_pem_public_key(public_pem))
    except ValueError:
        raise InputError("the public key is not a PEM public key") from None
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.pub"
    _write_exclusive(path, public_key_json(name, public, uri), 0o644)
    return path
