"""Connections to Postgres, and the mapping of driver errors onto our own types."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

from models.errors import (
    PhasestreamError,
    RejectedRecordError,
    SinkMisconfiguredError,
    SinkUnavailableError,
)

T = TypeVar("T")
#: A connection, whether borrowed from a pool or opened on its own.
# asyncpg is generic only in its stubs, hence the string.
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

#: Errors after which the same write can succeed once Postgres is back.
UNAVAILABLE: Final = (
    OSError,  # ConnectionRefusedError, ConnectionResetError and friends
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # "connection is closed" after a backend went away
    asyncpg.exceptions.OperatorInterventionError,  # admin/crash shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,
    # The protocol state of a connection cut mid-operation (e.g. during COPY); the pool
    # gets a fresh connection for the retry because ``discard_on_failure`` closes this one.
    asyncpg.InternalClientError,
    # Deadlock or serialization failure (class 40): Postgres rolled the transaction back
    # and says to run it again.
    asyncpg.exceptions.TransactionRollbackError,
)
#: Errors of the settings or the grants, not of the data or the moment: a wrong database
#: name, a refused role or password, a privilege the role lacks.
MISCONFIGURED: Final = (
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,  # includes a wrong password (28P01)
    asyncpg.InsufficientPrivilegeError,
    asyncpg.ClientConfigurationError,  # e.g. a DSN scheme or sslmode it does not know
)
#: Errors that the same write will hit again: the data itself is refused.
REJECTED: Final = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


def as_uuid(value: Any) -> uuid.UUID:
    """asyncpg returns its own UUID subclass, which orjson does not encode: normalise."""
    return uuid.UUID(bytes=value.bytes)


async def translate_errors(operation: Callable[[], Awaitable[T]]) -> T:
    """Run a database operation, raising SinkUnavailableError, SinkMisconfiguredError or
    RejectedRecordError."""
    async with translated():
        return await operation()


@contextlib.asynccontextmanager
async def translated() -> AsyncIterator[None]:
    """Database errors in the block as SinkUnavailableError, SinkMisconfiguredError or
    RejectedRecordError."""
    try:
        yield
    except MISCONFIGURED as exc:
        raise SinkMisconfiguredError(f"{type(exc).__name__}: {exc}") from exc
    except REJECTED as exc:
        raise RejectedRecordError(f"{type(exc).__name__}: {exc}") from exc
    except UNAVAILABLE as exc:
        raise SinkUnavailableError(f"{type(exc).__name__}: {exc}") from exc


@contextlib.asynccontextmanager
async def discard_on_failure(conn: Connection) -> AsyncIterator[Connection]:
    """Close a connection that failed for any reason other than its data.

    A connection cut in the middle of an operation can be left in a state where the next
    operation fails too; closing it makes the pool open a fresh one.
    """
    try:
        yield conn
    except (*REJECTED, PhasestreamError):  # the transaction rolled back; the connection is fine
        raise
    except BaseException:
        # Already detached from its pool when asyncpg itself saw the connection die.
        with contextlib.suppress(asyncpg.InterfaceError):
            conn.terminate()
        raise


@contextlib.asynccontextmanager
async def in_transaction(pool: asyncpg.Pool[asyncpg.Record]) -> AsyncIterator[Connection]:
    """A pooled connection inside a transaction, discarded if it failed for a reason other
    than its data (see ``discard_on_failure``)."""
    async with pool.acquire() as pooled, discard_on_failure(pooled) as conn, conn.transaction():
        yield conn


async def connect(dsn: str, **options: Any) -> asyncpg.Connection[asyncpg.Record]:
    """One connection; a malformed URL is a SinkMisconfiguredError, not a ValueError."""
    with _malformed_url():
        conn: asyncpg.Connection[asyncpg.Record] = await asyncpg.connect(dsn, **options)
        return conn


@contextlib.asynccontextmanager
async def connection(
    dsn: str,
    **options: Any,
) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
    """One connection for the block, closed after it. Failing to connect is one of our
    errors (see ``translated``); errors inside the block are the caller's to translate."""
    async with translated():
        conn = await connect(dsn, **options)
    try:
        yield conn
    finally:
        await conn.close()


@contextlib.contextmanager
def _malformed_url() -> Iterator[None]:
    try:
        yield
    except ValueError as exc:  # the URL's own parse error: it never quotes the password
        raise SinkMisconfiguredError(f"the database URL is malformed: {exc}") from None


async def keep_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """A pool ``reset`` that sends nothing: for connections that change no session state
    outside a transaction (only SET LOCAL, transaction-scoped locks, ON COMMIT temp rows).

    asyncpg's default reset query (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL) is a
    round trip on every release, one per batch for a sink; asyncpg still rolls back a
    transaction left open before calling this.
    """


async def open_pool(
    dsn: str,
    *,
    max_size: int = 2,
    init: Callable[[asyncpg.Connection[asyncpg.Record]], Coroutine[Any, Any, None]] | None = None,
    reset: Callable[[asyncpg.Connection[asyncpg.Record]], Coroutine[Any, Any, None]] | None = None,
) -> asyncpg.Pool[asyncpg.Record]:
    """A small pool: a projector writes on one connection at a time. ``reset``: see
    ``keep_session`` (None: asyncpg's own)."""
    with _malformed_url():
        pool = await asyncpg.create_pool(
            dsn, min_size=1, max_size=max_size, init=init, reset=reset, command_timeout=60
        )
    if pool is None:  # pragma: no cover - create_pool only returns None when not awaited
        raise SinkUnavailableError("could not create a connection pool")
    return pool
