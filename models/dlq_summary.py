"""The dead-letter summary: counts by source topic, field and reason, folded one letter at a
time (a DLQ is read once, never held whole), and the totals by reason, by field and by source
topic derived from them. ``phasestream dlq summary`` and ``GET /api/dlq`` both print this.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from models.dead_letters import StoredLetter


@dataclass(slots=True)
class ReasonCount:
    """One line of the summary: letters of one source topic, field and reason."""

    source_topic: str
    field: str
    reason: str
    count: int
    oldest: datetime
    newest: datetime


Tally = dict[tuple[str, str, str], ReasonCount]


def count_letter(tally: Tally, letter: StoredLetter) -> None:
    """Add one letter to a running tally; memory grows with the distinct reasons only."""
    key = (letter.source_topic, letter.field, letter.reason)
    line = tally.get(key)
    if line is None:
        tally[key] = ReasonCount(*key, 1, letter.dlq_time, letter.dlq_time)
        return
    line.count += 1
    line.oldest = min(line.oldest, letter.dlq_time)
    line.newest = max(line.newest, letter.dlq_time)


def most_first(tally: Tally) -> list[ReasonCount]:
    return sorted(tally.values(), key=lambda r: (-r.count, r.source_topic, r.field, r.reason))


@dataclass(frozen=True, slots=True)
class TopicCount:
    """The letters of one source topic, with the oldest and newest dead-lettering time."""

    topic: str
    count: int
    oldest: datetime | None
    newest: datetime | None


@dataclass(frozen=True, slots=True)
class DlqSummary:
    """What a read of the DLQ found. ``total`` letters are in the topic, ``scanned`` were
    read (the newest, when a bound stopped the read early: then ``truncated``)."""

    total: int
    scanned: int
    truncated: bool
    lines: tuple[ReasonCount, ...]

    def by_reason(self) -> list[tuple[str, int]]:
        return _totals(self.lines, lambda line: line.reason)

    def by_field(self) -> list[tuple[str, int]]:
        return _totals(self.lines, lambda line: line.field)

    def topics(self) -> list[TopicCount]:
        found: dict[str, TopicCount] = {}
        for line in self.lines:
            seen = found.get(line.source_topic, TopicCount(line.source_topic, 0, None, None))
            found[line.source_topic] = TopicCount(
                seen.topic,
                seen.count + line.count,
                _min(seen.oldest, line.oldest),
                _max(seen.newest, line.newest),
            )
        return sorted(found.values(), key=lambda t: (-t.count, t.topic))

    def as_json(self) -> dict[str, Any]:
        """The shape of ``GET /api/dlq`` (phasestream/openapi.json: DlqSummary)."""
        return {
            "total": self.total,
            "scanned": self.scanned,
            "truncated": self.truncated,
            "by_reason": [{"reason": r, "count": n} for r, n in self.by_reason()],
            "by_field": [{"field": f, "count": n} for f, n in self.by_field()],
            "topics": [
                {
                    "topic": t.topic,
                    "count": t.count,
                    "oldest": _iso(t.oldest),
                    "newest": _iso(t.newest),
                }
                for t in self.topics()
            ],
        }


def summarise(letters: Iterable[StoredLetter], *, total: int | None = None) -> DlqSummary:
    """The summary of ``letters``, out of ``total`` in the topic (default: these are all)."""
    tally: Tally = {}
    scanned = 0
    for letter in letters:
        count_letter(tally, letter)
        scanned += 1
    return summary_of(tally, scanned, total)


def summary_of(tally: Tally, scanned: int, total: int | None = None) -> DlqSummary:
    # A topic can lose letters to retention while it is read: never report fewer in it
    # than were read.
    whole = scanned if total is None else max(total, scanned)
    return DlqSummary(whole, scanned, scanned < whole, tuple(most_first(tally)))


def _totals(
    lines: Iterable[ReasonCount], name: Callable[[ReasonCount], str]
) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for line in lines:
        counts[name(line)] = counts.get(name(line), 0) + line.count
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _min(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def _iso(when: datetime | None) -> str | None:
    # As the reports print times (projections/reports/core.py: plain), so the CLI and the
    # API give the same text.
    if when is None:
        return None
    return when.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
