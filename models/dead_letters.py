"""Dead letters as an operator reads them back: where each came from, why, and a summary.

The dead-letter topic's record keeps the original key, value and headers; phasestream's
own headers (``phasestream.*``) say why and where from. These are plain functions over
those records, so the CLI and the API filter them the same way (the summary of them is
``models/dlq_summary.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

HEADER_PREFIX: Final = "phasestream."
#: How much of a value a listing shows.
PREVIEW_CHARS: Final = 120


@dataclass(frozen=True, slots=True)
class StoredLetter:
    """One record of the dead-letter topic, its headers read."""

    dlq_partition: int
    dlq_offset: int
    dlq_time: datetime
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    source_topic: str
    source_partition: int
    source_offset: int
    field: str
    reason: str
    consumer: str
    truncated: bool

    @property
    def source(self) -> str:
        return f"{self.source_topic}/{self.source_partition}/{self.source_offset}"

    def preview(self) -> str:
        if self.value is None:
            return "(no value)"
        text = self.value[: PREVIEW_CHARS * 4].decode("utf-8", errors="replace")
        return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def stored_letter(
    partition: int,
    offset: int,
    timestamp_ms: int,
    *,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]],
) -> StoredLetter:
    """Read phasestream's headers of one dead-letter record (missing ones read as empty)."""
    ours = {
        k[len(HEADER_PREFIX) :]: v.decode("utf-8", errors="replace")
        for k, v in headers
        if k.startswith(HEADER_PREFIX)
    }
    field = ours.get("field", "")
    reason = ours.get("reason", "")
    # The reason header reads "field: reason" (one header a Kafka UI shows whole).
    reason = reason.removeprefix(f"{field}: ") if field else reason
    return StoredLetter(
        dlq_partition=partition,
        dlq_offset=offset,
        dlq_time=datetime.fromtimestamp(timestamp_ms / 1000, UTC),
        key=key,
        value=value,
        headers=tuple(headers),
        source_topic=ours.get("source.topic", ""),
        source_partition=_int(ours.get("source.partition")),
        source_offset=_int(ours.get("source.offset")),
        field=field,
        reason=reason,
        consumer=ours.get("consumer", ""),
        truncated=ours.get("value.truncated") == "true",
    )


def _int(text: str | None) -> int:
    try:
        return int(text) if text is not None else -1
    except ValueError:
        return -1


@dataclass(frozen=True, slots=True)
class LetterFilter:
    """Which letters an operator asked for; an unset part selects everything."""

    reason: str | None = None
    since: datetime | None = None
    field: str | None = None

    def __call__(self, letter: StoredLetter) -> bool:
        if self.reason is not None and self.reason.lower() not in letter.reason.lower():
            return False
        if self.field is not None and letter.field != self.field:
            return False
        return self.since is None or letter.dlq_time >= self.since
