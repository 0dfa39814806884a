"""Regression tests for command-line defects found on the landed code."""

from __future__ import annotations

import pytest

from tufwaves import errors


def test_key_error_has_a_proper_name() -> None:
    assert not hasattr(errors, "KeyError_")
    assert issubclass(errors.KeyUseError, errors.TufwavesError)
    assert errors.KeyUseError.exit_code == 3
    with pytest.raises(errors.KeyUseError):
        raise errors.KeyUseError("x")
