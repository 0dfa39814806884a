"""One root exception for tufwaves and a few subclasses that each mean one thing.

Every subclass carries the process exit code the command line uses for it, so
the CLI maps any tufwaves failure to a documented exit code in one place:

* 1 -- a rule refused the operation or a check failed (``RefusedError``,
  ``VerificationError``)
* 2 -- the input was malformed or the command was used wrongly (``InputError``)
* 3 -- a file, key, passphrase or lock could not be used (``StorageError``,
  ``KeyUseError``)
"""

from __future__ import annotations

__all__ = [
    "InputError",
    "KeyUseError",
    "RefusedError",
    "StorageError",
    "TufwavesError",
    "VerificationError",
]


class TufwavesError(Exception):
    """Root of every error tufwaves raises on purpose.

    ``str(error)`` is a message for people: what was wrong and what to do next.
    """

    exit_code = 1


class RefusedError(TufwavesError):
    """A rule refused the operation (version order, policy, state, threshold)."""

    exit_code = 1


class VerificationError(TufwavesError):
    """Metadata or a signature did not verify."""

    exit_code = 1


class InputError(TufwavesError):
    """Malformed input: arguments, a UUID list, an inventory row, a JSON file."""

    exit_code = 2


class StorageError(TufwavesError):
    """A file or database could not be read or written, or the lock is busy."""

    exit_code = 3


class KeyUseError(TufwavesError):
    """A key could not be loaded or used (missing file, wrong passphrase, URI)."""

    exit_code = 3
