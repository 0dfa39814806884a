"""Key files, passphrases and signers.

A key pair on disk is two files:

* ``NAME.pub`` -- the public key as TUF key JSON plus its ``keyid`` and the
  key's name (``x-tufwaves-name``); optionally ``x-tufwaves-private-key-uri``
  naming a securesystemslib signer (HSM, cloud KMS, ...) that holds the
  private half.
* ``NAME.key`` -- the private key, PKCS#8 PEM encrypted with the passphrase,
  mode 0600, created exclusively and never overwritten.

A library caller passes the passphrase in (``passphrase=`` bytes, or a
callable asked with what the passphrase is for); left out, it comes from
``TUFWAVES_KEY_PASSPHRASE`` or an interactive prompt (what the command line
does), never from the command line, and never appears in a message. The
repository's online keys (snapshot, timestamp, rollout) use
``TUFWAVES_ONLINE_KEY_PASSPHRASE`` when it is set, so a cron job that
refreshes the timestamp never holds the offline keys' passphrase; without it
they fall back to ``TUFWAVES_KEY_PASSPHRASE``. An online key whose ``.pub``
names a private-key URI (KMS, HSM, ``file2:``) needs no passphrase at all.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import sys
from collections.abc import Callable
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

from tufwaves._files import PRIVATE_MODE, PUBLIC_MODE
from tufwaves.errors import InputError, KeyUseError, StorageError
from tufwaves.server.signers import signer_from_uri

__all__ = [
    "KEY_TYPES",
    "ONLINE_PASSPHRASE_ENV",
    "PASSPHRASE_ENV",
    "KeyRef",
    "Passphrase",
    "generate_key",
    "load_key_ref",
    "load_public_key",
    "passphrase",
    "resolve_passphrase",
    "write_key_pair",
]

PASSPHRASE_ENV = "TUFWAVES_KEY_PASSPHRASE"  # noqa: S105 - a variable name
ONLINE_PASSPHRASE_ENV = "TUFWAVES_ONLINE_KEY_PASSPHRASE"  # noqa: S105 - a variable name
KEY_TYPES = ("ed25519", "ecdsa", "rsa")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_URI_RE = re.compile(r"^[a-z][a-z0-9+.-]*:")
_MAX_KEY_FILE = 64 * 1024

Passphrase = bytes | Callable[[str], bytes] | None
"""Where a key passphrase comes from: the bytes themselves, a callable asked
with what it is for (e.g. ``"key alice.key"``) that returns them, or ``None``
for ``TUFWAVES_KEY_PASSPHRASE`` or a terminal prompt (the command line's way)."""


def passphrase(purpose: str, *, confirm: bool = False, online: bool = False) -> bytes:
    """The key passphrase from ``TUFWAVES_KEY_PASSPHRASE`` or a terminal prompt.

    Args:
        purpose: What the passphrase is for, shown in the prompt.
        confirm: Ask twice at a prompt (for keys about to be created).
        online: For the repository's online keys: their own variable
            ``TUFWAVES_ONLINE_KEY_PASSPHRASE`` first, then ``TUFWAVES_KEY_PASSPHRASE``.

    Returns:
        The passphrase as bytes.

    Raises:
        KeyUseError: The variable is set but empty, there is no terminal to ask
            at, the two entries differ, or the entry is empty.
    """
    names = (ONLINE_PASSPHRASE_ENV, PASSPHRASE_ENV) if online else (PASSPHRASE_ENV,)
    for name in names:
        env = os.environ.get(name)
        if env is not None:
            if not env:
                raise KeyUseError(f"{name} is set but empty; set a passphrase")
            return env.encode()
    if not sys.stdin.isatty():
        raise KeyUseError(
            f"a passphrase is needed for {purpose}: set {' or '.join(names)} "
            "or run the command at a terminal"
        )
    first = getpass.getpass(f"Passphrase for {purpose}: ")
    if confirm and getpass.getpass("Repeat passphrase: ") != first:
        raise KeyUseError("the passphrases did not match; nothing was written")
    if not first:
        raise KeyUseError("an empty passphrase is not allowed")
    return first.encode()


def resolve_passphrase(
    source: Passphrase, purpose: str, *, confirm: bool = False, online: bool = False
) -> bytes:
    """The passphrase a caller gave, or else the command line's (:func:`passphrase`).

    Args:
        source: Bytes, a callable given ``purpose`` that returns bytes, or
            ``None`` for ``TUFWAVES_KEY_PASSPHRASE`` or a terminal prompt.
        purpose: What the passphrase is for (for the callable or the prompt).
        confirm: Ask twice at a prompt (for keys about to be created).
        online: With no ``source``: the online keys' variable first (see
            :func:`passphrase`).

    Returns:
        The passphrase as bytes.

    Raises:
        KeyUseError: The passphrase is empty or not bytes, or none can be had.
    """
    if source is None:
        return passphrase(purpose, confirm=confirm, online=online)
    secret = source(purpose) if callable(source) else source
    if not isinstance(secret, bytes) or not secret:
        raise KeyUseError(f"the passphrase given for {purpose} must be non-empty bytes")
    return secret


def generate_key(key_type: str = "ed25519") -> CryptoSigner:
    """A new private key in memory, as a securesystemslib signer.

    Args:
        key_type: ``"ed25519"`` (default), ``"ecdsa"`` (P-256) or ``"rsa"``.

    Returns:
        A ``CryptoSigner``; its ``public_key`` is the TUF key. Save it with
        :func:`write_key_pair` or use it directly with :meth:`KeyRef.from_signer`.

    Raises:
        InputError: Unknown key type.
    """
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
    """Write ``NAME.pub`` and ``NAME.key`` (encrypted, mode 0600); never overwrite.

    Args:
        name: The key's name (1-64 of letters, digits, ``_.-``), also its file name.
        directory: Where to write the two files (created if missing).
        signer: The key, e.g. from :func:`generate_key`.
        secret: The passphrase that encrypts the private key.

    Returns:
        The paths of the ``.pub`` and the ``.key`` file.

    Raises:
        InputError: Bad key name.
        StorageError: A file exists already or cannot be written.
    """
    if not _NAME_RE.fullmatch(name):
        raise InputError(f"bad key name {name!r}: use 1-64 letters, digits, '_', '.', '-'")
    directory.mkdir(parents=True, exist_ok=True)
    pub, priv = directory / f"{name}.pub", directory / f"{name}.key"
    for path in (pub, priv):
        if path.exists():
            raise StorageError(f"{path} already exists; key files are never overwritten")
    pem = signer._private_key.private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(secret)
    )
    _write_exclusive(priv, pem, PRIVATE_MODE)
    _write_exclusive(pub, public_key_json(name, signer.public_key), PUBLIC_MODE)
    return pub, priv


