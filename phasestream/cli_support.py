"""What every `phasestream` command shares: loading settings, failing with an exit code."""

from __future__ import annotations

import typer
from pydantic import ValidationError

from phasestream.logs import setup_logging
from phasestream.settings import Settings


def load_settings() -> Settings:
    """The settings, with logging set up; a bad setting exits with code 2 and names it."""
    try:
        settings = Settings()
    except ValidationError as exc:
        typer.echo(f"error: invalid setting: {settings_problems(exc)}", err=True)
        raise typer.Exit(2) from None
    setup_logging(settings.log_level)
    return settings


def settings_problems(exc: ValidationError) -> str:
    """One line naming each bad variable; never the input, which may be a password."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        message = error["msg"].removeprefix("Value error, ")
        loc = error["loc"]
        problems.append(f"PHASESTREAM_{str(loc[0]).upper()}: {message}" if loc else message)
    return "; ".join(problems)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` as an error; the caller raises the returned Exit."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)
