"""`phasestream db ...`: database administration (the least-privilege roles)."""

from __future__ import annotations

import asyncio

import typer
from pydantic import SecretStr

from models.errors import PhasestreamError
from phasestream.cli_support import fail, load_settings
from phasestream.settings import Settings
from projections.database import connection, translate_errors
from projections.roles import Role, Roles, apply_roles

db_app = typer.Typer(help="Database administration.", no_args_is_help=True)


def configured_roles(settings: Settings) -> Roles:
    """The three roles named by PHASESTREAM_DB_ROLE_PREFIX, with their passwords."""

    def role(kind: str, password: SecretStr | None) -> Role:
        secret = password.get_secret_value() if password is not None else None
        return Role(f"{settings.db_role_prefix}_{kind}", secret)

    return Roles(
        role("owner", settings.db_owner_password),
        role("writer", settings.db_writer_password),
        role("reader", settings.db_reader_password),
    )


@db_app.command("roles")
def roles_cmd() -> None:
    """Create (or update) the owner, writer and reader roles and their privileges; run as
    an administrator (PHASESTREAM_DATABASE_URL of a superuser), again after migrating as
    anyone but the owner."""
    settings = load_settings()
    roles = configured_roles(settings)

    async def main() -> list[str]:
        async with connection(settings.resolved_database_url) as conn:
            return await apply_roles(conn, roles)

    try:
        done = asyncio.run(translate_errors(main))
    except PhasestreamError as exc:
        raise fail(str(exc)) from None
    for line in done:
        typer.echo(line)
