"""The notifier against the real broker, real WebSocket clients, a real HTTP receiver for
Slack and a real SMTP server (aiosmtpd) for e-mail."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from typing import Any, TypeVar

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiosmtpd.smtp import SMTP, Envelope, Session
from pydantic import SecretStr

from models.command_codec import encode_command
from models.commands import CommandKind, RollbackCommand, command_id
from models.notifications.wording import from_command, from_violation
from models.sla.violation import SlaViolation, ViolationKind, violation_id
from models.sla.violation_codec import encode_violation
from phasestream.auth import mint_token
from phasestream.consumers import notify, websocket_hub
from phasestream.delivery.hub import SEND_TIMEOUT_S, WebSocketHub
from phasestream.delivery.slack import slack_text
from phasestream.http import build_app, serving
from phasestream.http_auth import HttpAccess
from phasestream.kafka_cluster import kafka_cluster
from phasestream.settings import Settings
from phasestream.wiring import Runtime
from streams.kafka import producer_config
from streams.topics import ensure_topics
from tests.conftest import settings_env
from tests.topics import read_records
from tests.waiting import eventually

pytestmark = pytest.mark.integration
T = TypeVar("T")
SECRET = "integration-test-secret-of-at-least-32-bytes"
ALICE, BOB, CAROL = (str(uuid.UUID(int=n)) for n in (0xA11CE, 0xB0B, 0xCA201))


async def notify_settings(settings: Settings, **overrides: Any) -> Settings:
    """The test's settings plus its own rollback-commands topic and notifier group."""
    configured = settings.model_copy(
        update={
            "rollback_commands_topic": settings.phase_events_topic.replace(
                "phase-events", "rollback-commands"
            ),
            "notify_consumer_group": settings.audit_consumer_group.replace("-audit", "-notify"),
            "jwt_secret": SecretStr(SECRET),
            **overrides,
        }
    )
    await ensure_topics(
        kafka_cluster(configured),
        [configured.rollback_commands_topic],
        partitions=configured.topic_partitions,
    )
    return configured


@dataclass
class Notifier:
    rt: Runtime
    hub: WebSocketHub
    url: str

    def metric(self, name: str, **labels: str) -> float:
        return self.rt.registry.get_sample_value(name, labels) or 0.0


def polled(read: Callable[[], T]) -> Callable[[], Awaitable[T]]:
    """``read`` as the coroutine function ``eventually`` polls."""

    async def probe() -> T:
        return read()

    return probe


@contextlib.asynccontextmanager
async def hub_serving(settings: Settings) -> AsyncIterator[Notifier]:
    """/ws served as `phasestream run notify` serves it, without the consumer yet."""
    rt = Runtime(settings)
    hub = websocket_hub(settings, rt.registry)
    async with serving(
        build_app(rt.registry, {}, HttpAccess.from_settings(settings), hub.attach), "127.0.0.1", 0
    ) as port:
        yield Notifier(rt, hub, f"http://127.0.0.1:{port}")


@contextlib.asynccontextmanager
async def consuming(running: Notifier) -> AsyncIterator[None]:
    """The notifier consumer in this process, ready: both topics' partitions assigned and
    their start positions fixed, so nothing published from now on is missed."""
    task = asyncio.create_task(notify(running.rt, running.hub))

    async def assigned() -> float:
        if task.done():
            task.result()  # raises what stopped it
        return running.metric("phasestream_notify_assigned_partitions")

    try:
        await eventually(
            assigned,
            lambda n: n == 2 * running.rt.settings.topic_partitions,
            what="the notifier's partitions",
        )
        yield
    finally:
        running.rt.stop.set()
        await asyncio.wait_for(task, timeout=30)


@contextlib.asynccontextmanager
async def notifier_running(settings: Settings) -> AsyncIterator[Notifier]:
    async with hub_serving(settings) as running, consuming(running):
        yield running


def rollback(
    user: str, workflow: str, kind: CommandKind = CommandKind.ROLLBACK, attempt: int = 0
) -> RollbackCommand:
    failed = uuid.uuid4()
    return RollbackCommand(
        command_id(failed, kind, attempt),
        kind,
        workflow,
        uuid.UUID(user),
        failed,
        3,
        2,
        "TimeoutError: upstream",
        datetime.now(UTC),
        attempt,
    )


def overdue(user: str, workflow: str) -> SlaViolation:
    started, now = uuid.uuid4(), datetime.now(UTC)
    return SlaViolation(
        violation_id(started, ViolationKind.OVERDUE),
        ViolationKind.OVERDUE,
        workflow,
        uuid.UUID(user),
        4,
        started,
        now,
        now,
        95_000,
        90_000,
    )


