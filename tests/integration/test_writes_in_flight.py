"""Two audit writes in flight: the later one overlaps the earlier, and changes nothing of
what one write at a time would store.

Each test starts the later write first, so that without the ordering of turns it would
claim its ids before the earlier one (and, the earlier one blocked on a shared id, hang).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import asyncpg
import msgspec
import pytest

from models.errors import ConflictingEventsError, EarlierWriteFailedError, StalePositionError
from models.event_codec import encode_event
from models.events import PhaseEvent
from models.ports import Batch, PartitionRef, PositionMove, Turn
from phasestream.settings import Settings
from projections.audit_sink import AuditSink
from tests.background import audit_running
from tests.events import make_event
from tests.integration.test_dead_letters import Sent, send_in_order
from tests.topics import read_to_highwater
from tests.waiting import count_rows, eventually

pytestmark = pytest.mark.integration

REF = PartitionRef("t", 0)
T = TypeVar("T")
#: Long enough for the later write to copy its rows and reach its claim.
HEAD_START_S = 0.5


def batch(events: list[PhaseEvent], start: int | None, end: int) -> Batch[PhaseEvent]:
    return Batch.single(REF, events, PositionMove(start, end))


async def bounded(awaitable: Awaitable[T]) -> T:
    """The awaitable's result; a hang between the two writes fails the test instead."""
    return await asyncio.wait_for(awaitable, 20)


async def later_first(sink: AuditSink, later: Batch[PhaseEvent]) -> tuple[asyncio.Task[None], Turn]:
    """Start the later write, give it a head start, and return it with the earlier's turn.

    A batch of another consumer goes first, so that the sink's upkeep is done and this
    month's partition known: neither makes the later write wait by itself.
    """
    await sink.apply("warm-up", batch([make_event("wf-w")], None, 1))
    first = Turn()
    second = asyncio.create_task(sink.apply_in_turn("c", later, Turn(first)))
    await asyncio.sleep(HEAD_START_S)
    return second, first


async def claiming(db: str) -> int:
    """Transactions that have claimed ids and not yet ended (they lock the id table)."""
    return await count_rows(
        db,
        "SELECT count(*) FROM pg_locks WHERE relation = 'workflow_phase_event_ids'::regclass "
        "AND mode = 'RowExclusiveLock' AND granted",
    )


async def duration_of(db: str, event: PhaseEvent) -> int:
    """The stored duration_ms of the one row of ``event``'s id."""
    sql = "SELECT duration_ms FROM workflow_phase_logs WHERE id = $1"
    assert await count_rows(db, sql.replace("duration_ms", "count(*)"), event.event_id) == 1
    return await count_rows(db, sql, event.event_id)


async def positions(db: str) -> int:
    return await count_rows(
        db, "SELECT next_offset FROM phasestream_consumer_positions WHERE consumer = 'c'"
    )


async def test_of_two_writes_sharing_an_id_the_earlier_one_records_it(database: str) -> None:
    shared = make_event("wf-p", duration_ms=1)
    clash = msgspec.structs.replace(shared, duration_ms=2)
    async with await AuditSink.connect(database) as sink:
        second, turn = await later_first(sink, batch([make_event("wf-p"), clash], 2, 4))
        assert await claiming(database) == 0  # it waits for the earlier one's claim
        await bounded(sink.apply_in_turn("c", batch([shared, make_event("wf-p")], None, 2), turn))
        turn.settle(True)
        with pytest.raises(ConflictingEventsError) as refused:
            await bounded(second)
    assert refused.value.refused == frozenset({(REF, 1)})
    assert await duration_of(database, shared) == 1
    assert await count_rows(database) == 3  # and the warm-up's
    assert await positions(database) == 2


async def test_writes_sharing_no_id_claim_side_by_side(database: str) -> None:
    earlier_events = [make_event("wf-s"), make_event("wf-s")]
    async with await AuditSink.connect(database) as sink:
        await sink.apply("warm-up", batch([make_event("wf-w")], None, 1))
        blocker = await asyncpg.connect(database)
        try:
            # A transaction of ours holds one of the earlier write's ids: that write is
            # stopped inside its claim until we let go.
            held = blocker.transaction()
            await held.start()
            await blocker.execute(
                'INSERT INTO workflow_phase_event_ids (id, "timestamp") VALUES ($1, $2)',
                earlier_events[1].event_id,
                earlier_events[1].timestamp,
            )
            turn = Turn()
            first = asyncio.create_task(
                sink.apply_in_turn("c", batch(earlier_events, None, 2), turn)
            )
            await asyncio.sleep(HEAD_START_S)
            second = asyncio.create_task(
                sink.apply_in_turn("c", batch([make_event("wf-s")], 2, 3), Turn(turn))
            )
            await asyncio.sleep(HEAD_START_S)
            # Ours, the stopped claim and the later write's: it did not wait.
            assert await claiming(database) == 3
            await held.rollback()
        finally:
            await blocker.close()
        await bounded(first)
        turn.settle(True)
        await bounded(second)
    assert await count_rows(database) == 4  # and the warm-up's
    assert await positions(database) == 3


