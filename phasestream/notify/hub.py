"""The WebSocket endpoint /ws: each authenticated user receives their own notifications.

A connection is authenticated before the upgrade (a refused one gets HTTP 401 and a JSON
body saying why), so a socket is only ever registered under the user its token names. The
server closes it when the token expires (code 4401): access never outlives the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Final

import orjson
from aiohttp import WSCloseCode, web
from prometheus_client import CollectorRegistry

from models.notifications import Notification, as_json
from phasestream.notify.metrics import HubMetrics
from phasestream.notify.token import TokenRefusedError, canonical_user_id, verify_token
from phasestream.settings import Settings

log = logging.getLogger(__name__)
HEARTBEAT_S: Final = 30.0
#: A client that does not take a message within this time is slow or gone: it is closed
#: rather than allowed to hold up everyone else's notifications.
SEND_TIMEOUT_S: Final = 5.0
CLOSE_TIMEOUT_S: Final = 5.0
TOKEN_EXPIRED: Final = 4401  # an application close code (4000-4999): "log in again"


class WebSocketHub:
    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        secret = settings.jwt_secret
        self._secret = secret.get_secret_value() if secret is not None else None
        self._metrics = HubMetrics(registry)
        self._sockets: dict[str, set[web.WebSocketResponse]] = {}
        self._closing_tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        if self._secret is None:
            log.warning("no PHASESTREAM_JWT_SECRET: /ws refuses every connection")

    def attach(self, app: web.Application) -> None:
        """Add /ws to ``app``; its shutdown closes the open connections."""
        app.router.add_get("/ws", self._serve)
        app.on_shutdown.append(self._on_shutdown)

    @property
    def connections(self) -> int:
        return sum(len(sockets) for sockets in self._sockets.values())

    async def push(self, notification: Notification) -> int:
        """Send ``notification`` to every connection of its user; how many took it."""
        sockets = list(self._sockets.get(notification.user_id, ()))
        if not sockets:
            return 0
        message = _message("notification", notification=as_json(notification))
        sent = sum(await asyncio.gather(*(self._send(notification.user_id, ws, message)
                                          for ws in sockets)))
        self._metrics.pushed.inc(sent)
        return sent

    async def close(self) -> None:
        """Close every connection and refuse new ones (safe to call twice)."""
        self._closed = True
        sockets = [ws for group in self._sockets.values() for ws in group]
        self._sockets.clear()
        self._metrics.connections.set(0)
        await asyncio.gather(*(_close(ws, WSCloseCode.GOING_AWAY, "server shutdown")
                               for ws in sockets), *self._closing_tasks)

    async def _on_shutdown(self, _: web.Application) -> None:
        await self.close()

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        if self._closed:
            return web.json_response({"error": "unavailable", "reason": "shutting down"},
                                     status=503)
        try:
            user_id, expires_at = self._authenticate(request)
        except TokenRefusedError as exc:
            self._metrics.refused.labels(exc.code).inc()
            log.info("/ws refused from %s: %s", request.remote, exc)
            return web.json_response({"error": exc.code, "reason": exc.reason}, status=401,
                                     headers={"WWW-Authenticate": 'Bearer realm="phasestream"'})
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S)
        await ws.prepare(request)
        self._add(user_id, ws)
        try:
            await ws.send_str(_message("hello", user_id=user_id))
            await self._listen(ws, expires_at)
        except ConnectionError:  # gone before its hello: nothing to clean up but the entry
            log.debug("/ws: a client of %s left at once", user_id)
        finally:
            self._remove(user_id, ws)
        return ws

    def _authenticate(self, request: web.Request) -> tuple[str, float]:
        user_id, expires_at = verify_token(self._secret, _token(request))
        wanted = request.query.get("user_id")
        if wanted is not None and canonical_user_id(wanted) != user_id:
            raise TokenRefusedError("wrong_user", "the token is not for the user asked for")
        return user_id, expires_at

    async def _listen(self, ws: web.WebSocketResponse, expires_at: float) -> None:
        # Clients have nothing to say (pings are answered by aiohttp): read until they go,
        # or until the token expires.
        try:
            async with asyncio.timeout(max(0.0, expires_at - time.time())):
                async for _ in ws:
                    pass
        except TimeoutError:
            await _close(ws, TOKEN_EXPIRED, "token expired")

    async def _send(self, user_id: str, ws: web.WebSocketResponse, message: str) -> bool:
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await ws.send_str(message)
        except (ConnectionError, TimeoutError) as exc:
            log.info("/ws: dropping a connection that does not take messages (%s)",
                     type(exc).__name__)
            self._remove(user_id, ws)
            task = asyncio.create_task(_close(ws, WSCloseCode.POLICY_VIOLATION, "too slow"))
            self._closing_tasks.add(task)
            task.add_done_callback(self._closing_tasks.discard)
            return False
        return True

    def _add(self, user_id: str, ws: web.WebSocketResponse) -> None:
        self._sockets.setdefault(user_id, set()).add(ws)
        self._metrics.connections.set(self.connections)

    def _remove(self, user_id: str, ws: web.WebSocketResponse) -> None:
        group = self._sockets.get(user_id)
        if group is not None:
            group.discard(ws)
            if not group:
                del self._sockets[user_id]
        self._metrics.connections.set(self.connections)


def _token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.query.get("token") or None


def _message(kind: str, **fields: object) -> str:
    return orjson.dumps({"type": kind, **fields}).decode()


async def _close(ws: web.WebSocketResponse, code: int, reason: str) -> None:
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await ws.close(code=code, message=reason.encode())
