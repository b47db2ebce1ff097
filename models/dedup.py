"""The port of a subscriber's de-duplication store: which message ids were handled.

Downstream consumers get every message at least once. A store turns that into an
exactly-once *effect*: the subscriber asks it to claim a message's deterministic id
(command_id, violation_id, event_id) before the handler runs; the claim becomes durable
only together with what the handler did, and a claimed id is never handled again.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar
from uuid import UUID

C_co = TypeVar("C_co", covariant=True)


@dataclass(frozen=True, slots=True)
class Claim(Generic[C_co]):
    """A message id not handled yet, held for one handler run.

    ``context`` is what the handler writes through to share the claim's fate: the Postgres
    store gives the connection whose transaction records the id; the in-memory store None.
    """

    context: C_co


class HandledIds(Protocol[C_co]):
    """Where a subscriber records the ids it handled, per subscriber (``scope``)."""

    def claim(
        self, scope: str, message_id: UUID
    ) -> AbstractAsyncContextManager[Claim[C_co] | None]:
        """None if ``message_id`` was handled already; else a claim for the block.

        The id counts as handled once the block exits without an error; if the block
        raises, the claim is dropped and the id can be claimed again.
        """
        ...
