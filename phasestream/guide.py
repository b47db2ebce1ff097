"""The block `dev` and `run` log once they serve: where everything is, and how to use it.

A newcomer reads the start of the log, not the README: every URL here is the one the
server really bound (PHASESTREAM_HTTP_PORT=0 included), every command one that works from
the directory the process was started in.
"""

from __future__ import annotations

import sys
from pathlib import Path

from phasestream.http_auth import HttpAccess

#: Addresses that mean "every interface": a browser reaches them as localhost.
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def base_url(host: str, port: int, scheme: str = "http") -> str:
    name = "localhost" if host in _WILDCARDS else host
    if ":" in name:  # an IPv6 literal
        name = f"[{name}]"
    return f"{scheme}://{name}:{port}"


def cli_hint() -> str:
    """How to call the CLI of the interpreter running now (the venv's, after make)."""
    bin_dir = Path(sys.executable).parent
    executable = _relative(bin_dir / "phasestream")
    if not (bin_dir / "activate").exists():
        return f"{executable} report analytics"
    return f"{executable} report analytics  (or: source {_relative(bin_dir / 'activate')})"


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def ready_block(host: str, port: int, access: HttpAccess, *, websocket: bool, reset: str) -> str:
    """The lines of the block, one ``what  where`` per line."""
    http = base_url(host, port)
    lines = ["ready:"]
    if access.serves_data:
        lines += [
            f"  dashboard  {http}/dashboard",
            f"  API        {http}/api/analytics, /api/sla, /api/running, ... "
            f"(OpenAPI: {http}/api/openapi.json)",
        ]
    else:
        lines += [f"  dashboard and API refused: {access.refusal}"]
    lines.append(f"  metrics    {http}/metrics  (health: {http}/healthz)")
    if websocket:
        lines.append(
            f"  WebSocket  {base_url(host, port, 'ws')}/ws  (a user's notifications; "
            "a bearer token)"
        )
    lines += [
        f"  CLI        {cli_hint()}",
        "  stop       Ctrl-C (SIGINT or SIGTERM)",
        f"  reset      {reset}",
    ]
    return "\n".join(lines)


def dev_reset(data_dir: Path) -> str:
    return (
        f"stop, then delete {data_dir} (the embedded Postgres and the broker's log); "
        "the next start is empty"
    )


RUN_RESET = "rebuild a projection from the log: phasestream replay --help"
