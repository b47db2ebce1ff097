"""A projection rebuilt from the log into a shadow table, then swapped in.

Steps, in order:
1. note each partition's end (the highwater a fetch reports) as the replay's target, and its
   log start;
2. create the shadow table (an empty copy of the live one);
3. project the topic from each partition's log start into the shadow with the
   projection's own sink code, under a temporary consumer name (its own stored positions)
   and without a consumer group (manual assignment: nothing joins, nothing is left behind
   on the broker), until every partition's stored position reaches its target;
4. carry the live rows the replay could not rebuild (their events are no longer in the
   log: retention, a broker that restarted empty) into the shadow unchanged, after saying
   how many and why; only ``discard`` leaves them out, said first too;
5. in one transaction: the shadow replaces the live table (views follow) and the replay's
   positions become the live consumer's, which resumes from there.
A failure before step 5 drops the shadow and leaves the live projection as it was.

Nothing with side effects runs: rollback, retries and notifications are other consumer
groups whose positions the replay never touches, and invalid records, dead-lettered on
their first pass, are not sent to the dead-letter topic again. The log side (steps 1 and
3) is the Kafka consumer core's, reached through ``ReplayWiring``, which the shell builds.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from models.errors import PhasestreamError
from models.ports import PartitionRef
from projections.carry_over import RowKeys, Unreplayable, carry_over, find_unreplayable
from projections.database import Connection, connection
from projections.positions import load_positions
from projections.shadow import create_shadow, drop_shadow, swap_in
from projections.sink_base import PostgresSink

POLL_S = 0.25
#: progress(done, total): events replayed so far and the target.
ProgressHook = Callable[[int, int], None]
#: notice(text): what the replay is about to keep or drop, said before it does so.
NoticeHook = Callable[[str], None]
#: A partition's (log start, end) when the replay began: what it replays.
Span = tuple[int, int]


class ReplayError(PhasestreamError):
    """The replay could not run (unknown projection, unreadable topic)."""


@dataclass(frozen=True, slots=True)
class Projection:
    """What one projection replays: its sink, table, source topic and live consumer."""

    sink_type: type[PostgresSink[Any]]
    table: str
    topic: str
    live_consumer: str
    keys: RowKeys
    #: Tables rebuilt and swapped with ``table`` (the audit's event ids).
    companions: tuple[str, ...] = ()
    #: What the shadow's sink is built with besides its table (e.g. the audit's retention).
    sink_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay did: events replayed, and the rows only the old table held."""

    replayed: int
    unreplayable: Unreplayable
    #: True: those rows were dropped (``discard``); False: carried over.
    discarded: bool
    #: Each partition's log start offset when the replay began.
    log_starts: dict[int, int]


class ReplayWiring(Protocol):
    """What a replay needs from outside Postgres, wired by the shell."""

    async def spans(self, topic: str) -> dict[PartitionRef, Span]:
        """Each partition's (log start, end) now."""
        ...

    def sink(self, table: str) -> AbstractAsyncContextManager[PostgresSink[Any]]:
        """The projection's sink writing ``table``, connected (waiting for Postgres)."""
        ...

    def projecting(
        self,
        sink: PostgresSink[Any],
        name: str,
        partitions: Sequence[PartitionRef],
    ) -> AbstractAsyncContextManager[asyncio.Task[None]]:
        """The projector of ``partitions`` into ``sink`` as consumer ``name``, running in
        a task; stopped (the batch in hand done) on exit."""
        ...


async def replay(
    dsn: str,
    projection: Projection,
    wiring: ReplayWiring,
    name: str,
    progress: ProgressHook | None = None,
    *,
    discard: bool = False,
    notice: NoticeHook | None = None,
) -> ReplayResult:
    """Rebuild ``projection`` from the log as consumer ``name``, keep what the log no
    longer holds (unless ``discard``), and swap it in."""
    async with connection(dsn) as conn:
        # Before the ends are read: a live row projected earlier came from below them.
        began: datetime = await conn.fetchval("SELECT now()")
        span = await wiring.spans(projection.topic)
        shadow = await create_shadow(conn, projection.table)
        for companion in projection.companions:
            await create_shadow(conn, companion)
        run = _Rebuild(projection, wiring, conn, shadow, name, began, discard, notice or _quiet)
        try:
            kept = await run.rebuild(span, progress)
            await swap_in(
                conn,
                table=projection.table,
                shadow=shadow,
                topic=projection.topic,
                live_consumer=projection.live_consumer,
                replay_consumer=name,
                companions=projection.companions,
                top_up=run.carry_over,
                live_since=began,
            )
        except BaseException:
            await drop_shadow(conn, shadow, name, projection.companions)
            raise
    # Records below the log start (retention) were never there to replay.
    return dataclasses.replace(kept, replayed=sum(end - start for start, end in span.values()))


