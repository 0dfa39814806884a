"""The operator token: one shared secret read from a file.

Programs send ``Authorization: Bearer TOKEN``. People use the dashboard in a
browser: ``POST /login`` with the token (the form on the 401 page) or
``GET /?token=TOKEN`` sets an HttpOnly, SameSite=Strict cookie holding a
value derived from the token (never the token itself) and redirects to ``/``.
Every comparison is constant-time over SHA-256 digests, so neither the token
nor its length leaks through timing.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from tufwaves.errors import InputError, StorageError

__all__ = ["COOKIE", "MIN_TOKEN_LENGTH", "OperatorToken", "read_token_file"]

COOKIE = "tufwaves_operator"
MIN_TOKEN_LENGTH = 16


def read_token_file(path: Path) -> str:
    """The token in ``path`` (surrounding whitespace removed)."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise StorageError(f"cannot read the operator token file {path}: {e}") from None
    check_token(token, str(path))
    return token


def check_token(token: str, where: str = "the operator token") -> None:
    if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
        raise InputError(
            f"{where}: the operator token must be at least {MIN_TOKEN_LENGTH} characters "
            "without whitespace (for example: openssl rand -hex 32)"
        )


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


class OperatorToken:
    def __init__(self, token: str) -> None:
        check_token(token)
        self._digest = _digest(token)
        self._cookie = hmac.new(
            self._digest, b"tufwaves dashboard cookie v1", hashlib.sha256
        ).hexdigest()

    def matches(self, candidate: str) -> bool:
        return hmac.compare_digest(_digest(candidate), self._digest)

    @property
    def cookie_value(self) -> str:
        return self._cookie

    def matches_cookie(self, candidate: str) -> bool:
        return hmac.compare_digest(_digest(candidate), _digest(self._cookie))
