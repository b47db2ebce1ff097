"""Least privilege in Postgres: an owner, a writer and a reader role (docs/security.md).

- **owner** owns every table, view, sequence and function of the schema: it runs the
  migrations and `phasestream replay` (which builds and swaps tables).
- **writer** reads and writes rows (the consumers) but changes no schema; it creates and
  drops audit month partitions only through the two SECURITY DEFINER functions of
  migration 0011.
- **reader** only SELECTs tables and views (the HTTP API, `phasestream report`, analysts),
  including month partitions created later: default privileges grant them as the owner
  creates them.

``apply_roles`` runs as an administrator (a superuser, or a role that may create roles and
is a member of the owner), in one transaction, and is safe to run again: it re-grants from
scratch, so it also repairs drift (e.g. tables created by another role). Passwords leave
this process only as SCRAM-SHA-256 verifiers, so not even the server's statement log sees
them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Final

from projections.database import Connection
from projections.sink_base import quote_ident

SCRAM_ITERATIONS: Final = 4096
#: Functions the writer calls (migration 0011): they run as the owner.
WRITER_FUNCTIONS: Final = (
    "phasestream_ensure_log_partition(TEXT, DATE)",
    "phasestream_drop_log_partitions(INTEGER, TEXT)",
)
LEDGER: Final = "phasestream_schema_migrations"
_RELATION_KINDS: Final = {
    "r": "TABLE",
    "p": "TABLE",
    "f": "FOREIGN TABLE",
    "v": "VIEW",
    "m": "MATERIALIZED VIEW",
    "S": "SEQUENCE",
}
# Relations of this schema owned by someone else; sequences that belong to a column and
# objects of extensions follow their table or extension, so they are left out.
_FOREIGN_RELATIONS: Final = """
SELECT c.oid::regclass::text AS name, c.relkind::text AS kind
FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind::text = ANY($2::text[])
  AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = $1)
  AND NOT EXISTS (SELECT 1 FROM pg_depend AS d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND (d.deptype = 'e'
                      OR (c.relkind = 'S' AND d.deptype IN ('a', 'i'))))
ORDER BY c.relkind, 1"""
_FOREIGN_ROUTINES: Final = """
SELECT p.oid::regprocedure::text AS name
FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
WHERE n.nspname = current_schema()
  AND p.proowner <> (SELECT oid FROM pg_roles WHERE rolname = $1)
  AND NOT EXISTS (SELECT 1 FROM pg_depend AS d WHERE d.classid = 'pg_proc'::regclass
                  AND d.objid = p.oid AND d.deptype = 'e')
ORDER BY 1"""


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    password: str | None = None  # None: the role's password is left as it is


@dataclass(frozen=True, slots=True)
class Roles:
    owner: Role
    writer: Role
    reader: Role


def scram_verifier(
    password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS
) -> str:
    """What Postgres stores for a SCRAM-SHA-256 password (RFC 5802, 7677), as psql's
    \\password computes it: given to CREATE/ALTER ROLE, the password itself is never sent."""
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    return f"SCRAM-SHA-256${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


async def apply_roles(conn: Connection, roles: Roles) -> list[str]:
    """Create or update the three roles and their privileges; what was done, in lines."""
    done: list[str] = []
    async with conn.transaction():
        for role in (roles.owner, roles.writer, roles.reader):
            done.append(await _ensure_role(conn, role))
        done.append(await _hand_over(conn, roles.owner.name))
        await _grant_database_and_schema(conn, roles)
        await _grant_objects(conn, roles)
        done.append(
            f"{roles.writer.name}: SELECT, INSERT, UPDATE, DELETE on every table; "
            f"{roles.reader.name}: SELECT on every table and view, now and later"
        )
    return done


async def _ensure_role(conn: Connection, role: Role) -> str:
    exists = await conn.fetchval("SELECT true FROM pg_roles WHERE rolname = $1", role.name)
    verb = "ALTER" if exists else "CREATE"
    statement = f"{verb} ROLE {quote_ident(role.name)} LOGIN"
    if role.password is not None:
        statement += f" PASSWORD {_literal(scram_verifier(role.password))}"
    await conn.execute(statement)
    password = "password set" if role.password is not None else "password unchanged"
    return f"role {role.name}: {'updated' if exists else 'created'} ({password})"


async def _hand_over(conn: Connection, owner: str) -> str:
    """Make ``owner`` the owner of every relation and routine of the schema."""
    relations = await conn.fetch(_FOREIGN_RELATIONS, owner, list(_RELATION_KINDS))
    for row in relations:
        await conn.execute(
            f"ALTER {_RELATION_KINDS[row['kind']]} {row['name']} OWNER TO {quote_ident(owner)}"
        )
    routines = await conn.fetch(_FOREIGN_ROUTINES, owner)
    for row in routines:
        await conn.execute(f"ALTER ROUTINE {row['name']} OWNER TO {quote_ident(owner)}")
    return f"{owner}: now owns {len(relations)} more relations and {len(routines)} more functions"


async def _grant_database_and_schema(conn: Connection, roles: Roles) -> None:
    owner, writer, reader = (quote_ident(r.name) for r in (roles.owner, roles.writer, roles.reader))
    database = quote_ident(await conn.fetchval("SELECT current_database()"))
    schema = quote_ident(await conn.fetchval("SELECT current_schema()"))
    for statement in (
        # Temporary tables are the only objects a role could otherwise create anywhere.
        f"REVOKE TEMPORARY ON DATABASE {database} FROM PUBLIC",
        f"GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {owner}, {writer}",
        f"REVOKE TEMPORARY ON DATABASE {database} FROM {reader}",
        f"GRANT CONNECT ON DATABASE {database} TO {reader}",
        f"REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC",
        f"REVOKE CREATE ON SCHEMA {schema} FROM {writer}, {reader}",
        f"GRANT USAGE, CREATE ON SCHEMA {schema} TO {owner}",
        f"GRANT USAGE ON SCHEMA {schema} TO {writer}, {reader}",
    ):
        await conn.execute(statement)


async def _grant_objects(conn: Connection, roles: Roles) -> None:
    owner, writer, reader = (quote_ident(r.name) for r in (roles.owner, roles.writer, roles.reader))
    schema = quote_ident(await conn.fetchval("SELECT current_schema()"))
    defaults = f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema}"
    statements = [
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {writer}, {reader}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {writer}, {reader}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {reader}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {writer}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {writer}",
        f"{defaults} GRANT SELECT ON TABLES TO {reader}",
        f"{defaults} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {writer}",
        f"{defaults} GRANT USAGE, SELECT ON SEQUENCES TO {writer}",
        # Migration 0011 revokes the DDL functions from PUBLIC; the writer needs two.
        f"{defaults} GRANT EXECUTE ON FUNCTIONS TO {writer}",
    ]
    if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", LEDGER):
        statements.append(f"REVOKE INSERT, UPDATE, DELETE ON {LEDGER} FROM {writer}")
    for function in WRITER_FUNCTIONS:
        if await conn.fetchval("SELECT to_regprocedure($1) IS NOT NULL", function):
            statements.append(f"GRANT EXECUTE ON FUNCTION {function} TO {writer}")
    for statement in statements:
        await conn.execute(statement)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
