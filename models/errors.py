"""The project's error hierarchy: one root, types per failure, a ``retriable`` flag."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.ports import PartitionRef


class PhasestreamError(Exception):
    """Root of every error phasestream raises on purpose."""

    retriable: bool = False


class InvalidEventError(PhasestreamError):
    """An event that breaks the contract; ``field`` names the culprit, ``reason`` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class StalePositionError(PhasestreamError):
    """A sink's stored position moved under us: another consumer owns the partition now."""

    retriable = True


class EarlierWriteFailedError(StalePositionError):
    """A write overlapping the one before it gave up because that one did not commit: the
    positions it would move from were never stored, so its partitions are read again."""


class SinkUnavailableError(PhasestreamError):
    """The sink cannot be reached right now (e.g. Postgres restarting); retry later."""

    retriable = True


class SinkMisconfiguredError(PhasestreamError):
    """The sink refuses us for a reason retrying will not fix until an operator acts: a
    wrong database name, role or password, a missing privilege."""


class RejectedRecordError(PhasestreamError):
    """The sink refused a record for a reason retrying will not fix (a data error)."""


class ConflictingEventsError(RejectedRecordError):
    """Events the sink refuses because their id is already taken by a different event.

    ``refused`` holds (partition, index) pairs: the index is the event's position in that
    partition's events of the batch, so the consumer can dead-letter exactly those records
    and write the rest.
    """

    def __init__(self, refused: frozenset[tuple[PartitionRef, int]], reason: str) -> None:
        super().__init__(f"{len(refused)} events refused: {reason}")
        self.refused = refused
        self.reason = reason


class LostRecordsError(PhasestreamError):
    """Records of a partition were deleted (retention) before this consumer read them."""

    def __init__(
        self, consumer: str, topic: str, partition: int, first: int, log_start: int
    ) -> None:
        super().__init__(
            f"{consumer}: offsets {first}..{log_start - 1} of {topic}[{partition}] were "
            f"deleted from the topic before they were projected (retention?); they can no "
            f"longer be read. Restore them from elsewhere, or accept the loss with "
            f"PHASESTREAM_ON_LOST_RECORDS=skip"
        )
        self.topic = topic
        self.partition = partition
        self.count = log_start - first
