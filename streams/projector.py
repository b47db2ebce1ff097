"""The batch consumer behind every exactly-once projection.

Per batch, in this order:
1. decode and validate; invalid records go to the dead-letter topic, and we wait for it;
2. hand the valid events and the positions the batch ends at to the sink, which writes
   rows and positions in one transaction (retried while the sink is unavailable);
3. commit the same offsets to Kafka, best effort: they only feed lag monitoring. The
   commits run in the background, one at a time, each with the newest offsets: on Apache
   Kafka a commit takes a broker round trip of several ms, which the next write need not
   wait for.
The next batch is fetched and decoded while one is written (Python decodes while Postgres
writes). Each write starts from the positions the previous one ends at. A PipelinedSink
takes up to ``writes_in_flight`` of them at once, ordered by a Turn each (see the audit
sink); any other sink one at a time. When a write fails, those after it fail too, and
every partition is read again from its stored position.
On assignment, each partition seeks to the position the sink stored (or the beginning).
That seek happens in the consuming loop, not in the rebalance callback: aiokafka starts
fetching as soon as partitions are assigned, so records of a partition are dropped until
its seek is done (aiokafka itself discards what it fetched before a seek).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Generic, TypeAlias, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from models.errors import (
    ConflictingEventsError,
    EarlierWriteFailedError,
    InvalidEventError,
    LostRecordsError,
    RejectedRecordError,
    SinkUnavailableError,
    StalePositionError,
)
from models.ports import Batch, PartitionRef, PipelinedSink, PositionedSink, PositionMove, Turn
from streams.backoff import Backoff, retry_unavailable
from streams.consumer_core import Rebalance, lag, send_dead_letters
from streams.consumer_stop import getmany_or_stop
from streams.dead_letters import DeadLetter, DeadLetters
from streams.decoding import Decoded, Decoder, dead_letter, decode_one, decode_records, without
from streams.progress import ConsumerStats

log = logging.getLogger(__name__)
T = TypeVar("T")
#: Per partition, the offset a write starts from (None: no position stored yet).
Starts: TypeAlias = "dict[TopicPartition, int | None]"


@dataclass(frozen=True, slots=True)
class ProjectorConfig(Generic[T]):
    name: str  # the consumer group, also the owner of the stored positions
    topic: str
    max_records: int
    max_wait_ms: int
    decoder: Decoder[T]
    event_time: Callable[[T], datetime]
    #: Called with each batch's events once they are durable (e.g. to count them).
    on_applied: Callable[[Sequence[T]], None] | None = None
    #: Records deleted before they were read (retention): "fail" raises, "skip" goes on.
    on_lost_records: str = "fail"
    #: Writes at once, for a sink that overlaps them (a PipelinedSink); else one.
    writes_in_flight: int = 1


def _ref(tp: TopicPartition) -> PartitionRef:
    return PartitionRef(tp.topic, tp.partition)


def _tp(letter: DeadLetter) -> TopicPartition:
    return TopicPartition(letter.topic, letter.partition)


@dataclass(frozen=True, slots=True)
class _Write:
    task: asyncio.Task[bool]  # whether it made its batch durable
    turn: Turn


async def _settle_all(writing: deque[_Write]) -> None:
    """Wait for every write in flight. All are awaited even when one raises (none keeps a
    connection after a stop); the first error is raised after."""
    results = await asyncio.gather(*(w.task for w in writing), return_exceptions=True)
    writing.clear()
    for result in results:
        if isinstance(result, BaseException):
            raise result


class Projector(Generic[T]):
    """Feeds one topic into a PositionedSink with exactly-once effect."""

    def __init__(
        self,
        *,
        consumer: AIOKafkaConsumer,
        sink: PositionedSink[T],
        dead_letters: DeadLetters,
        config: ProjectorConfig[T],
        backoff: Backoff,
        stats: ConsumerStats,
    ) -> None:
        self._consumer = consumer
        self._sink = sink
        self._dlq = dead_letters
        self._config = config
        self._backoff = backoff
        self.stats = stats
        # Partitions whose stored position is loaded and sought: their expected next offset.
        self._expected: dict[TopicPartition, int | None] = {}
        self._pending: set[TopicPartition] = set()
        # Per partition, the offset the next fetched record should have (None: any).
        self._fetch_next: dict[TopicPartition, int | None] = {}
        self._newest: dict[TopicPartition, datetime] = {}  # event time, per partition
        self._stop = asyncio.Event()
        # Offsets written to the sink and not yet committed to Kafka; the committing task.
        self._uncommitted: dict[TopicPartition, int] = {}
        self._committing: asyncio.Task[None] | None = None
        # Checked once: isinstance of a runtime-checkable Protocol inspects every member.
        self._pipelined = sink if isinstance(sink, PipelinedSink) else None
        self._depth = config.writes_in_flight if self._pipelined is not None else 1
        # Per partition, where the newest write in flight ends: the next one starts there.
        self._queued: dict[TopicPartition, int] = {}
        # Per partition, the offsets whose dead letter was sent at or past its position.
        self._lettered: dict[TopicPartition, set[int]] = {}

    @property
    def config(self) -> ProjectorConfig[T]:
        return self._config

    def stop(self) -> None:
        """Ask the loop to end after the batch in hand (safe to call twice)."""
        self._stop.set()

    def subscribe(self) -> None:
        self._consumer.subscribe(
            [self._config.topic], listener=Rebalance(assigned=self.assigned, revoked=self.forget)
        )

    async def run(self) -> None:
        """Fetch and decode a batch while earlier ones are written."""
        writing: deque[_Write] = deque()
        try:
            while not self._stop.is_set():
                if self._pending:
                    await self._settle(writing)
                    await self.seek_to_stored(self._pending)
                fetched = await getmany_or_stop(
                    self._consumer,
                    self._stop,
                    timeout_ms=self._config.max_wait_ms,
                    max_records=self._config.max_records,
                )
                await self._check_continuity(fetched)
                batch = {
                    tp: await decode_records(recs, self._config.decoder)
                    for tp, recs in fetched.items()
                    if recs and tp in self._expected
                }
                if not await self._make_room(writing):
                    # One failed, and those after it with it: re-read from the stored
                    # positions, this batch too.
                    await self._settle(writing)
                    self.assigned(batch)
                elif batch := {tp: d for tp, d in batch.items() if tp in self._expected}:
                    writing.append(self._start(batch, writing[-1].turn if writing else None))
                self.stats.observe_lag(self._lag())
        finally:
            await self._settle(writing)
            if self._committing is not None:  # the newest offsets reach Kafka before a stop
                await self._committing

    async def _make_room(self, writing: deque[_Write]) -> bool:
        """Wait until fewer than ``writes_in_flight`` writes are in flight; False as soon as
        one that ended had failed."""
        while writing and (len(writing) >= self._depth or writing[0].task.done()):
            if not await writing.popleft().task:
                return False
        return True

    async def _settle(self, writing: deque[_Write]) -> None:
        try:
            await _settle_all(writing)
        finally:
            self._queued.clear()

    def _start(self, batch: dict[TopicPartition, Decoded[T]], after: Turn | None) -> _Write:
        starts = {tp: self._queued.get(tp, self._expected.get(tp)) for tp in batch}
        self._queued.update({tp: d.next_offset for tp, d in batch.items()})
        turn = Turn(after)
        return _Write(asyncio.create_task(self._write_in_turn(batch, starts, turn)), turn)

    async def _write_in_turn(
        self, batch: dict[TopicPartition, Decoded[T]], starts: Starts, turn: Turn
    ) -> bool:
        written = False
        try:
            written = await self.write(batch, starts, turn)
            return written
        finally:
            turn.settle(written)

    async def write(
        self, batch: dict[TopicPartition, Decoded[T]], starts: Starts, turn: Turn
    ) -> bool:
        """Make one decoded batch durable; False if it was not (its partitions re-seek).

        ``starts``: each partition's offset before the batch. Order: dead letters
        (awaited), then rows and positions in one sink transaction, then the Kafka commit
        (best effort, for lag monitoring only).
        """
        letters = [letter for d in batch.values() for letter in d.letters]
        await self._send_letters(letters)
        began = time.monotonic()
        try:
            decoded = await self._apply_refusing(batch, starts, turn)
        except RejectedRecordError as exc:
            log.warning(
                "%s: the sink refused a batch (%s); applying it one record at a time",
                self._config.name,
                exc,
            )
            return await self._write_one_by_one(batch, starts, turn)
        except StalePositionError as exc:
            return self._stale(batch, exc)
        except SinkUnavailableError as exc:
            return self._unwritten_at_stop(exc)
        self._advance(decoded.moves)
        # Each move carries its partition's newest event time: one pass over the events.
        newest = {ref: m.last_event_at for ref, m in decoded.moves.items() if m.last_event_at}
        self._note_newest(newest)
        self._applied(decoded.events, time.monotonic() - began, max(newest.values(), default=None))
        self._commit_soon(decoded.moves)
        return True

    async def _write_one_by_one(
        self, batch: dict[TopicPartition, Decoded[T]], starts: Starts, turn: Turn
    ) -> bool:
        try:
            await self._apply_one_by_one(batch, starts, turn)
        except StalePositionError as exc:
            return self._stale(batch, exc)
        except SinkUnavailableError as exc:
            return self._unwritten_at_stop(exc)
        self._note_newest(
            {_ref(tp): self._newest_of(d.events) for tp, d in batch.items() if d.events}
        )
        self._commit_soon({_ref(tp): PositionMove(None, d.next_offset) for tp, d in batch.items()})
        return True

    def _stale(self, batch: Mapping[TopicPartition, Decoded[T]], exc: StalePositionError) -> bool:
        if isinstance(exc, EarlierWriteFailedError):
            log.debug("%s: %s; re-reading stored positions", self._config.name, exc)
        else:
            log.warning("%s: %s; re-reading stored positions", self._config.name, exc)
        self.assigned(batch)
        return False

    def _unwritten_at_stop(self, exc: SinkUnavailableError) -> bool:
        if not self._stop.is_set():
            raise exc
        log.info(
            "%s: stopping; the batch in hand was not written and will be read again",
            self._config.name,
        )
        return False

    async def _apply_refusing(
        self, batch: dict[TopicPartition, Decoded[T]], starts: Starts, turn: Turn
    ) -> Batch[T]:
        """Apply the batch; events the sink refuses as conflicting are dead-lettered first
        and the rest applied again (so their positions never move before their letters)."""
        while True:
            decoded = Batch(
                {_ref(tp): d.events for tp, d in batch.items()},
                {
                    _ref(tp): self._move(tp, starts[tp], d.next_offset, d.events)
                    for tp, d in batch.items()
                },
            )
            try:
                await self._apply(decoded, turn)
                return decoded
            except ConflictingEventsError as exc:
                batch = await self._set_aside(batch, exc)

    async def _set_aside(
        self, batch: dict[TopicPartition, Decoded[T]], refusal: ConflictingEventsError
    ) -> dict[TopicPartition, Decoded[T]]:
        letters, kept = [], {}
        for tp, decoded in batch.items():
            indexes = {i for ref, i in refusal.refused if ref == _ref(tp)}
            letters += [
                dead_letter(decoded.origins[i], InvalidEventError("event_id", refusal.reason))
                for i in sorted(indexes)
            ]
            kept[tp] = without(decoded, indexes)
        if not letters:  # nothing we can set aside: a sink bug, not a data error
            raise RejectedRecordError(f"the sink refused unknown events: {refusal}")
        log.warning(
            "%s: %d events dead-lettered: event_id %s",
            self._config.name,
            len(letters),
            refusal.reason,
        )
        await self._send_letters(letters)
        return kept

    async def _send_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Send the letters not sent before: a write that failed after sending its letters
        (or the write before it failed) is read again from the stored position."""
        fresh = [
            letter for letter in letters if letter.offset not in self._lettered.get(_tp(letter), ())
        ]
        await send_dead_letters(self._dlq, self.stats, fresh)
        for letter in fresh:
            self._lettered.setdefault(_tp(letter), set()).add(letter.offset)

    async def _check_continuity(self, fetched: Mapping[TopicPartition, Sequence[Any]]) -> None:
        """Raise LostRecordsError (or log and count, with on_lost_records=skip) when a
        partition's records resume past where they should: the consumer was reset to the
        log start because retention deleted what it had not read. A jump within the log
        (compaction, transaction markers) loses nothing and passes."""
        for tp, records in fetched.items():
            if not records or tp not in self._expected:
                continue
            wanted = self._fetch_next.get(tp)
            self._fetch_next[tp] = records[-1].offset + 1
            if wanted is None or records[0].offset <= wanted:
                continue
            log_start = (await self._consumer.beginning_offsets([tp]))[tp]
            if log_start <= wanted:
                continue
            lost = LostRecordsError(self._config.name, tp.topic, tp.partition, wanted, log_start)
            if self._config.on_lost_records != "skip":
                raise lost
            log.error("%s (skipped: PHASESTREAM_ON_LOST_RECORDS=skip)", lost)
            self.stats.lost(_ref(tp), lost.count)

    def _move(
        self, tp: TopicPartition, start: int | None, next_offset: int, events: Sequence[T]
    ) -> PositionMove:
        # highwater and last_event_at are stored for the freshness view only.
        return PositionMove(
            start,
            next_offset,
            highwater=self._consumer.highwater(tp),
            last_event_at=self._newest_of(events),
        )

    def _newest_of(self, events: Sequence[T]) -> datetime | None:
        return max(map(self._config.event_time, events), default=None)

    def _note_newest(self, newest: Mapping[PartitionRef, datetime | None]) -> None:
        for ref, when in newest.items():
            if when is not None:
                tp = TopicPartition(ref.topic, ref.partition)
                self._newest[tp] = max(when, self._newest.get(tp, when))

    def watermarks(self, now: datetime) -> dict[int, datetime]:
        """The stream's time per owned partition: ``now`` where everything fetched is
        applied, else the newest event time applied there (none yet: no mark)."""
        marks = {}
        for tp, position in self._expected.items():
            highwater = self._consumer.highwater(tp)
            if highwater is not None and (position or 0) >= highwater:
                marks[tp.partition] = now
            elif tp in self._newest:
                marks[tp.partition] = self._newest[tp]
        return marks

    def _applied(self, events: Sequence[T], seconds: float, newest: datetime | None) -> None:
        self.stats.applied(len(events), newest, seconds)
        if self._config.on_applied is not None and events:
            self._config.on_applied(events)

    async def _apply(self, batch: Batch[T], turn: Turn) -> None:
        sink, name = self._pipelined, self._config.name
        await retry_unavailable(
            lambda: (
                self._sink.apply(name, batch)
                if sink is None
                else sink.apply_in_turn(name, batch, turn)
            ),
            self._backoff,
            f"{self._config.name}: writing a batch",
            self._stop,
        )

    async def _apply_one_by_one(
        self, batch: Mapping[TopicPartition, Decoded[T]], starts: Starts, turn: Turn
    ) -> None:
        # Slow path, taken only when the sink refuses data that passed validation: find the
        # records it refuses, dead-letter them, and keep every other record.
        for tp, decoded in batch.items():
            start = starts[tp]
            for record in decoded.records:
                single: Decoded[T] = Decoded([record])
                decode_one(record, single, self._config.decoder)
                move = self._move(tp, start, record.offset + 1, single.events)
                try:
                    await self._apply(Batch.single(_ref(tp), single.events, move), turn)
                    self._applied(single.events, 0.0, move.last_event_at)
                except RejectedRecordError as exc:
                    refused = InvalidEventError("$", f"refused by the sink: {exc}")
                    await self._send_letters([dead_letter(record, refused)])
                    move = replace(move, last_event_at=None)  # nothing of it was applied
                    await self._apply(Batch.single(_ref(tp), [], move), turn)
                self._advance({_ref(tp): move})
                start = move.next_offset

    def _advance(self, moves: Mapping[PartitionRef, PositionMove]) -> None:
        # Two writes in flight may end in either order: a partition only moves forward.
        for ref, move in moves.items():
            tp = TopicPartition(ref.topic, ref.partition)
            if tp in self._expected:  # else it was revoked while the batch was written
                self._expected[tp] = max(move.next_offset, self._expected[tp] or 0)
            if sent := self._lettered.get(tp):  # those below the stored position are done
                self._lettered[tp] = {offset for offset in sent if offset >= move.next_offset}

    def _commit_soon(self, moves: Mapping[PartitionRef, PositionMove]) -> None:
        for ref, move in moves.items():
            tp = TopicPartition(ref.topic, ref.partition)
            self._uncommitted[tp] = max(move.next_offset, self._uncommitted.get(tp, 0))
        if self._committing is None or self._committing.done():
            self._committing = asyncio.create_task(self._commit_uncommitted())

    async def _commit_uncommitted(self) -> None:
        while self._uncommitted:
            offsets, self._uncommitted = self._uncommitted, {}
            try:
                await self._consumer.commit(offsets)
            except KafkaError as exc:  # the sink holds the truth; a lost commit skews lag
                log.debug("%s: Kafka commit failed (%s); lag may read high", self._config.name, exc)

    async def seek_to_stored(self, partitions: Iterable[TopicPartition]) -> None:
        tps = list(partitions)
        self._pending.difference_update(tps)
        try:
            stored = await retry_unavailable(
                lambda: self._sink.positions(self._config.name, [_ref(tp) for tp in tps]),
                self._backoff,
                f"{self._config.name}: reading stored positions",
                self._stop,
            )
        except SinkUnavailableError:
            if not self._stop.is_set():
                raise
            # Stopping: the partitions stay pending (nothing is read from them unsought).
            self._pending.update(tps)
            log.info("%s: stopping; positions not read, Postgres unavailable", self._config.name)
            return
        assignment = self._consumer.assignment()
        for tp in tps:
            if tp not in assignment:  # revoked while we read the positions
                continue
            position = stored.get(_ref(tp))
            self._expected[tp] = position
            self._fetch_next[tp] = position
            if position is None:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, position)
        log.info(
            "%s: %d partitions at stored positions %s",
            self._config.name,
            len(tps),
            {f"{tp.topic}[{tp.partition}]": stored.get(_ref(tp), 0) for tp in tps},
        )

    def assigned(self, partitions: Iterable[TopicPartition]) -> None:
        """Mark partitions to be sought to their stored positions before they are read."""
        for tp in partitions:
            self._expected.pop(tp, None)
            self._pending.add(tp)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._expected.pop(tp, None)
            self._uncommitted.pop(tp, None)  # no longer ours to commit
            self._queued.pop(tp, None)
            self._lettered.pop(tp, None)
            self._pending.discard(tp)

    def _lag(self) -> dict[PartitionRef, int]:
        return lag(self._consumer, self._expected)
