"""The WebSocket endpoint /ws: each authenticated user receives their own notifications.

A connection is authenticated before the upgrade (a refused one gets HTTP 401 and a JSON
body saying why), so a socket is only ever registered under the user its token names. The
server closes it when the token expires (code 4401): access never outlives the token.

Each connection has its own bounded send queue and writer: ``push`` only enqueues, so a
slow client never delays anyone else's notifications; one whose queue is full, or that
takes longer than SEND_TIMEOUT_S over one message, is closed. Connections are capped in
total and per user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Final

import orjson
from aiohttp import WSCloseCode, web
from prometheus_client import CollectorRegistry

from models.notifications.value import Notification, as_json
from phasestream.auth import (
    CHALLENGE,
    Principal,
    TokenRefusedError,
    TokenVerifier,
    bearer,
    canonical_user_id,
)
from phasestream.delivery.metrics import HubMetrics

log = logging.getLogger(__name__)
HEARTBEAT_S: Final = 30.0
SEND_TIMEOUT_S: Final = 5.0
CLOSE_TIMEOUT_S: Final = 5.0
QUEUE_MESSAGES: Final = 256
MAX_CLIENT_MESSAGE_BYTES: Final = 4096  # clients have nothing to say but pings
TOKEN_EXPIRED: Final = 4401  # an application close code (4000-4999): "log in again"


@dataclass(eq=False)
class _Connection:
    user_id: str
    ws: web.WebSocketResponse
    # (message, is a notification): the hello goes first, through the same queue.
    queue: asyncio.Queue[tuple[str, bool]] = field(
        default_factory=lambda: asyncio.Queue(maxsize=QUEUE_MESSAGES)
    )
    writer: asyncio.Task[None] | None = None


class WebSocketHub:
    def __init__(
        self,
        verifier: TokenVerifier,
        registry: CollectorRegistry,
        *,
        max_connections: int,
        max_per_user: int,
    ) -> None:
        self._verifier = verifier
        self._max_total = max_connections
        self._max_per_user = max_per_user
        self._metrics = HubMetrics(registry)
        self._sockets: dict[str, set[_Connection]] = {}
        self._closing_tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        if not self._verifier.configured:
            log.warning(
                "no PHASESTREAM_JWT_SECRET or PHASESTREAM_JWT_JWKS_URL: /ws refuses "
                "every connection"
            )

    def attach(self, app: web.Application) -> None:
        """Add /ws to ``app``; its shutdown closes the open connections."""
        app.router.add_get("/ws", self._serve)
        app.on_shutdown.append(self._on_shutdown)

    @property
    def connections(self) -> int:
        return sum(len(group) for group in self._sockets.values())

    async def push(self, notification: Notification) -> int:
        """Queue ``notification`` for every connection of its user; how many took it.

        Never waits on a client: each connection's writer sends from its own queue."""
        group = list(self._sockets.get(notification.user_id, ()))
        if not group:
            return 0
        message = _message("notification", notification=as_json(notification))
        queued = 0
        for connection in group:
            try:
                connection.queue.put_nowait((message, True))
                queued += 1
            except asyncio.QueueFull:
                self._drop(connection, "QueueFull")
        return queued

    async def close(self) -> None:
        """Close every connection and refuse new ones (safe to call twice)."""
        self._closed = True
        group = [c for user in self._sockets.values() for c in user]
        self._sockets.clear()
        self._metrics.connections.set(0)
        for connection in group:
            _cancel(connection)
        await asyncio.gather(
            *(_close(c.ws, WSCloseCode.GOING_AWAY, "server shutdown") for c in group),
            *self._closing_tasks,
        )

    async def _on_shutdown(self, _: web.Application) -> None:
        await self.close()

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        if self._closed:
            return web.json_response(
                {"error": "unavailable", "reason": "shutting down"}, status=503
            )
        try:
            principal = await self._authenticate(request)
            self._admit(principal.subject)
        except TokenRefusedError as exc:
            self._metrics.refused.labels(exc.code).inc()
            log.info("/ws refused from %s: %s", request.remote, exc.code)
            return web.json_response(
                {"error": exc.code, "reason": exc.reason},
                status=exc.status,
                headers=CHALLENGE if exc.status == 401 else {},
            )
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=MAX_CLIENT_MESSAGE_BYTES)
        await ws.prepare(request)
        connection = _Connection(principal.subject, ws)
        connection.queue.put_nowait((_message("hello", user_id=principal.subject), False))
        self._add(connection)
        try:
            await self._listen(ws, principal.expires_at)
        finally:
            self._remove(connection)
            _cancel(connection)
        return ws

    async def _authenticate(self, request: web.Request) -> Principal:
        # Browsers cannot set headers on a WebSocket: the token may come in the query.
        principal = await self._verifier.verify(
            bearer(request.headers.get("Authorization", "")) or request.query.get("token") or None
        )
        wanted = request.query.get("user_id")
        if wanted is not None and canonical_user_id(wanted) != principal.subject:
            raise TokenRefusedError("wrong_user", "the token is not for the user asked for")
        return principal

    def _admit(self, user_id: str) -> None:
        if self.connections >= self._max_total:
            raise TokenRefusedError(
                "too_many_connections",
                f"the server holds its most connections ({self._max_total}); try again later",
                503,
            )
        if len(self._sockets.get(user_id, ())) >= self._max_per_user:
            raise TokenRefusedError(
                "too_many_for_user",
                f"this user has {self._max_per_user} connections open already",
                429,
            )

    async def _listen(self, ws: web.WebSocketResponse, expires_at: float) -> None:
        # Clients have nothing to say (pings are answered by aiohttp): read until they go,
        # or until the token expires.
        try:
            async with asyncio.timeout(max(0.0, expires_at - time.time())):
                async for _ in ws:
                    pass
        except TimeoutError:
            await _close(ws, TOKEN_EXPIRED, "token expired")

    async def _write(self, connection: _Connection) -> None:
        """Send this connection's queue in order; drop the connection if it stalls."""
        while True:
            message, counted = await connection.queue.get()
            try:
                async with asyncio.timeout(SEND_TIMEOUT_S):
                    await connection.ws.send_str(message)
            except (ConnectionError, TimeoutError) as exc:
                self._drop(connection, type(exc).__name__)
                return
            if counted:
                self._metrics.pushed.inc()

    def _drop(self, connection: _Connection, why: str) -> None:
        log.info(
            "/ws: dropping a connection of %s that does not take its messages (%s)",
            connection.user_id,
            why,
        )
        self._metrics.dropped.inc()
        self._remove(connection)
        _cancel(connection)
        task = asyncio.create_task(_close(connection.ws, WSCloseCode.POLICY_VIOLATION, "too slow"))
        self._closing_tasks.add(task)
        task.add_done_callback(self._closing_tasks.discard)

    def _add(self, connection: _Connection) -> None:
        connection.writer = asyncio.create_task(self._write(connection))
        self._sockets.setdefault(connection.user_id, set()).add(connection)
        self._metrics.connections.set(self.connections)

    def _remove(self, connection: _Connection) -> None:
        group = self._sockets.get(connection.user_id)
        if group is not None:
            group.discard(connection)
            if not group:
                del self._sockets[connection.user_id]
        self._metrics.connections.set(self.connections)


def _cancel(connection: _Connection) -> None:
    if connection.writer is not None and connection.writer is not asyncio.current_task():
        connection.writer.cancel()


def _message(kind: str, **fields: object) -> str:
    return orjson.dumps({"type": kind, **fields}).decode()


async def _close(ws: web.WebSocketResponse, code: int, reason: str) -> None:
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await ws.close(code=code, message=reason.encode())
