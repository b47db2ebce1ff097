"""The migration runner: numbered plain SQL files, applied in order, recorded in a table.

Safe to run twice (applied files are skipped) and from two processes at once (an advisory
lock serialises them). A changed file that was already applied is refused, not re-run.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

import asyncpg

from models.errors import PhasestreamError

log = logging.getLogger(__name__)

#: Arbitrary but fixed: every phasestream migrator takes this advisory lock.
LOCK_KEY: Final = 0x70686173  # "phas"
FILE_PATTERN: Final = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(PhasestreamError):
    """A migration file is malformed, or an applied one was changed afterwards."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def bundled_migrations() -> list[Migration]:
    """The SQL files shipped in the ``migrations`` package, ordered by number."""
    found = []
    for entry in resources.files("migrations").iterdir():
        match = FILE_PATTERN.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
        elif entry.name.endswith(".sql"):
            raise MigrationError(f"{entry.name}: migration files are named NNNN_name.sql")
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a number: {sorted(versions)}")
    return sorted(found, key=lambda m: m.version)


_CREATE_LEDGER: Final = """
CREATE TABLE IF NOT EXISTS phasestream_schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)"""


async def migrate(
    conn: asyncpg.Connection[Any], migrations: list[Migration] | None = None
) -> list[Migration]:
    """Apply the pending migrations; return those applied by this call."""
    pending = bundled_migrations() if migrations is None else migrations
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        await conn.execute(_CREATE_LEDGER)
        applied = {
            r["version"]: r["checksum"]
            for r in await conn.fetch("SELECT version, checksum FROM phasestream_schema_migrations")
        }
        done = []
        for migration in pending:
            if migration.version in applied:
                _check_unchanged(migration, applied[migration.version])
                continue
            await _apply(conn, migration)
            done.append(migration)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)


def _check_unchanged(migration: Migration, checksum: str) -> None:
    if checksum != migration.checksum:
        raise MigrationError(
            f"migration {migration.version:04d}_{migration.name} was changed after it was "
            "applied; add a new migration instead of editing an applied one"
        )


async def _apply(conn: asyncpg.Connection[Any], migration: Migration) -> None:
    log.info("applying migration %04d_%s", migration.version, migration.name)
    async with conn.transaction():
        await conn.execute(migration.sql)
        await conn.execute(
            "INSERT INTO phasestream_schema_migrations (version, name, checksum) "
            "VALUES ($1, $2, $3)",
            migration.version,
            migration.name,
            migration.checksum,
        )
