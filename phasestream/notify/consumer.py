"""`phasestream run notify`: the notifier consumer, its alert sinks, and their progress."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from models.notifications.dedup import Deduplicator
from models.notifications.rate_limit import RateLimiter
from phasestream.kafka_cluster import kafka_cluster
from phasestream.notify.dispatch import Dispatcher
from phasestream.notify.email import EmailSender, SmtpConfig
from phasestream.notify.hub import WebSocketHub
from phasestream.notify.metrics import NotifyMetrics
from phasestream.notify.sink import AlertSink, Sender
from phasestream.notify.slack import SlackSender
from phasestream.settings import Settings
from phasestream.wiring import Runtime
from streams.consumer_stop import stop_consumer
from streams.dead_letters import DeadLetterWriter
from streams.kafka import consumer_config
from streams.notifier import NotificationConsumer, kafka_consumer, notifier_decoders
from streams.progress import ProjectorStats

log = logging.getLogger(__name__)


async def notify(rt: Runtime, hub: WebSocketHub) -> None:
    """Rollback commands and SLA violations to users' WebSockets (through ``hub``) and to
    the configured alert sinks, until ``rt.stop`` is set."""
    s = rt.settings
    metrics = NotifyMetrics(rt.registry)
    rt.pipeline.register(s.notify_consumer_group)
    async with contextlib.AsyncExitStack() as stack:
        sinks = [_alert_sink(s, sender, metrics) for sender in await _senders(s, stack)]
        dispatcher = Dispatcher(hub, sinks, metrics)
        running = await _consumer(s, rt, dispatcher, metrics, stack)
        log.info("%s: notifying from %s and %s; alerts: %s", s.notify_consumer_group,
                 s.rollback_commands_topic, s.sla_violations_topic,
                 ", ".join(sink.name for sink in sinks) or "none configured (WebSocket only)")
        async with asyncio.TaskGroup() as group:
            for sink in sinks:
                group.create_task(sink.run(rt.stop), name=f"notify-{sink.name}")
            progress = group.create_task(
                _log_progress(running, dispatcher, hub, sinks, s.progress_interval_s))
            try:
                await running.run(rt.stop)
            finally:
                progress.cancel()
        log.info("%s: stopped after %d notifications", s.notify_consumer_group,
                 dispatcher.notifications)


async def _senders(s: Settings, stack: contextlib.AsyncExitStack) -> list[Sender]:
    """The configured alert senders, opened on ``stack``."""
    senders: list[Sender] = []
    if s.slack_webhook_url is not None:
        senders.append(await stack.enter_async_context(
            SlackSender(s.slack_webhook_url.get_secret_value())))
    smtp = SmtpConfig.from_settings(s)
    if smtp is not None:
        senders.append(EmailSender(smtp))
    elif s.smtp_host:
        log.warning("PHASESTREAM_SMTP_HOST is set but PHASESTREAM_SMTP_TO names no "
                    "recipient: no e-mail alerts")
    return senders


def _alert_sink(s: Settings, sender: Sender, metrics: NotifyMetrics) -> AlertSink:
    # Each sink de-duplicates and limits on its own: a Slack outage spends no e-mail budget.
    return AlertSink(sender, dedup=Deduplicator(s.notify_dedup_window_s),
                     limiter=RateLimiter(s.notify_rate_limit_per_minute), metrics=metrics,
                     max_attempts=s.notify_retry_max_attempts)


async def _consumer(s: Settings, rt: Runtime, dispatcher: Dispatcher, metrics: NotifyMetrics,
                    stack: contextlib.AsyncExitStack) -> NotificationConsumer:
    """The Kafka consumer and its dead-letter writer, started on ``stack``, subscribed."""
    name = s.notify_consumer_group
    cluster = kafka_cluster(s)
    dlq = DeadLetterWriter(cluster, s.dlq_topic, name,
                           max_value_bytes=s.dlq_max_value_bytes,
                           idempotent=s.kafka_idempotent_producer)
    await dlq.start()
    stack.push_async_callback(dlq.stop)
    config = consumer_config(cluster, group_id=name,
                             session_timeout_ms=s.consumer_session_timeout_ms,
                             max_wait_ms=s.batch_max_wait_ms, max_records=s.batch_max_records)
    # A new group starts at the end of the log: no history replayed to users (see
    # streams/notifier.py for why nothing is skipped after that).
    consumer = kafka_consumer(**{**config, "auto_offset_reset": "latest"})
    await consumer.start()
    stack.push_async_callback(stop_consumer, consumer, name)
    running = NotificationConsumer(
        consumer, dead_letters=dlq,
        decoders=notifier_decoders(s.rollback_commands_topic, s.sla_violations_topic),
        handler=dispatcher, stats=ProjectorStats(name, rt.pipeline),
        max_records=s.batch_max_records, max_wait_ms=s.batch_max_wait_ms,
        on_invalid=lambda topic, count: metrics.invalid.labels(topic).inc(count),
        on_assigned=metrics.assigned.set)
    running.subscribe()
    return running


async def _log_progress(running: NotificationConsumer, dispatcher: Dispatcher,
                        hub: WebSocketHub, sinks: Sequence[AlertSink],
                        interval_s: float) -> None:
    """Every interval, when anything happened: one line for the consumer, one per sink."""
    before, since = (-1, -1), time.monotonic()
    while True:
        await asyncio.sleep(interval_s)
        now, stats = time.monotonic(), running.stats
        seen = (dispatcher.notifications + dispatcher.redelivered, stats.dead_letters)
        if seen != before:
            rate = max(0, seen[0] - max(0, before[0])) / (now - since)
            log.info("%s: %d notifications (%.1f/s), %d redeliveries dropped, %d invalid, "
                     "%d pushed, %d WebSocket connections, lag %d", stats.name,
                     dispatcher.notifications, rate, dispatcher.redelivered,
                     stats.dead_letters, dispatcher.pushed, hub.connections, stats.total_lag)
            for sink in sinks:
                log.info("%s: %d delivered, %d failed attempts, %d suppressed, %d dropped, "
                         "%d queued", sink.name, sink.delivered, sink.failed_attempts,
                         sink.suppressed, sink.dropped, sink.queued)
        before, since = seen, now
