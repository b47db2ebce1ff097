"""`phasestream dev`: the whole pipeline on the embedded default, on one machine."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from phasestream.consumers import ALL, run_consumers
from phasestream.demo import run_demo
from phasestream.guide import dev_reset
from phasestream.kafka_cluster import check_kafka, kafka_cluster
from phasestream.local_stack import (
    check_http_port,
    data_dir_lock,
    embedded_broker,
    embedded_postgres,
)
from phasestream.settings import EMBEDDED_HOST, Settings
from phasestream.wiring import (
    Runtime,
    create_topics,
    forget_lost_log,
    on_signals,
    run_migrations,
)
from streams.publisher import PhaseEventPublisher

log = logging.getLogger(__name__)


def run_dev(settings: Settings, *, demo: bool, demo_rate: float) -> None:
    """Start what is not configured, migrate, create topics, run every consumer.

    Refused before anything starts (and so before anything changes) when another stack
    runs on the data dir or the HTTP port is taken.
    """
    with contextlib.ExitStack() as services:
        services.enter_context(data_dir_lock(settings.data_dir))
        check_http_port(settings.http_host, settings.http_port)
        overrides: dict[str, object] = {}
        if settings.uses_embedded_kafka:
            overrides["kafka_bootstrap_servers"] = services.enter_context(
                embedded_broker(
                    EMBEDDED_HOST, settings.embedded_kafka_port, settings.data_dir / "broker.log"
                )
            )
        if settings.uses_embedded_postgres:
            overrides["database_url"] = services.enter_context(
                embedded_postgres(settings.postgres_dir)
            )
        if demo and "retry_enabled" not in settings.model_fields_set:
            # The demo shows retries and gave-ups too, unless PHASESTREAM_RETRY_ENABLED says no.
            overrides["retry_enabled"] = True
        resolved = settings.model_copy(update=overrides)
        asyncio.run(
            _run(resolved, demo=demo, demo_rate=demo_rate, fresh_log=settings.uses_embedded_kafka)
        )
    log.info("dev stack stopped")


async def _run(settings: Settings, *, demo: bool, demo_rate: float, fresh_log: bool) -> None:
    stop = asyncio.Event()
    on_signals(stop.set)
    await check_kafka(settings)  # before topics: a refused login is one line, no traceback
    await run_migrations(settings)
    if fresh_log:
        await forget_lost_log(settings)
    await create_topics(settings)
    runtime = Runtime(settings, stop)
    reset = dev_reset(settings.data_dir)
    tasks = [asyncio.create_task(run_consumers(runtime, list(ALL), reset=reset), name="consumers")]
    if demo:
        tasks.append(asyncio.create_task(_demo(settings, demo_rate, stop), name="demo"))
    log.info("running %s; press Ctrl-C to stop", ", ".join(t.get_name() for t in tasks))
    try:
        await asyncio.gather(*tasks)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _demo(settings: Settings, rate: float, stop: asyncio.Event) -> None:
    async with PhaseEventPublisher(
        kafka_cluster(settings),
        settings.phase_events_topic,
        linger_ms=settings.producer_linger_ms,
        idempotent=settings.kafka_idempotent_producer,
    ) as publisher:
        await run_demo(publisher, rate, stop)