async def publish(
    settings: Settings, items: Sequence[RollbackCommand | SlaViolation], topic: str | None = None
) -> None:
    producer = AIOKafkaProducer(
        **producer_config(kafka_cluster(settings), client_id="test-publisher", linger_ms=5)
    )
    await producer.start()
    try:
        for item in items:
            if isinstance(item, RollbackCommand):
                await producer.send_and_wait(
                    topic or settings.rollback_commands_topic, encode_command(item), key=item.key
                )
            else:
                await producer.send_and_wait(
                    topic or settings.sla_violations_topic, encode_violation(item), key=item.key
                )
    finally:
        await producer.stop()


async def publish_raw(settings: Settings, topic: str, key: bytes, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def websocket(
    session: aiohttp.ClientSession, url: str, user: str, *, in_query: bool = False
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A connection as ``user``, past the server's hello (so it is registered)."""
    token = mint_token(SECRET, user, 300)
    if in_query:
        connecting = session.ws_connect(f"{url}/ws", params={"token": token, "user_id": user})
    else:
        connecting = session.ws_connect(f"{url}/ws", headers={"Authorization": f"Bearer {token}"})
    async with connecting as ws:
        assert await ws.receive_json(timeout=10) == {"type": "hello", "user_id": user}
        yield ws


async def receive(
    ws: aiohttp.ClientWebSocketResponse, count: int, timeout_s: float = 20
) -> list[dict[str, Any]]:
    """The next ``count`` notifications; then nothing more for a moment."""
    received: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout_s):
        while len(received) < count:
            message = await ws.receive_json()
            assert message["type"] == "notification"
            received.append(message["notification"])
    with pytest.raises(TimeoutError):
        await ws.receive_json(timeout=1.0)
    return received


async def test_each_user_receives_only_their_own_notifications(settings: Settings) -> None:
    s = await notify_settings(settings)
    alice_1, alice_2 = rollback(ALICE, "wf-a1"), rollback(ALICE, "wf-a2")
    bob_1, carol_1 = overdue(BOB, "wf-b1"), rollback(CAROL, "wf-c1")
    async with (
        notifier_running(s) as running,
        aiohttp.ClientSession() as session,
        websocket(session, running.url, ALICE) as alice,
        websocket(session, running.url, ALICE, in_query=True) as alice_again,
        websocket(session, running.url, BOB) as bob,
    ):
        # alice_1 twice: a redelivery (same command id) is told once.
        await publish(s, [alice_1, bob_1, carol_1, alice_1, alice_2])
        for connection in (alice, alice_again):
            got = await receive(connection, 2)
            assert {n["id"] for n in got} == {str(alice_1.command_id), str(alice_2.command_id)}
            assert all(n["user_id"] == ALICE for n in got)
        got_bob = await receive(bob, 1)
        await eventually(
            polled(lambda: running.metric("phasestream_notify_redelivered_total")),
            lambda n: n == 1,
            what="the redelivery dropped",
        )
    expected = from_violation(bob_1)
    assert got_bob == [
        {
            "id": str(bob_1.violation_id),
            "user_id": BOB,
            "workflow_id": "wf-b1",
            "kind": "overdue",
            "title": expected.title,
            "text": expected.text,
            "occurred_at": bob_1.detected_at.isoformat(),
            "details": dict(expected.details),
        }
    ]
    assert running.metric("phasestream_notify_websocket_messages_total") == 5


def token(claims: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


async def test_refused_connections_get_401_with_the_reason(settings: Settings) -> None:
    s = await notify_settings(settings)
    later = int(time.time()) + 300
    refusals = [
        ({}, "missing"),
        (
            {"token": token({"sub": ALICE, "exp": later}, "another-secret-of-at-least-32-bytes")},
            "bad_signature",
        ),
        ({"token": token({"sub": ALICE, "exp": int(time.time()) - 10})}, "expired"),
        ({"token": token({"exp": later})}, "no_subject"),
        ({"token": mint_token(SECRET, ALICE, 300), "user_id": BOB}, "wrong_user"),
    ]
    async with notifier_running(s) as running, aiohttp.ClientSession() as session:
        for params, reason in refusals:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(f"{running.url}/ws", params=params)
            assert refused.value.status == 401, reason
            async with session.get(f"{running.url}/ws", params=params) as response:
                assert response.status == 401
                assert (await response.json())["error"] == reason
        async with session.get(
            f"{running.url}/ws",
            headers={"Authorization": "Bearer " + token({"sub": ALICE, "exp": 1})},
        ) as response:
            assert (response.status, (await response.json())["error"]) == (401, "expired")
        assert (
            running.metric("phasestream_notify_websocket_refused_total", reason="wrong_user") == 2
        )
    unconfigured = s.model_copy(update={"jwt_secret": None})
    rt = Runtime(unconfigured)
    hub = websocket_hub(unconfigured, rt.registry)
    async with (
        serving(
            build_app(rt.registry, {}, HttpAccess.from_settings(unconfigured), hub.attach),
            "127.0.0.1",
            0,
        ) as port,
        aiohttp.ClientSession() as session,
        session.get(
            f"http://127.0.0.1:{port}/ws", params={"token": mint_token(SECRET, ALICE, 300)}
        ) as response,
    ):
        assert response.status == 401
        assert (await response.json())["error"] == "not_configured"


async def test_a_connection_is_closed_when_its_token_expires(settings: Settings) -> None:
    s = await notify_settings(settings)
    short = token({"sub": ALICE, "exp": int(time.time()) + 2})
    async with (
        hub_serving(s) as running,
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{running.url}/ws", params={"token": short}) as ws,
    ):
        assert (await ws.receive_json(timeout=5))["type"] == "hello"
        closing = await ws.receive(timeout=5)
        assert closing.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 4401
        await eventually(
            polled(lambda: running.hub.connections),
            lambda n: n == 0,
            what="the expired connection forgotten",
        )


class SlackReceiver:
    """A webhook: records each message; fails the first ``fail_first`` requests (500),
    holding the last failing one until ``release`` is set."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.release = asyncio.Event()
        self.requests = 0
        self.texts: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.json()
        if self.requests <= self.fail_first:
            if self.requests == self.fail_first:
                await self.release.wait()
            return web.Response(status=500, text="try again")
        self.texts.append(body["text"])
        return web.Response(text="ok")


@contextlib.asynccontextmanager
async def slack_receiver(receiver: SlackReceiver) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    async with serving(app, "127.0.0.1", 0) as port:
        yield f"http://127.0.0.1:{port}/hook"


class MailRecorder:
    """An aiosmtpd handler that keeps every message."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.recipients: list[list[str]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        self.messages.append(message_from_bytes(content, policy=policy.default))
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 OK"


@contextlib.asynccontextmanager
async def smtp_server(recorder: MailRecorder) -> AsyncIterator[int]:
    """A real SMTP server (aiosmtpd) in this event loop; its port."""
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(recorder, hostname="localhost"), "127.0.0.1", 0
    )
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


def first_lines(texts: Sequence[str]) -> list[str]:
    return sorted(text.split("\n")[0] for text in texts)


async def test_one_alert_per_incident_on_slack_and_email(settings: Settings) -> None:
    receiver, mail = SlackReceiver(), MailRecorder()
    burst = [rollback(ALICE, "wf-burst") for _ in range(20)]
    late = overdue(ALICE, "wf-burst")
    other = [rollback(BOB, "wf-other") for _ in range(3)]
    retry = rollback(ALICE, "wf-burst", CommandKind.RETRY, attempt=1)  # WebSocket only
    async with slack_receiver(receiver) as hook, smtp_server(mail) as smtp_port:
        s = await notify_settings(
            settings,
            slack_webhook_url=SecretStr(hook),
            smtp_host="127.0.0.1",
            smtp_port=smtp_port,
            smtp_from="alerts@example.com",
            smtp_to="ops@example.com, oncall@example.com",
        )
        async with notifier_running(s) as running:
            await publish(s, [*burst, late, *other, retry])
            await eventually(
                polled(lambda: len(receiver.texts) + len(mail.messages)),
                lambda n: n >= 6,
                what="three alerts on each sink",
            )
            await asyncio.sleep(1.5)  # and nothing more
            metric = running.metric
    titles = [
        from_command(burst[0]).title,
        from_violation(late).title,
        from_command(other[0]).title,
    ]
    assert first_lines(receiver.texts) == sorted(f"*{t}*" for t in titles)
    assert sorted(str(m["Subject"]) for m in mail.messages) == sorted(
        f"[phasestream] {t}" for t in titles
    )
    assert mail.recipients == [["ops@example.com", "oncall@example.com"]] * 3
    first = next(m for m in mail.messages if "wf-burst: phase 3" in str(m["Subject"]))
    assert str(first["Message-ID"]) == f"<{burst[0].command_id}@phasestream>"
    assert isinstance(first, EmailMessage)
    assert "workflow: wf-burst" in first.get_content()
    for sink in ("slack", "email"):
        assert metric("phasestream_notify_delivered_total", sink=sink) == 3
        assert (
            metric("phasestream_notify_suppressed_total", sink=sink, reason="duplicate") == 19 + 2
        )
    assert metric("phasestream_notify_notifications_total", kind="retry") == 1


async def test_a_failing_sink_is_retried_while_websockets_keep_flowing(settings: Settings) -> None:
    receiver = SlackReceiver(fail_first=2)
    slow = rollback(ALICE, "wf-slow")
    fast = [rollback(ALICE, f"wf-fast-{i}") for i in range(5)]
    async with slack_receiver(receiver) as hook:
        s = await notify_settings(settings, slack_webhook_url=SecretStr(hook))
        async with (
            notifier_running(s) as running,
            aiohttp.ClientSession() as session,
            websocket(session, running.url, ALICE) as alice,
        ):
            await publish(s, [slow])
            await eventually(
                polled(lambda: receiver.requests),
                lambda n: n == 2,
                what="the second, held, failing Slack request",
            )
            await publish(s, fast)
            got = await receive(alice, 6)  # while Slack is still failing
            assert receiver.requests == 2
            receiver.release.set()
            await eventually(
                polled(lambda: len(receiver.texts)), lambda n: n == 6, what="every alert delivered"
            )
            metric = running.metric
    assert {n["workflow_id"] for n in got} == {"wf-slow"} | {f"wf-fast-{i}" for i in range(5)}
    assert receiver.texts[0] == slack_text(from_command(slow))  # retried, then delivered
    assert metric("phasestream_notify_delivery_failures_total", sink="slack") == 2
    assert metric("phasestream_notify_delivered_total", sink="slack") == 6
    assert metric("phasestream_notify_dropped_total", sink="slack") == 0


async def test_invalid_records_are_dead_lettered_and_counted(settings: Settings) -> None:
    s = await notify_settings(settings)
    good = rollback(ALICE, "wf-good")
    wrong_key = overdue(ALICE, "wf-v")
    async with (
        notifier_running(s) as running,
        aiohttp.ClientSession() as session,
        websocket(session, running.url, ALICE) as alice,
    ):
        await publish_raw(s, s.rollback_commands_topic, b"wf-x", b"{not json")
        await publish_raw(s, s.sla_violations_topic, b"wf-other", encode_violation(wrong_key))
        await publish(s, [good])
        got = await receive(alice, 1)
        letters = await read_records(s, s.dlq_topic, 2)
        metric = running.metric
    assert [n["id"] for n in got] == [str(good.command_id)]
    reasons = sorted(
        (
            dict(m.headers)["phasestream.source.topic"].decode(),
            dict(m.headers)["phasestream.reason"].decode(),
        )
        for m in letters
    )
    assert [topic for topic, _ in reasons] == sorted(
        [s.rollback_commands_topic, s.sla_violations_topic]
    )
    assert {reason.split(":")[0] for _, reason in reasons} == {"$", "workflow_id"}
    assert all(
        dict(m.headers)["phasestream.consumer"].decode() == s.notify_consumer_group for m in letters
    )
    for topic in (s.rollback_commands_topic, s.sla_violations_topic):
        assert metric("phasestream_notify_invalid_total", topic=topic) == 1


async def test_a_restarted_notifier_delivers_what_came_while_it_was_down(
    settings: Settings,
) -> None:
    s = await notify_settings(settings)
    before, during = rollback(ALICE, "wf-before"), rollback(ALICE, "wf-during")
    async with (
        notifier_running(s) as running,
        aiohttp.ClientSession() as session,
        websocket(session, running.url, ALICE) as alice,
    ):
        await publish(s, [before])
        assert [n["id"] for n in await receive(alice, 1)] == [str(before.command_id)]
    await publish(s, [during])
    async with (
        hub_serving(s) as running,
        aiohttp.ClientSession() as session,
        websocket(session, running.url, ALICE) as alice,
        consuming(running),
    ):
        # Its position was committed: not the old one again, and not skipped to the end.
        got = await receive(alice, 1)
    assert [n["id"] for n in got] == [str(during.command_id)]


async def test_a_slow_client_is_dropped_without_delaying_anyone_else(settings: Settings) -> None:
    s = await notify_settings(settings)
    reason = "x" * 10_000  # ~20 kB a message: the slow client's buffers fill soon
    for_alice = from_command(replace(rollback(ALICE, "wf-slow"), reason=reason))
    for_bob = [from_command(replace(rollback(BOB, f"wf-{i}"), reason=reason)) for i in range(1500)]
    async with (
        hub_serving(s) as running,
        aiohttp.ClientSession() as session,
        websocket(session, running.url, ALICE),
        websocket(session, running.url, BOB) as bob,
    ):
        # Alice's client takes nothing from now on (aiohttp stops reading its socket once
        # 64 kB wait unread); Bob's takes everything.
        got: list[str] = []

        async def read_bob() -> None:
            while len(got) < len(for_bob):
                got.append((await bob.receive_json())["notification"]["workflow_id"])

        reader = asyncio.create_task(read_bob())
        longest = 0.0
        for i, notification in enumerate(for_bob):
            started = time.monotonic()
            await running.hub.push(for_alice)
            await running.hub.push(notification)
            longest = max(longest, time.monotonic() - started)
            if i % 20 == 0:
                await asyncio.sleep(0.001)  # let the writers and Bob's reader run
        await asyncio.wait_for(reader, timeout=60)
        await eventually(
            polled(lambda: running.metric("phasestream_notify_websocket_dropped_total")),
            lambda n: n == 1,
            what="Alice's connection dropped",
        )
        assert running.hub.connections == 1  # Bob's
    assert got == [n.workflow_id for n in for_bob]  # every one, in order
    # A push never waits for a client; it used to wait up to SEND_TIMEOUT_S for a slow one.
    assert longest < SEND_TIMEOUT_S / 2


async def test_connections_are_capped_per_user_and_in_total(settings: Settings) -> None:
    s = await notify_settings(settings, ws_max_connections=3, ws_max_connections_per_user=2)
    async with (
        hub_serving(s) as running,
        aiohttp.ClientSession() as session,
        websocket(session, running.url, ALICE),
        websocket(session, running.url, ALICE),
    ):
        async with session.get(
            f"{running.url}/ws", params={"token": mint_token(SECRET, ALICE, 300)}
        ) as response:
            assert response.status == 429
            assert (await response.json())["error"] == "too_many_for_user"
        async with (
            websocket(session, running.url, BOB),
            session.get(
                f"{running.url}/ws", params={"token": mint_token(SECRET, CAROL, 300)}
            ) as response,
        ):
            assert response.status == 503
            assert (await response.json())["error"] == "too_many_connections"
        async with websocket(session, running.url, CAROL):  # Bob's place is free again
            assert running.hub.connections == 3
        assert (
            running.metric("phasestream_notify_websocket_refused_total", reason="too_many_for_user")
            == 1
        )


async def test_ws_tokens_have_a_capped_lifetime_and_the_configured_issuer_audience(
    settings: Settings,
) -> None:
    s = await notify_settings(
        settings, jwt_max_lifetime_s=600, jwt_issuer="https://idp.test", jwt_audience="phasestream"
    )
    now = int(time.time())
    aud = {"iss": "https://idp.test", "aud": "phasestream"}
    refusals = [
        (token({"sub": ALICE, "exp": now + 3600, **aud}), "too_long"),
        (token({"sub": ALICE, "exp": now + 300, "iss": "https://idp.test"}), "invalid"),
        (token({"sub": ALICE, "exp": now + 300, **aud, "aud": "grafana"}), "wrong_audience"),
        (token({"sub": ALICE, "exp": now + 300, **aud, "iss": "https://x"}), "wrong_issuer"),
    ]
    async with hub_serving(s) as running, aiohttp.ClientSession() as session:
        for refused, reason in refusals:
            async with session.get(f"{running.url}/ws", params={"token": refused}) as response:
                assert (response.status, (await response.json())["error"]) == (401, reason)
        good = mint_token(SECRET, ALICE, 300, issuer="https://idp.test", audience="phasestream")
        async with session.ws_connect(f"{running.url}/ws", params={"token": good}) as ws:
            assert await ws.receive_json(timeout=10) == {"type": "hello", "user_id": ALICE}


async def test_a_short_secret_is_refused_at_start(settings: Settings) -> None:
    env = settings_env(settings) | {"PHASESTREAM_JWT_SECRET": "sixteen-byte-key"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "phasestream",
        "run",
        "notify",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 2
    assert err.decode().strip() == (
        "error: invalid setting: PHASESTREAM_JWT_SECRET: must be "
        "at least 32 bytes (e.g. `openssl rand -hex 32`)"
    )
    assert b"sixteen-byte-key" not in out + err