async def test_a_write_after_one_that_failed_writes_nothing(database: str) -> None:
    async with await AuditSink.connect(database) as sink:
        await sink.apply("c", batch([make_event("wf-f")], None, 3))
        second, turn = await later_first(
            sink, batch([make_event("wf-f"), make_event("wf-f")], 5, 7)
        )
        with pytest.raises(StalePositionError):  # it expects 1; 3 is stored
            await bounded(sink.apply_in_turn("c", batch([make_event("wf-f")], 1, 5), turn))
        with pytest.raises(EarlierWriteFailedError):
            await bounded(second)
    assert await count_rows(database) == 2
    assert await count_rows(database, "SELECT count(*) FROM workflow_phase_event_ids") == 2
    assert await positions(database) == 3


async def test_a_write_refused_after_its_claim_retries_beside_the_next(database: str) -> None:
    # The earlier write claims, then is refused (an id stored with another payload); the
    # later one, which waited for that claim, is then claiming an id the earlier shares
    # and must give it up for the earlier's retry instead of holding it.
    stored = make_event("wf-r", duration_ms=1)
    shared = make_event("wf-r")
    async with await AuditSink.connect(database) as sink:
        await sink.apply("c", batch([stored], None, 1))
        second, turn = await later_first(sink, batch([shared, make_event("wf-r")], 4, 6))
        clash = msgspec.structs.replace(stored, duration_ms=2)
        with pytest.raises(ConflictingEventsError):
            await bounded(
                sink.apply_in_turn("c", batch([make_event("wf-r"), clash, shared], 1, 4), turn)
            )
        await bounded(sink.apply_in_turn("c", batch([make_event("wf-r"), shared], 1, 4), turn))
        turn.settle(True)
        with pytest.raises(EarlierWriteFailedError):
            await bounded(second)
    assert await count_rows(database) == 4
    assert await positions(database) == 4


async def test_two_writes_into_a_month_without_a_partition(database: str) -> None:
    # Past the months kept ahead: each write must create the partition. The later one
    # waits for the earlier to commit first: creators take one advisory lock, which the
    # earlier one would otherwise wait for while the later waits for its claim.
    far = datetime.now(UTC).replace(day=10) + timedelta(days=800)
    events = [make_event("wf-m", timestamp=far + timedelta(minutes=i)) for i in range(4)]
    async with await AuditSink.connect(database) as sink:
        second, turn = await later_first(sink, batch(events[2:], 2, 4))
        await bounded(sink.apply_in_turn("c", batch(events[:2], None, 2), turn))
        turn.settle(True)
        await bounded(second)
    month = far.strftime("%Y%m")
    assert await count_rows(database, f"SELECT count(*) FROM workflow_phase_logs_p{month}") == 4
    assert await positions(database) == 4


async def test_no_letter_twice_when_a_write_is_read_again(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # One record per batch: the write of an event whose id is taken fails once (its
    # conflict is set aside, then it is written again), and the writes after it, which
    # sent their dead letters, give up and are read again. Their letters go out once.
    first = make_event("wf-d", duration_ms=1)
    clash = msgspec.structs.replace(first, duration_ms=2)
    records: list[Sent] = [
        (b"wf-d", encode_event(first), []),
        (b"wf-d", encode_event(clash), []),
        *[(b"wf-d", b"{not json", []) for _ in range(6)],
        (b"wf-d", encode_event(make_event("wf-d")), []),
    ]
    await send_in_order(settings, records)
    db = settings.database_url or ""
    caplog.set_level(logging.DEBUG, logger="streams.projector")
    async with audit_running(settings.model_copy(update={"batch_max_records": 1})) as projector:
        await eventually(
            lambda: count_rows(
                db, "SELECT coalesce(sum(next_offset), 0) FROM phasestream_consumer_positions"
            ),
            lambda n: n == len(records),
        )
    assert "the write before this one did not commit" in caplog.text  # it was read again
    letters = await read_to_highwater(settings, settings.dlq_topic)
    assert sorted(int(dict(m.headers)["phasestream.source.offset"]) for m in letters) == [
        *range(1, 8)
    ]
    assert projector.stats.dead_letters == 7
    assert await count_rows(db) == 2