@dataclass(frozen=True)
class KeyRef:
    """A key as the server API takes it: its public half and maybe a signer.

    Get one from a key file or URI with :func:`load_key_ref`, or from any
    securesystemslib ``Signer`` (HSM, cloud KMS, in memory) with
    :meth:`from_signer`. The repr never shows key material.

    Attributes:
        name: The key's name in messages and ceremony files.
        key: The public key.
        signer: What signs with it; ``None`` for a public key whose signature is
            collected later (by a ceremony).
    """

    name: str
    key: Key
    signer: Signer | None = None

    @classmethod
    def from_signer(cls, signer: Signer, name: str | None = None) -> KeyRef:
        """A key that signs with ``signer``.

        Args:
            signer: Any securesystemslib signer.
            name: The key's name (default: the first 12 digits of its key id).

        Returns:
            A KeyRef that can sign.
        """
        key = signer.public_key
        return cls(name or key.keyid[:12], key, signer)

    def __repr__(self) -> str:
        return f"KeyRef(name={self.name!r}, keyid={self.key.keyid[:12]}...)"


def _read_small(path: Path) -> bytes:
    try:
        if path.stat().st_size > _MAX_KEY_FILE:
            raise InputError(f"{path} is too large to be a key file")
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyUseError(f"key file {path} does not exist") from None
    except OSError as e:
        raise KeyUseError(f"cannot read key file {path}: {e.strerror}") from None


def load_public_key(path: Path) -> tuple[str, Key, str | None]:
    """Read a ``.pub`` file.

    Args:
        path: The ``.pub`` file.

    Returns:
        The key's name, the public key, and the URI of its signer or ``None``.

    Raises:
        InputError: The file is not a tufwaves public key file.
        KeyUseError: The file cannot be read.
    """
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


