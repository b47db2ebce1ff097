"""The compose Postgres init script, run as the postgres image runs it, on a real server:
the application role it makes is no superuser and can migrate and use its database."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest

from phasestream.settings import Settings
from phasestream.wiring import run_migrations
from tests.conftest import with_database

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "postgres" / "initdb" / "10-app-role.sh"


@pytest.fixture
async def fresh_database(postgres_server: str) -> AsyncIterator[tuple[str, str]]:
    """An empty database owned by the superuser (as the image makes POSTGRES_DB), and a
    role name; both dropped afterwards."""
    name, role = f"compose_{uuid.uuid4().hex[:10]}", f"app_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(postgres_server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield name, role
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
    finally:
        await admin.close()


async def test_the_init_script_makes_an_application_role_that_is_no_superuser(
    postgres_server: str, fresh_database: tuple[str, str]
) -> None:
    name, role = fresh_database
    server = urlsplit(postgres_server)
    socket_dir = parse_qs(server.query).get("host", [""])[0]  # the embedded server's
    env = {
        **os.environ,
        "PGHOST": socket_dir or server.hostname or "127.0.0.1",
        "PGPORT": str(server.port or 5432),
        "PGPASSWORD": server.password or "",
        "POSTGRES_USER": server.username or "postgres",
        "POSTGRES_DB": name,
        "APP_DB_USER": role,
        "APP_DB_PASSWORD": "s3cret-test-only",
    }
    done = subprocess.run(
        ["sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr

    netloc = f"{role}:s3cret-test-only@{server.hostname or ''}" + (
        f":{server.port}" if server.port else ""
    )
    url = with_database(server._replace(netloc=netloc).geturl(), name)
    await run_migrations(Settings(database_url=url))  # as the services' role
    conn = await asyncpg.connect(url)
    try:
        flags = await conn.fetchrow(
            "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user"
        )
        await conn.execute(
            "INSERT INTO workflow_phase_sla_thresholds (phase_number, "
            "threshold_ms) VALUES (1, 1000) ON CONFLICT (phase_number) "
            "DO UPDATE SET threshold_ms = 1000"
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE ROLE escalated SUPERUSER")
    finally:
        await conn.close()
    assert flags is not None
    assert tuple(flags) == (False, False, False)


async def test_the_init_script_refuses_to_run_without_a_password(
    postgres_server: str, fresh_database: tuple[str, str]
) -> None:
    name, role = fresh_database
    env = {**os.environ, "POSTGRES_USER": "postgres", "POSTGRES_DB": name, "APP_DB_USER": role}
    env.pop("APP_DB_PASSWORD", None)
    done = subprocess.run(
        ["sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert "APP_DB_PASSWORD" in done.stderr
