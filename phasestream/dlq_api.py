"""``GET /api/dlq``: the dead-letter summary of ``phasestream dlq summary``, over HTTP.

A request must not let a stranger hold the broker or the server: each answer reads at most
PHASESTREAM_DLQ_SUMMARY_MAX_LETTERS letters, one scan runs at a time, a request waits at most
PHASESTREAM_DLQ_SUMMARY_TIMEOUT_S (for the scan and for the queue before it), and an answer
(or a failure) is reused for PHASESTREAM_DLQ_SUMMARY_CACHE_S, so a dashboard that polls does
not open a Kafka client per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiokafka.errors import KafkaError

from models.dlq_summary import DlqSummary
from models.errors import PhasestreamError
from phasestream.kafka_cluster import check_kafka, kafka_cluster
from phasestream.settings import Settings
from streams.dlq_scan import summarise_letters

Scan = Callable[[], Awaitable[DlqSummary]]


class DlqUnavailableError(PhasestreamError):
    """The dead-letter topic could not be read; the message says why and what to check."""

    retriable = True


@dataclass(frozen=True, slots=True)
class _Answer:
    at: float
    summary: DlqSummary | None
    error: str | None


class SummaryCache:
    """The last answer, or failure, reused while fresh; at most one scan at a time."""

    def __init__(self, scan: Scan, *, timeout_s: float, fresh_s: float, what: str) -> None:
        self._scan, self._timeout_s, self._fresh_s, self._what = scan, timeout_s, fresh_s, what
        self._lock = asyncio.Lock()
        self._last: _Answer | None = None

    async def summary(self) -> DlqSummary:
        """The summary; raises DlqUnavailableError (with the cause) when it cannot be read."""
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                await self._lock.acquire()
        except TimeoutError:
            raise DlqUnavailableError(
                self._too_slow("another read of it was still running")
            ) from None
        try:
            if self._last is None or time.monotonic() - self._last.at >= self._fresh_s:
                self._last = await self._answer(deadline)
            last = self._last
        finally:
            self._lock.release()
        if last.summary is None:
            raise DlqUnavailableError(last.error or f"{self._what} could not be read")
        return last.summary

    async def _answer(self, deadline: float) -> _Answer:
        error: str | None = None
        try:
            async with asyncio.timeout_at(deadline):
                return _Answer(time.monotonic(), await self._scan(), None)
        except TimeoutError:
            error = self._too_slow("the broker did not answer in time")
        except KafkaError as exc:
            error = f"{self._what} could not be read ({type(exc).__name__}: {exc})"
        except PhasestreamError as exc:
            error = f"{self._what}: {exc}"
        return _Answer(time.monotonic(), None, error)

    def _too_slow(self, why: str) -> str:
        return (
            f"{self._what} could not be read within {self._timeout_s:g} s ({why}); "
            "check the broker, or raise PHASESTREAM_DLQ_SUMMARY_TIMEOUT_S"
        )


def summary_cache(settings: Settings) -> SummaryCache:
    async def scan() -> DlqSummary:
        await check_kafka(settings)
        return await summarise_letters(
            kafka_cluster(settings), settings.dlq_topic, most=settings.dlq_summary_max_letters
        )

    return SummaryCache(
        scan,
        timeout_s=settings.dlq_summary_timeout_s,
        fresh_s=settings.dlq_summary_cache_s,
        what=f"the dead-letter topic {settings.dlq_topic} at {settings.bootstrap_servers}",
    )
