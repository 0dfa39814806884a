"""PostgreSQL for the tests: a throwaway schema per test.

The server comes from ``TUFWAVES_TEST_POSTGRES`` (default: the local
``postgresql://postgres@127.0.0.1:5432/test``). Unreachable, the PostgreSQL
tests skip and say why -- unless ``TUFWAVES_REQUIRE_POSTGRES=1`` (CI), when
they fail. Each test gets its own schema (``CREATE SCHEMA test_...``), chosen
through the DSN's ``options=-csearch_path=...`` and dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest

from tufwaves.server.inventory.dsn import redact

try:
    import psycopg
except ImportError:  # pragma: no cover - psycopg is part of the test extra
    psycopg = None  # type: ignore[assignment]

DSN_ENV = "TUFWAVES_TEST_POSTGRES"
REQUIRE_ENV = "TUFWAVES_REQUIRE_POSTGRES"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def base_dsn() -> str:
    return os.environ.get(DSN_ENV) or DEFAULT_DSN


def unavailable(reason: str) -> NoReturn:
    """Skip (or, with TUFWAVES_REQUIRE_POSTGRES=1, fail) a PostgreSQL test."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} (and {REQUIRE_ENV}=1 requires PostgreSQL)")
    pytest.skip(f"PostgreSQL tests skipped: {reason}; set {DSN_ENV} to a reachable server")


def with_schema(dsn: str, schema: str) -> str:
    """``dsn`` with ``schema`` first on its search path."""
    separator = "&" if "?" in dsn else "?"
    return f"{dsn}{separator}options=-csearch_path%3D{schema}"


def admin() -> Any:
    """An autocommit connection to the test server, or skip/fail."""
    dsn = base_dsn()
    if psycopg is None:
        unavailable("psycopg is not installed (pip install -e '.[test]')")
    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    except psycopg.Error as e:
        unavailable(f"cannot connect to {redact(dsn)}: {str(e).strip()}")


def fresh_schema() -> Iterator[str]:
    """A DSN whose search path is a new, empty schema; dropped at the end."""
    conn = admin()
    schema = f"test_{uuid.uuid4().hex[:16]}"
    try:
        conn.execute(f"CREATE SCHEMA {schema}")
        yield with_schema(base_dsn(), schema)
    finally:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.close()


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """The DSN of an empty PostgreSQL schema of this test's own."""
    yield from fresh_schema()


@pytest.fixture
def pg_dsn2() -> Iterator[str]:
    """A second one."""
    yield from fresh_schema()
