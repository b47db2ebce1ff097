"""Consumers in a background task of the test's event loop: all of `phasestream run`'s
(with its HTTP server), or the audit projector alone; stopped on exit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from models.events import PhaseEvent
from phasestream.consumers import audit_projector, run_consumers
from phasestream.settings import Settings
from phasestream.wiring import Runtime
from streams.projector import Projector
from tests.waiting import eventually


@contextlib.asynccontextmanager
async def consumers_running(settings: Settings, *names: str) -> AsyncIterator[Runtime]:
    """Consumers and their HTTP server in a background task, as `phasestream run` runs them."""
    runtime = Runtime(settings)
    task = asyncio.create_task(run_consumers(runtime, list(names)))
    try:
        await eventually(
            _port_of(runtime, task), lambda port: port is not None, what="the HTTP server"
        )
        yield runtime
    finally:
        runtime.stop.set()
        await asyncio.wait_for(task, timeout=30)


def _port_of(runtime: Runtime, task: asyncio.Task[None]) -> Callable[[], Awaitable[int | None]]:
    async def probe() -> int | None:
        if task.done():
            task.result()  # raises what stopped it
        return runtime.http_port

    return probe


@contextlib.asynccontextmanager
async def audit_running(settings: Settings) -> AsyncIterator[Projector[PhaseEvent]]:
    """The audit projector in a background task of this event loop, stopped on exit."""
    async with audit_projector(settings) as projector:
        task = asyncio.create_task(projector.run())
        try:
            yield projector
        finally:
            projector.stop()
            await asyncio.wait_for(task, timeout=30)
