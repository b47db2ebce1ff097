"""The composition root: every consumer a process can run (`phasestream run
audit|sla|metrics|rollback|notify|all`) assembled from settings, and the HTTP app beside them.

The parts (sinks connected, projectors, dead letters) come from ``wiring``; the pure
decisions from ``models/``; the delivery adapters from ``phasestream/delivery/``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from models.command_codec import decode_command
from models.commands import RollbackCommand
from models.events import PhaseEvent
from models.notifications.dedup import Deduplicator
from models.notifications.rate_limit import RateLimiter
from models.ports import OutboxItem
from models.rollback import RetryPolicy, RollbackPolicy
from models.running import phase_loads
from models.sla.violation import SlaViolation
from models.sla.violation_codec import decode_violation
from phasestream import health
from phasestream.api import attach_api
from phasestream.dashboard import attach_dashboard
from phasestream.delivery.dispatch import Dispatcher
from phasestream.delivery.email import EmailSender, SmtpConfig
from phasestream.delivery.hub import WebSocketHub
from phasestream.delivery.metrics import NotifyMetrics
from phasestream.delivery.sink import AlertSink, Sender
from phasestream.delivery.slack import SlackSender
from phasestream.guide import RUN_RESET, ready_block
from phasestream.http import build_app, serving
from phasestream.http_auth import HttpAccess, attach_refusal, token_verifier
from phasestream.kafka_cluster import check_kafka, kafka_cluster
from phasestream.logs import tune_gc
from phasestream.settings import Settings
from phasestream.wiring import (
    Runtime,
    StoppedWaiting,
    connected,
    consumer_options,
    dead_letters,
    drive,
    phase_event_decoder,
    phase_event_time,
    projector,
)
from projections.audit_sink import AuditSink
from projections.metrics_sink import MetricsDataSink, open_phase_counts, open_phase_starts
from projections.outbox import outbox, violation_outbox
from projections.rollback_commander import RollbackCommander
from projections.sla.monitor import SlaMonitor
from projections.sla.thresholds import load_thresholds
from projections.sla.violations import ViolationSink
from streams.consumer_core import kafka_consumer
from streams.consumer_stop import stop_consumer
from streams.kafka import producer_config
from streams.notifier import NotificationConsumer, notifier_decoders
from streams.progress import ConsumerStats, PipelineObserver
from streams.projector import Projector
from streams.prometheus import CommandMetrics, PhaseMetrics, ViolationMetrics
from streams.relay import OutboxRelay
from streams.timers import check_overdue, release_retries

log = logging.getLogger(__name__)
GAUGE_REFRESH_S = 5.0


@contextlib.asynccontextmanager
async def audit_projector(
    settings: Settings,
    observer: PipelineObserver | None = None,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[Projector[PhaseEvent]]:
    """The audit projector, started, subscribed, and stopped on exit."""
    async with (
        connected(
            AuditSink, settings, stop=stop, retention_months=settings.audit_retention_months
        ) as sink,
        projector(
            settings,
            name=settings.audit_consumer_group,
            topic=settings.phase_events_topic,
            sink=sink,
            decoder=phase_event_decoder(settings),
            event_time=phase_event_time,
            observer=observer,
        ) as running,
    ):
        yield running


async def audit(rt: Runtime) -> None:
    """Phase events into workflow_phase_logs, exactly once."""
    rt.pipeline.register(rt.settings.audit_consumer_group)
    async with audit_projector(rt.settings, rt.pipeline, rt.stop) as running:
        await drive(running, rt.stop, rt.settings.progress_interval_s)


def _violation_time(violation: SlaViolation) -> datetime:
    return violation.detected_at


async def sla(rt: Runtime) -> None:
    """The SLA monitor (state, overdue timer, outbox relay) and the violations projection."""
    s = rt.settings
    counter = ViolationMetrics(rt.registry)
    for name in (s.sla_consumer_group, s.sla_violations_consumer_group):
        rt.pipeline.register(name)
    producer = AIOKafkaProducer(
        **producer_config(
            kafka_cluster(s),
            client_id=f"{s.sla_consumer_group}-relay",
            linger_ms=s.producer_linger_ms,
            idempotent=s.kafka_idempotent_producer,
        )
    )
    async with (
        connected(SlaMonitor, s, stop=rt.stop, reload_s=s.sla_thresholds_reload_s) as state,
        connected(ViolationSink, s, stop=rt.stop) as sink,
        projector(
            s,
            name=s.sla_consumer_group,
            topic=s.phase_events_topic,
            sink=state,
            decoder=phase_event_decoder(s),
            event_time=phase_event_time,
            observer=rt.pipeline,
        ) as monitor,
        projector(
            s,
            name=s.sla_violations_consumer_group,
            topic=s.sla_violations_topic,
            sink=sink,
            decoder=decode_violation,
            event_time=_violation_time,
            on_applied=counter.observe,
            observer=rt.pipeline,
        ) as violations,
    ):
        await producer.start()
        try:
            relay = OutboxRelay(
                violation_outbox(state.pool),
                producer,
                s.sla_violations_topic,
                cluster=kafka_cluster(s),
                interval_s=s.outbox_relay_interval_ms / 1000,
            )
            async with asyncio.TaskGroup() as group:
                group.create_task(drive(monitor, rt.stop, rt.settings.progress_interval_s))
                group.create_task(drive(violations, rt.stop, rt.settings.progress_interval_s))
                group.create_task(relay.run(rt.stop))
                group.create_task(
                    check_overdue(
                        state,
                        monitor,
                        grace_ms=s.sla_grace_ms,
                        interval_s=s.sla_check_interval_ms / 1000,
                        early_end_ttl_s=s.sla_early_end_ttl_s,
                        stop=rt.stop,
                    )
                )
        finally:
            await producer.stop()


async def metrics(rt: Runtime) -> None:
    """Phase events into metrics_data (exactly once) and into the Prometheus metrics."""
    s = rt.settings
    phase_metrics = PhaseMetrics(rt.registry)
    rt.pipeline.register(s.metrics_consumer_group)
    async with (
        connected(MetricsDataSink, s, stop=rt.stop) as sink,
        projector(
            s,
            name=s.metrics_consumer_group,
            topic=s.phase_events_topic,
            sink=sink,
            decoder=phase_event_decoder(s),
            event_time=phase_event_time,
            on_applied=phase_metrics.observe,
            observer=rt.pipeline,
        ) as running,
        asyncio.TaskGroup() as group,
    ):
        group.create_task(drive(running, rt.stop, rt.settings.progress_interval_s))
        group.create_task(_refresh_gauges(sink, phase_metrics, s.running_at_risk_share, rt.stop))


async def _refresh_gauges(
    sink: MetricsDataSink, phase_metrics: PhaseMetrics, at_risk_share: float, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        try:
            async with sink.pool.acquire() as conn:
                thresholds = await load_thresholds(conn)
                phase_metrics.set_gauges(await open_phase_counts(conn), thresholds)
                phase_metrics.set_running(
                    phase_loads(
                        await open_phase_starts(conn), thresholds, datetime.now(UTC), at_risk_share
                    )
                )
        except (OSError, TimeoutError) as exc:
            log.debug("gauges not refreshed: %s", exc)
        except Exception as exc:  # a gauge refresh must never stop the consumer
            log.warning("gauges not refreshed: %s: %s", type(exc).__name__, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=GAUGE_REFRESH_S)


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
        log.info(
            "%s: notifying from %s and %s; alerts: %s",
            s.notify_consumer_group,
            s.rollback_commands_topic,
            s.sla_violations_topic,
            ", ".join(sink.name for sink in sinks) or "none configured (WebSocket only)",
        )
        async with asyncio.TaskGroup() as group:
            for sink in sinks:
                group.create_task(sink.run(rt.stop), name=f"notify-{sink.name}")
            progress = group.create_task(
                _log_progress(running, dispatcher, hub, sinks, s.progress_interval_s)
            )
            try:
                await running.run(rt.stop)
            finally:
                progress.cancel()
        log.info(
            "%s: stopped after %d notifications", s.notify_consumer_group, dispatcher.notifications
        )


def smtp_config(s: Settings) -> SmtpConfig | None:
    """None when e-mail alerts are not configured (no host or no recipients)."""
    recipients = tuple(r.strip() for r in s.smtp_to.split(",") if r.strip())
    if not s.smtp_host or not recipients:
        return None
    password = s.smtp_password
    return SmtpConfig(
        s.smtp_host,
        s.smtp_port,
        s.smtp_starttls,
        s.smtp_username,
        password.get_secret_value() if password is not None else None,
        s.smtp_from,
        recipients,
    )


def websocket_hub(s: Settings, registry: CollectorRegistry) -> WebSocketHub:
    """The /ws hub, checking tokens and bounding connections as the settings say."""
    return WebSocketHub(
        token_verifier(s),
        registry,
        max_connections=s.ws_max_connections,
        max_per_user=s.ws_max_connections_per_user,
    )


async def _senders(s: Settings, stack: contextlib.AsyncExitStack) -> list[Sender]:
    """The configured alert senders, opened on ``stack``."""
    senders: list[Sender] = []
    if s.slack_webhook_url is not None:
        senders.append(
            await stack.enter_async_context(SlackSender(s.slack_webhook_url.get_secret_value()))
        )
    smtp = smtp_config(s)
    if smtp is not None:
        senders.append(EmailSender(smtp))
    elif s.smtp_host:
        log.warning(
            "PHASESTREAM_SMTP_HOST is set but PHASESTREAM_SMTP_TO names no "
            "recipient: no e-mail alerts"
        )
    return senders


def _alert_sink(s: Settings, sender: Sender, metrics: NotifyMetrics) -> AlertSink:
    # Each sink de-duplicates and limits on its own: a Slack outage spends no e-mail budget.
    return AlertSink(
        sender,
        dedup=Deduplicator(s.notify_dedup_window_s),
        limiter=RateLimiter(s.notify_rate_limit_per_minute),
        metrics=metrics,
        max_attempts=s.notify_retry_max_attempts,
    )


async def _consumer(
    s: Settings,
    rt: Runtime,
    dispatcher: Dispatcher,
    metrics: NotifyMetrics,
    stack: contextlib.AsyncExitStack,
) -> NotificationConsumer:
    """The Kafka consumer and its dead-letter writer, started on ``stack``, subscribed."""
    name = s.notify_consumer_group
    dlq = await dead_letters(s, name, stack)
    # A new group starts at the end of the log: no history replayed to users (see
    # streams/notifier.py for why nothing is skipped after that).
    consumer = kafka_consumer(**{**consumer_options(s, name), "auto_offset_reset": "latest"})
    await consumer.start()
    stack.push_async_callback(stop_consumer, consumer, name)
    running = NotificationConsumer(
        consumer,
        dead_letters=dlq,
        decoders=notifier_decoders(s.rollback_commands_topic, s.sla_violations_topic),
        handler=dispatcher,
        stats=ConsumerStats(name, rt.pipeline),
        max_records=s.batch_max_records,
        max_wait_ms=s.batch_max_wait_ms,
        on_invalid=lambda topic, count: metrics.invalid.labels(topic).inc(count),
        on_assigned=metrics.assigned.set,
    )
    running.subscribe()
    return running


async def _log_progress(
    running: NotificationConsumer,
    dispatcher: Dispatcher,
    hub: WebSocketHub,
    sinks: Sequence[AlertSink],
    interval_s: float,
) -> None:
    """Every interval, when anything happened: one line for the consumer, one per sink."""
    before, since = (-1, -1), time.monotonic()
    while True:
        await asyncio.sleep(interval_s)
        now, stats = time.monotonic(), running.stats
        seen = (dispatcher.notifications + dispatcher.redelivered, stats.dead_letters)
        if seen != before:
            rate = max(0, seen[0] - max(0, before[0])) / (now - since)
            log.info(
                "%s: %d notifications (%.1f/s), %d redeliveries dropped, %d invalid, "
                "%d pushed, %d WebSocket connections, lag %d",
                stats.name,
                dispatcher.notifications,
                rate,
                dispatcher.redelivered,
                stats.dead_letters,
                dispatcher.pushed,
                hub.connections,
                stats.total_lag,
            )
            for sink in sinks:
                log.info(
                    "%s: %d delivered, %d failed attempts, %d suppressed, %d dropped, %d queued",
                    sink.name,
                    sink.delivered,
                    sink.failed_attempts,
                    sink.suppressed,
                    sink.dropped,
                    sink.queued,
                )
        before, since = seen, now


def rollback_policy(s: Settings) -> RollbackPolicy:
    return RollbackPolicy(
        s.rollback_enabled,
        s.rollback_max_per_workflow,
        RetryPolicy(
            s.retry_enabled,
            s.retry_interval_ms,
            s.retry_backoff_rate,
            s.retry_max_attempts,
            s.retry_max_delay_ms,
            s.retry_jitter == "full",
        ),
    )


async def rollback(rt: Runtime) -> None:
    """The rollback commander: rollbacks, rolled_back events, scheduled retries."""
    s = rt.settings
    rt.pipeline.register(s.rollback_consumer_group)
    counter = CommandMetrics(rt.registry)
    producer = AIOKafkaProducer(
        **producer_config(
            kafka_cluster(s),
            client_id=f"{s.rollback_consumer_group}-relay",
            linger_ms=s.producer_linger_ms,
            idempotent=s.kafka_idempotent_producer,
        )
    )
    async with (
        connected(
            RollbackCommander,
            s,
            stop=rt.stop,
            policy=rollback_policy(s),
            commands_topic=s.rollback_commands_topic,
            events_topic=s.phase_events_topic,
        ) as sink,
        projector(
            s,
            name=s.rollback_consumer_group,
            topic=s.phase_events_topic,
            sink=sink,
            decoder=phase_event_decoder(s),
            event_time=phase_event_time,
            observer=rt.pipeline,
        ) as running,
    ):
        await producer.start()
        try:
            relay = OutboxRelay(
                outbox(sink.pool),
                producer,
                s.rollback_commands_topic,
                cluster=kafka_cluster(s),
                interval_s=s.outbox_relay_interval_ms / 1000,
                on_published=lambda items: counter.observe(_commands(items, s)),
            )
            async with asyncio.TaskGroup() as group:
                group.create_task(drive(running, rt.stop, rt.settings.progress_interval_s))
                group.create_task(relay.run(rt.stop))
                group.create_task(
                    release_retries(sink, interval_s=s.retry_check_interval_ms / 1000, stop=rt.stop)
                )
        finally:
            await producer.stop()


def _commands(items: Sequence[OutboxItem], s: Settings) -> list[RollbackCommand]:
    return [
        decode_command(item.key, item.value)
        for item in items
        if item.topic == s.rollback_commands_topic
    ]


CONSUMERS: dict[str, Callable[[Runtime], Coroutine[Any, Any, None]]] = {
    "audit": audit,
    "sla": sla,
    "metrics": metrics,
    "rollback": rollback,
}
#: Every consumer `run all` and `dev` run; the notifier also needs the WebSocket hub.
ALL: tuple[str, ...] = (*CONSUMERS, "notify")


def http_app(
    s: Settings, registry: CollectorRegistry, access: HttpAccess, hub: WebSocketHub | None
) -> web.Application:
    """/metrics, /healthz, the analysts' API and dashboard (where ``access`` lets them be
    served), /ws when the notifier runs here."""

    def routes(app: web.Application) -> None:
        if access.serves_data:
            attach_api(app, s)
            attach_dashboard(app)
        else:
            attach_refusal(app, access)
        if hub is not None:
            hub.attach(app)

    return build_app(registry, health.checks(s), access, routes)


async def run_consumers(rt: Runtime, names: Sequence[str], *, reset: str = RUN_RESET) -> None:
    """Run the named consumers and the HTTP server until ``rt.stop`` is set; once it
    serves, log where everything is (``reset``: how to start again from nothing)."""
    s = rt.settings
    await check_kafka(s)  # a refused login or certificate stops here, in one line
    tune_gc()
    hub = websocket_hub(s, rt.registry) if "notify" in names else None

    access = HttpAccess.from_settings(s)
    access.log_mode()
    app = http_app(s, rt.registry, access, hub)
    async with serving(app, s.http_host, s.http_port) as port:
        rt.http_port = port
        log.info("running consumers: %s", ", ".join(names))
        log.info(
            "%s", ready_block(s.http_host, port, access, websocket=hub is not None, reset=reset)
        )
        async with asyncio.TaskGroup() as group:
            for name in names:
                work = notify(rt, hub) if hub and name == "notify" else CONSUMERS[name](rt)
                group.create_task(_until_stopped(name, work), name=name)


async def _until_stopped(name: str, work: Coroutine[Any, Any, None]) -> None:
    """Run one consumer; a stop asked before it could start ends it with one line."""
    try:
        await work
    except StoppedWaiting as stopped:
        log.info("%s: %s", name, stopped)
