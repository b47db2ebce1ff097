"""The in-memory de-duplication store: handled ids in a set, for one process's lifetime.

It absorbs redeliveries within a process (a retry after a failed commit, a rebalance
back to this member); after a restart every uncommitted message is handled again, so
an engine that needs exactly-once effect across crashes uses the Postgres store.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from uuid import UUID

from models.dedup import Claim


class MemoryHandledIds:
    """Handled ids per scope; a claim is recorded when its block exits without an error."""

    def __init__(self) -> None:
        self._handled: set[tuple[str, UUID]] = set()

    @contextlib.asynccontextmanager
    async def claim(self, scope: str, message_id: UUID) -> AsyncIterator[Claim[None] | None]:
        if (scope, message_id) in self._handled:
            yield None
            return
        yield Claim(None)
        self._handled.add((scope, message_id))

    def __len__(self) -> int:
        return len(self._handled)


class NoDedup:
    """No de-duplication: every delivery runs the handler (plain at-least-once)."""

    @contextlib.asynccontextmanager
    async def claim(self, scope: str, message_id: UUID) -> AsyncIterator[Claim[None] | None]:
        yield Claim(None)