def _refuse_if_shared(path: Path) -> None:
    """Refuse a private key file that group or others may read or write (as OpenSSH does)."""
    try:
        mode = path.stat().st_mode
    except OSError as e:
        raise KeyUseError(f"cannot read key file {path}: {e.strerror}") from None
    if mode & 0o077:
        raise KeyUseError(
            f"private key file {path} is accessible by others (mode {mode & 0o777:o}); "
            f"it is not used: make it private with 'chmod 600 {path}'"
        )


def _signer_from_pem(path: Path, pem: bytes, source: Passphrase, online: bool) -> KeyRef:
    secret = resolve_passphrase(source, f"key {path.name}", online=online)
    try:
        private = load_pem_private_key(pem, secret)
    except (ValueError, TypeError):
        raise KeyUseError(
            f"cannot decrypt {path}: wrong passphrase or not an encrypted PKCS#8 key"
        ) from None
    public = SSlibKey.from_crypto(private.public_key())
    pub_path = path.with_suffix(".pub")
    name = path.stem
    if pub_path.exists():
        name, key, _ = load_public_key(pub_path)
        if key.keyid != public.keyid:
            raise KeyUseError(f"{path} and {pub_path} are not the same key pair")
    return KeyRef(name, public, CryptoSigner(private, public))


def load_key_ref(
    spec: str | Path, *, passphrase: Passphrase = None, online: bool = False
) -> KeyRef:
    """Load a key file or private-key URI (a KEY argument of the command line).

    * ``PATH.key``: an encrypted private key file (public half from ``PATH.pub``
      if present), decrypted with the passphrase;
    * ``PATH.pub``: a public key; a signer if it names a private-key URI;
    * ``SCHEME:...``: a securesystemslib private-key URI; ``file2:`` URIs need
      no more, other schemes need a ``.pub`` that names them
      (``tufwaves keys import-uri``).

    Args:
        spec: The path or URI.
        passphrase: For a ``.key`` file: the passphrase, or a callable asked
            with ``"key NAME.key"``; ``None`` (default) reads
            ``TUFWAVES_KEY_PASSPHRASE`` or prompts at a terminal.

    Returns:
        The key, with a signer unless it is a ``.pub`` naming no URI.

    Raises:
        InputError: The file or URI is not a key this function understands.
        KeyUseError: The file cannot be read, the passphrase is wrong or missing,
            or the signer cannot be loaded.
    """
    spec = str(spec)
    if _URI_RE.match(spec) and not Path(spec).exists():
        if spec.startswith("file2:"):
            path = Path(spec[len("file2:") :])
            pem = _read_small(path)
            _refuse_if_shared(path)
            try:
                private = load_pem_private_key(pem, None)
            except (ValueError, TypeError):
                raise KeyUseError(
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
        if uri.startswith("file2:"):
            _refuse_if_shared(Path(uri.removeprefix("file2:")))
        return KeyRef(name, key, signer_from_uri(uri, key, f"key {path.name}"))
    pem = _read_small(path)
    if b"PRIVATE KEY" not in pem:
        raise InputError(f"{path} is neither a .pub file nor a PEM private key")
    _refuse_if_shared(path)
    return _signer_from_pem(path, pem, passphrase, online)


def import_uri_key(name: str, directory: Path, uri: str, public_pem: bytes) -> Path:
    """Write ``NAME.pub`` for a key whose private half lives behind ``uri``.

    Args:
        name: The key's name, also its file name.
        directory: Where to write ``NAME.pub``.
        uri: A securesystemslib private-key URI (HSM, cloud KMS, ...).
        public_pem: The public key in PEM.

    Returns:
        The path of the ``.pub`` file; pass it to :func:`load_key_ref`.

    Raises:
        InputError: Bad name or not a PEM public key.
        StorageError: The file exists already or cannot be written.
    """
    if not _NAME_RE.fullmatch(name):
        raise InputError(f"bad key name {name!r}")
    try:
        public = SSlibKey.from_crypto(load_pem_public_key(public_pem))
    except ValueError:
        raise InputError("the public key is not a PEM public key") from None
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.pub"
    _write_exclusive(path, public_key_json(name, public, uri), PUBLIC_MODE)
    return path