def _quiet(_: str) -> None:
    return None


async def _wait_for(
    sink: PostgresSink[Any],
    name: str,
    refs: dict[PartitionRef, Span],
    task: asyncio.Task[None],
    progress: ProgressHook | None,
) -> None:
    """Until every partition's stored position reaches its end (a partition whose records
    retention deleted, start = end, has nothing to wait for)."""
    total = sum(max(end - start, 0) for start, end in refs.values())
    while True:
        stored = await load_positions(sink.pool, name, refs)
        done = sum(
            max(min(stored.get(ref, start), end) - start, 0) for ref, (start, end) in refs.items()
        )
        if progress is not None:
            progress(done, total)
        if done >= total:
            return
        if task.done():  # it stopped early: raise what stopped it
            task.result()
            raise ReplayError(f"{name} stopped at {done} of {total} events")
        await asyncio.sleep(POLL_S)


@dataclass(frozen=True, slots=True)
class _Rebuild:
    """Steps 3 and 4 for one replay: into ``shadow`` as consumer ``name``."""

    projection: Projection
    wiring: ReplayWiring
    conn: Connection
    shadow: str
    name: str
    began: datetime  #: Postgres' clock before the ends were read
    discard: bool
    notice: NoticeHook

    async def rebuild(
        self, span: dict[PartitionRef, Span], progress: ProgressHook | None
    ) -> ReplayResult:
        """The shadow gets the log's events, then the rows only the live table holds."""
        async with self.wiring.sink(self.shadow) as sink:
            async with self.wiring.projecting(sink, self.name, list(span)) as task:
                await _wait_for(sink, self.name, span, task, progress)
            result = await self.keep_unreplayable(
                {
                    ref.partition: start
                    for ref, (start, _) in sorted(span.items(), key=lambda item: item[0].partition)
                }
            )
            await sink.rebuilt()
        return result

    async def keep_unreplayable(self, by_partition: dict[int, int]) -> ReplayResult:
        """Say what the log no longer holds, then carry it over (or leave it out)."""
        table, keys = self.projection.table, self.projection.keys
        lost = await find_unreplayable(
            self.conn, table=table, shadow=self.shadow, keys=keys, before=self.began
        )
        if lost.rows:
            self.notice(
                describe_unreplayable(
                    lost, by_partition, self.projection.topic, discard=self.discard
                )
            )
        await self.carry_over(self.conn)
        return ReplayResult(0, lost, self.discard and lost.rows > 0, by_partition)

    async def carry_over(self, conn: Connection) -> int:
        """The live rows the shadow lacks, into it (the unreplayable ones unless discarding);
        again in the swap's transaction for what the live consumer wrote meanwhile."""
        return await carry_over(
            conn,
            table=self.projection.table,
            shadow=self.shadow,
            keys=self.projection.keys,
            before=self.began,
            discard=self.discard,
        )


def describe_unreplayable(
    lost: Unreplayable, starts: dict[int, int], topic: str, *, discard: bool
) -> str:
    """One line: how many rows, of which event times, and why the log lacks them."""
    span = (
        f"event times {lost.oldest:%Y-%m-%d %H:%M} .. {lost.newest:%Y-%m-%d %H:%M} UTC"
        if lost.oldest and lost.newest
        else "no event times"
    )
    moved = {p: s for p, s in starts.items() if s > 0}
    if moved:
        where = ", ".join(f"offset {s:,} on partition {p}" for p, s in moved.items())
        why = f"older than the log's start ({where} of {topic}): retention deleted their records"
    else:
        why = (
            f"not in the log (it starts at offset 0 on all {len(starts)} partitions of "
            f"{topic}: the broker no longer has them, e.g. the embedded broker restarted "
            "empty, or the topic was recreated)"
        )
    if discard:
        return f"dropping {lost.rows:,} rows {why}; {span} (--discard-unreplayable)"
    return (
        f"keeping {lost.rows:,} rows {why}, unchanged; {span}; "
        "--discard-unreplayable would drop them"
    )
