"""Where the audit reads published metadata from: a directory or a base URL.

Both give the exact bytes of ``metadata/NAME`` or say the file is missing;
anything else (a directory that cannot be read, a server that does not
answer, an HTTP error other than 404) is a :class:`StorageError`. Every read
is capped at the size cap of the role (``tufwaves.device.bundle``).
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Final, Protocol

from tufwaves.device.bundle import role_size_cap
from tufwaves.errors import InputError, StorageError

__all__ = ["DirectorySource", "HttpSource", "Source", "cap_of"]

logger = logging.getLogger(__name__)

_TIMEOUT: Final = 30.0


def cap_of(name: str) -> int:
    """The size cap of the file ``name`` (``N.ROLE.json`` or ``timestamp.json``)."""
    stem = name.removesuffix(".json")
    head, _, rest = stem.partition(".")
    return role_size_cap(rest if head.isdigit() else stem)


class Source(Protocol):
    """Published metadata files by name (``3.rollout.w1.json``)."""

    @property
    def where(self) -> str:
        """The directory or URL, for messages."""
        ...  # pragma: no cover - protocol

    def read(self, name: str) -> bytes | None:
        """The exact bytes of ``metadata/name``, or None if there is no such file."""
        ...  # pragma: no cover - protocol


class DirectorySource:
    """A repository directory (``REPO/metadata/``) or a copy of it.

    Args:
        path: ``REPO`` (holding ``metadata/``) or the metadata directory itself.

    Raises:
        InputError: the path holds no ``timestamp.json`` in either place.
    """

    def __init__(self, path: Path) -> None:
        if (path / "metadata" / "timestamp.json").is_file():
            self.directory = path / "metadata"
        elif (path / "timestamp.json").is_file():
            self.directory = path
        else:
            raise InputError(
                f"{path} holds no published metadata (no metadata/timestamp.json): "
                "give a repository directory or a copy of its metadata/"
            )

    @property
    def where(self) -> str:
        """The metadata directory."""
        return str(self.directory)

    def read(self, name: str) -> bytes | None:
        """The bytes of ``name`` in the metadata directory (capped), or None."""
        path = self.directory / name
        try:
            with path.open("rb") as f:
                data = f.read(cap_of(name) + 1)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StorageError(f"cannot read {path}: {e.strerror or e}") from None
        return data


class HttpSource:
    """A tufwaves server or any static mirror: ``URL/metadata/NAME`` over HTTP(S).

    Args:
        url: The base URL (``http://host:8080/``); files are fetched from
            ``URL/metadata/``. A URL that already ends in ``/metadata`` is
            used as it is.

    Raises:
        InputError: not an http or https URL.
    """

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise InputError(f"{url!r} is not an http:// or https:// URL")
        base = url.rstrip("/")
        if not base.endswith("/metadata"):
            base += "/metadata"
        self.base = base + "/"

    @property
    def where(self) -> str:
        """The metadata base URL."""
        return self.base

    def read(self, name: str) -> bytes | None:
        """GET ``URL/metadata/name`` (capped); None on 404."""
        url = self.base + urllib.parse.quote(name)
        limit = cap_of(name)
        try:
            with urllib.request.urlopen(url, timeout=_TIMEOUT) as response:  # noqa: S310 - http(s) only
                data: bytes = response.read(limit + 1)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise StorageError(f"GET {url}: HTTP {e.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise StorageError(f"GET {url}: {getattr(e, 'reason', e)}") from None
        logger.debug("fetched %s (%d bytes)", url, len(data))
        return data
