"""The audit projector's Postgres sink: rows and positions in one transaction.

Write order inside the transaction: create any month partition the batch needs and lacks
(skipped when the whole batch falls in a month this sink ensured since its last upkeep),
claim the event ids by COPYing them into ``workflow_phase_event_ids``, then COPY the rows
straight into the log. An id claimed before (a redelivery or replay, a no-op unless its
payload differs) makes the id table's key refuse the first COPY; the batch is then
written again through a per-connection temp table, the stage: one statement claims each
id (ON CONFLICT DO NOTHING) and inserts the rows of the ids it claimed, and the events
whose id was taken are compared with the stored ones. A batch with an id twice (or a log
holding a row whose id the id table lacks) goes through the stage at once, its insert
with ON CONFLICT (id, "timestamp") DO NOTHING. Then move the positions compare-and-set.
The commit makes all of them durable at once; any failure leaves none of them.

An event id stands for one event: an event whose id is already recorded (earlier, or
earlier in the same batch) with any field different is refused with ConflictingEventsError,
and the projector dead-letters it; the first one recorded stays. The id table exists
because the month-partitioned audit table can only keep (id, "timestamp") unique.

Partition upkeep (months ahead, retention) runs in its own short transaction before the
first batch and then once per ``maintenance_interval_s``: a DROP of an old month must not
hold the audit table's lock for as long as a batch does.

Two writes can be in flight (``apply_in_turn``), each on its own connection. A second
write that shares no id with the first claims beside it; one that shares an id claims only
once the first holds its ids, so the earlier one records it, as one write at a time would.
Either way the first never waits for the second in Postgres. The second moves its
positions only once the first committed, and gives up (EarlierWriteFailedError) if that
one did not; a batch that must create a month partition (creators share an advisory lock
until they commit) and the upkeep wait for the first to commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, date
from typing import Any, Final

import asyncpg
import orjson

from models.errors import (
    ConflictingEventsError,
    EarlierWriteFailedError,
    RejectedRecordError,
    SinkUnavailableError,
)
from models.events import PhaseEvent
from models.phases import PhaseStatus
from models.ports import Batch, PartitionRef, Turn
from projections.database import Connection, in_transaction, translate_errors, translated
from projections.positions import move_positions
from projections.sink_base import PostgresSink, quote_ident

log = logging.getLogger(__name__)

COLUMNS: Final = (
    "id",
    "workflow_id",
    "user_id",
    "phase_number",
    "status",
    "timestamp",
    "duration_ms",
    "previous_phase",
    "error_message",
    "error_stack",
    "metadata",
    "rollback_triggered",
    "rollback_to_phase",
)
_COLUMN_LIST: Final = ", ".join(f'"{c}"' for c in COLUMNS)
STAGE: Final = "phasestream_audit_stage"
AUDIT_TABLE: Final = "workflow_phase_logs"
EVENT_IDS_TABLE: Final = "workflow_phase_event_ids"
#: Every stored field but the id: two events with one id must agree on all of them.
_PAYLOAD: Final = ", ".join(f'{{t}}."{c}"' for c in COLUMNS[1:])
_ARBITER: Final = ' ON CONFLICT (id, "timestamp") DO NOTHING'
CONFLICT_REASON: Final = "already recorded with a different payload"
MONTHS_AHEAD: Final = 3
DAY_S: Final = 86_400.0


#: A StrEnum's .value is a property in Python 3.11's enum, about 0.3 us a call.
_STATUS_TEXT: Final = {status: status.value for status in PhaseStatus}


def audit_row(event: PhaseEvent) -> tuple[Any, ...]:
    """The event's values in COLUMNS order."""
    return audit_rows([event])[0]


def audit_rows(events: Sequence[PhaseEvent]) -> list[tuple[Any, ...]]:
    """audit_row of each event, each tuple built once (the hot path)."""
    status, dumps = _STATUS_TEXT, orjson.dumps
    return [
        (
            e.event_id,
            e.workflow_id,
            e.user_id,
            e.phase_number,
            status[e.status],
            e.timestamp,
            e.duration_ms,
            e.previous_phase,
            e.error_message,
            e.error_stack,
            dumps(e.metadata).decode(),
            e.rollback_triggered,
            e.rollback_to_phase,
        )
        for e in events
    ]


