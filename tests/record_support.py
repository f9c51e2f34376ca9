"""Databases for the alert-record tests (no tests here).

* ``pg_database`` (session): a fresh PostgreSQL database with a unique name on
  the machine's server (``$POSTURE_TEST_PG``, default
  ``postgresql://postgres@127.0.0.1:5432/postgres``: trust auth as in CI),
  dropped at the end of the session. Skips, saying why, when no server answers.
* ``pg_url``: a private schema in it per test (``search_path`` in the URL), so
  tests never see each other's rows.
* ``database``: parametrised over ``sqlite`` (a file in the test's tmp folder)
  and ``postgresql`` (``pg_url``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

PG_ADMIN_URL = os.environ.get("POSTURE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session", name="pg_database")
def pg_database_fixture() -> Iterator[str]:
    """URL of a database made for this test session."""
    try:
        import psycopg
    except ImportError:
        pytest.skip("psycopg is not installed: pip install -e '.[postgres]'")
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(
            f"no PostgreSQL at {PG_ADMIN_URL} ({str(exc).strip()[:120]}); "
            ".ci/run installs and starts one"
        )
    name = f"pm_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(name="pg_url")
def pg_url_fixture(pg_database: str) -> str:
    """A URL whose tables live in a schema of their own (one per test)."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return f"{pg_database}?options={quote(f'-csearch_path={schema}', safe='')}"


@pytest.fixture(name="database", params=["sqlite", "postgresql"])
def database_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh alert-record database of each kind."""
    if request.param == "sqlite":
        return str(tmp_path / "state" / "alerts.sqlite3")
    return str(request.getfixturevalue("pg_url"))