def stage_rows(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The audit rows, each with its index in the batch ("ord")."""
    return [(*row, i) for i, row in enumerate(rows)]


def months_of(events: Sequence[PhaseEvent]) -> list[date]:
    """The first day of each month in UTC that the events fall in."""
    return sorted({date(t.year, t.month, 1) for t in (e.timestamp.astimezone(UTC) for e in events)})


def batch_month(events: Sequence[PhaseEvent]) -> tuple[int, int] | None:
    """The (year, month) in UTC of every event of the batch, if they share one; else None."""
    first = min(e.timestamp for e in events).astimezone(UTC)
    last = max(e.timestamp for e in events).astimezone(UTC)
    month = (first.year, first.month)
    return month if month == (last.year, last.month) else None


def _earlier_failed() -> EarlierWriteFailedError:
    return EarlierWriteFailedError("the write before this one did not commit")


async def _earlier_committed(turn: Turn) -> None:
    """Wait for the write before ``turn`` to commit; raise if it did not."""
    if turn.after is not None and not await turn.after.wait_committed():
        raise _earlier_failed()


class _PartitionGone(SinkUnavailableError):
    """A month partition this sink had ensured is gone; the batch was rolled back."""


class _IdClaimedBefore(SinkUnavailableError):
    """An id of a batch of distinct ids was claimed before; the batch was rolled back."""


class _LogRowExists(SinkUnavailableError):
    """The log already held a row of an id the batch claimed; the batch was rolled back."""


def _missing_partition(exc: asyncpg.PostgresError) -> bool:
    return isinstance(exc, asyncpg.CheckViolationError) and "no partition" in str(exc)


async def _create_stage(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    # "ord" is the event's index in the batch, to name the events the sink refuses.
    await conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {STAGE} "
        f"(LIKE {AUDIT_TABLE} INCLUDING DEFAULTS, ord INTEGER) ON COMMIT DELETE ROWS"
    )


def repeated_within(events: Sequence[PhaseEvent], skip: set[int]) -> set[int]:
    """Indexes of events (but those in ``skip``) whose id an earlier event of the batch
    has, with other fields."""
    first: dict[int, PhaseEvent] = {}
    return {
        i
        for i, event in enumerate(events)
        if i not in skip
        and (seen := first.setdefault(event.event_id.int, event)) is not event
        and seen != event
    }


def refused_positions(
    batch: Batch[PhaseEvent], indexes: set[int]
) -> frozenset[tuple[PartitionRef, int]]:
    """Flat batch indexes as (partition, index within that partition's events)."""
    positions = []
    start = 0
    for ref, events in batch.by_partition.items():
        positions += [(ref, i - start) for i in indexes if start <= i < start + len(events)]
        start += len(events)
    return frozenset(positions)


async def maintain_partitions(
    pool: asyncpg.Pool[Any],
    *,
    table: str = AUDIT_TABLE,
    months_ahead: int = MONTHS_AHEAD,
    retention_months: int = 0,
    ids_table: str | None = EVENT_IDS_TABLE,
) -> list[str]:
    """Create the partitions ahead and drop those past retention; the names dropped."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT phasestream_ensure_log_partitions($1, $2)", months_ahead, table)
        rows = await conn.fetch(
            "SELECT name FROM phasestream_drop_log_partitions($1, $2) AS name",
            retention_months,
            table,
        )
        if rows and ids_table is not None:  # the ids of the months just dropped
            await conn.execute(
                f'DELETE FROM {quote_ident(ids_table)} WHERE "timestamp" < '
                "(SELECT coalesce(min(to_date(right(c.relname, 6), 'YYYYMM'))::timestamp "
                "AT TIME ZONE 'UTC', now()) FROM pg_inherits AS i "
                "JOIN pg_class AS c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = to_regclass(quote_ident($1)))",
                table,
            )
    return [r["name"] for r in rows]


class AuditSink(PostgresSink[PhaseEvent]):
    """PositionedSink for ``workflow_phase_logs`` (or a replay's shadow of it)."""

    init = staticmethod(_create_stage)
    default_table = AUDIT_TABLE

    def __init__(
        self,
        pool: asyncpg.Pool[asyncpg.Record],
        *,
        table: str | None = None,
        ids_table: str = EVENT_IDS_TABLE,
        retention_months: int = 0,
        months_ahead: int = MONTHS_AHEAD,
        maintenance_interval_s: float = DAY_S,
    ) -> None:
        super().__init__(pool, table=table)
        self.ids_table = ids_table
        self.retention_months = retention_months
        self.months_ahead = months_ahead
        self.maintenance_interval_s = maintenance_interval_s
        self._maintained_at: float | None = None
        #: Months whose partition a batch of ours ensured since the last upkeep: a batch
        #: wholly inside one skips the ensure statement (a round trip, and a scan of the
        #: stage). Cleared by each upkeep, so retention never drops a month it holds.
        self._months: set[tuple[int, int]] = set()
        #: Set once the log held a row of an id the id table lacked (an id stored twice
        #: before migration 0008, then its earlier month dropped by retention).
        self._arbiter = False
        self._upkeep = asyncio.Lock()

    async def apply(self, consumer: str, batch: Batch[PhaseEvent]) -> None:
        await self.apply_in_turn(consumer, batch, Turn())

    async def apply_in_turn(self, consumer: str, batch: Batch[PhaseEvent], turn: Turn) -> None:
        # Keyed by the id's int: UUID.__hash__ is Python code (hash(self.int)), an int's is C.
        ids = {event.event_id.int for event in batch.events}
        if turn.keys is None:  # known before any wait, for the write after this one
            turn.keys = ids
        try:
            # Upkeep runs with no write in flight: its DROP would queue behind that write's
            # locks, and every statement on the table behind the DROP.
            if self._upkeep_due():
                await _earlier_committed(turn)
                await self.maintain_if_due()
            try:
                await self._write(consumer, batch, turn, ids)
            except _PartitionGone:  # the months known are forgotten: this time it ensures them
                await self._write(consumer, batch, turn, ids)
            except _IdClaimedBefore:  # a redelivery, or a conflict: the stage tells which
                await self._write(consumer, batch, turn, ids, staged=True)
            except _LogRowExists as exc:
                log.warning("%s; its inserts keep ON CONFLICT DO NOTHING from now on", exc)
                self._arbiter = True
                await self._write(consumer, batch, turn, ids)
        except BaseException:
            # The write after gives up at once: its ids must not block this one's retry.
            turn.settle(False)
            raise

    async def _write(
        self,
        consumer: str,
        batch: Batch[PhaseEvent],
        turn: Turn,
        ids: set[int],
        *,
        staged: bool = False,
    ) -> None:
        """One transaction: rows, then positions once the write before committed."""
        month = None
        async with translated(), in_transaction(self.pool) as conn:
            if batch.events:
                month = await self._write_rows(conn, batch, turn, ids, staged=staged)
            else:
                turn.claimed()  # it holds no id
            await _earlier_committed(turn)
            await move_positions(conn, consumer, batch.moves)
        if month is not None:  # only a committed month: a later batch skips its ensure
            self._months.add(month)

    def _upkeep_due(self) -> bool:
        return (
            self._maintained_at is None
            or time.monotonic() - self._maintained_at >= self.maintenance_interval_s
        )

    async def maintain_if_due(self) -> None:
        async with self._upkeep:  # one upkeep at a time: a write's retry may ask for it too
            if self._upkeep_due():
                await self._maintain()

    async def _maintain(self) -> None:
        now = time.monotonic()
        try:
            dropped = await translate_errors(
                lambda: maintain_partitions(
                    self.pool,
                    table=self.table,
                    months_ahead=self.months_ahead,
                    retention_months=self.retention_months,
                    ids_table=self.ids_table,
                )
            )
        except (asyncpg.PostgresError, RejectedRecordError) as exc:
            # Upkeep must never stop the projection: batches create the partitions they
            # need themselves, and retention can wait for the next run.
            log.warning(
                "%s: partition upkeep failed (%s: %s); retrying in an hour",
                self.table,
                type(exc).__name__,
                exc,
            )
            self._maintained_at = now - self.maintenance_interval_s + 3600.0
            return
        self._maintained_at = now
        self._months.clear()
        if dropped:
            log.info(
                "%s: retention (%d months) dropped partitions %s",
                self.table,
                self.retention_months,
                ", ".join(dropped),
            )

    async def rebuilt(self) -> None:
        """Months ahead in the rebuilt table too, even where no event is yet."""
        await maintain_partitions(
            self.pool,
            table=self.table,
            months_ahead=self.months_ahead,
            retention_months=self.retention_months,
            ids_table=self.ids_table,
        )

    async def _write_rows(
        self, conn: Connection, batch: Batch[PhaseEvent], turn: Turn, ids: set[int], *, staged: bool
    ) -> tuple[int, int] | None:
        """Ensure, claim, write and check; the batch's month if it ensured one. ``ids``:
        the events' ids, as ints; ``staged``: through the stage even without an id twice."""
        events = batch.events
        month = batch_month(events)
        ensured = month is None or month not in self._months
        if ensured:
            # Creators hold one advisory lock to their commit: the earlier write must not
            # wait for it in Postgres while this one waits for the earlier's claim.
            await _earlier_committed(turn)
            await self._ensure_partitions(conn, events)
        repeats = len(ids) != len(events)  # no id twice is the common case
        staged = staged or repeats or self._arbiter
        # Sharing no id with the write before, this one claims beside it: neither can
        # wait for the other in Postgres, and the log's order cannot matter.
        earlier = turn.after
        if earlier is not None and earlier.shares_keys(ids) and not await earlier.wait_claimed():
            raise _earlier_failed()
        rows = audit_rows(events)
        taken: set[int] = set()
        try:
            if staged:
                taken = await self._stage_claim_and_insert(conn, rows)
            else:
                await self._claim_and_copy(conn, events, rows)
        except asyncpg.PostgresError as exc:
            if not staged and isinstance(exc, asyncpg.UniqueViolationError):
                # Only the log can violate a key here (_claim_and_copy took the id
                # table's): a row of a claimed id was there already.
                raise _LogRowExists(f"{self.table}: {exc}") from exc
            if not _missing_partition(exc):
                raise
            # Someone dropped a month we had ensured (by hand, or another process's
            # retention): forget what we know and write the batch again.
            self._months.clear()
            raise _PartitionGone(f"{self.table}: {exc}") from exc
        turn.claimed()
        if conflicting := await self._conflicting(conn, events, taken, repeats=repeats):
            raise ConflictingEventsError(refused_positions(batch, conflicting), CONFLICT_REASON)
        return month if ensured else None

    async def _ensure_partitions(self, conn: Connection, events: Sequence[PhaseEvent]) -> None:
        await conn.execute(
            "SELECT phasestream_ensure_log_partition($1, m) FROM unnest($2::date[]) AS m",
            self.table,
            months_of(events),
        )

    async def _claim_and_copy(
        self, conn: Connection, events: Sequence[PhaseEvent], rows: list[tuple[Any, ...]]
    ) -> None:
        """A batch of distinct ids: COPY the ids into the id table, then the rows straight
        into the log. Without the stage Postgres spends about a fifth less per event
        (bench/RESULTS.md, step 12). An id claimed before (a redelivery, or another event
        with that id) stops the first COPY: the batch goes through the stage instead. The
        ids go in the batch's order: two processes claiming ids in common in two orders (a
        rebalance's overlap) can deadlock, which Postgres breaks and the write retries."""
        try:
            await conn.copy_records_to_table(
                self.ids_table,
                records=[(e.event_id, e.timestamp) for e in events],
                columns=("id", "timestamp"),
            )
        except asyncpg.UniqueViolationError as exc:
            raise _IdClaimedBefore(f"{self.ids_table}: {exc}") from exc
        await conn.copy_records_to_table(self.table, records=rows, columns=COLUMNS)

    async def _stage_claim_and_insert(
        self, conn: Connection, rows: list[tuple[Any, ...]]
    ) -> set[int]:
        """A batch with an id twice, or one claimed before (or a log holding rows the id
        table lacks): the indexes of the events whose ids were claimed before (by an
        earlier batch).

        The log insert skips a row already there (ON CONFLICT DO NOTHING), as the second of
        two events with one id and timestamp in one batch must be."""
        await conn.copy_records_to_table(STAGE, records=stage_rows(rows), columns=(*COLUMNS, "ord"))
        # One statement claims the ids (before the table, as a replay's swap locks them),
        # inserts the rows whose ids it claimed, and names the events whose id was taken.
        # In id order: each index page is visited once per batch, and two workers take
        # the id locks in one order.
        taken = await conn.fetch(
            f'WITH claimed AS (INSERT INTO {quote_ident(self.ids_table)} (id, "timestamp") '
            f'SELECT id, "timestamp" FROM {STAGE} ORDER BY id '
            "ON CONFLICT (id) DO NOTHING RETURNING id), "
            f"inserted AS (INSERT INTO {self.quoted_table} ({_COLUMN_LIST}) "
            f"SELECT {_COLUMN_LIST} FROM {STAGE} WHERE id IN (SELECT id FROM claimed) "
            f"ORDER BY id{_ARBITER}) "
            f"SELECT s.ord FROM {STAGE} AS s WHERE NOT EXISTS "
            "(SELECT 1 FROM claimed AS c WHERE c.id = s.id)"
        )
        return {r["ord"] for r in taken}

    async def _conflicting(
        self, conn: Connection, events: Sequence[PhaseEvent], taken: set[int], *, repeats: bool
    ) -> set[int]:
        """Indexes of events whose id is taken by a different event: a stored one (for
        the ``taken`` indexes, whose ids were claimed before), else the first of the batch
        with that id. Raising on any of them rolls back the whole batch.

        This runs on a fresh snapshot, so it also sees an id that a concurrent worker
        claimed (and committed) while the claim waited for it.
        """
        repeated = repeated_within(events, skip=taken) if repeats else set()
        if not taken:
            return repeated
        rows = await conn.fetch(
            f"SELECT s.ord FROM {STAGE} AS s JOIN {quote_ident(self.ids_table)} AS i "
            f"ON i.id = s.id JOIN {self.quoted_table} AS l "
            f'ON l.id = i.id AND l."timestamp" = i."timestamp" '
            f"WHERE s.ord = ANY($1::int[]) AND ({_PAYLOAD.format(t='s')}) "
            f"IS DISTINCT FROM ({_PAYLOAD.format(t='l')})",
            list(taken),
        )
        return repeated | {r["ord"] for r in rows}
