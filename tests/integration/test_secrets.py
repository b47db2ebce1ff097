"""No secret reaches a log: each failure of each sink, provoked for real, with the secret
searched in every captured log record (DEBUG and up), in HTTP bodies and in the CLI's
stderr.

The servers here are built to be indiscreet (a 500 that echoes the webhook path, an SMTP
server that quotes the password it refuses), so scrubbing is what keeps the logs clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from models.notifications.dedup import Deduplicator
from models.notifications.rate_limit import RateLimiter
from models.notifications.value import Notification
from models.notifications.wording import from_command
from phasestream.consumers import websocket_hub
from phasestream.delivery.email import EmailSender, SmtpConfig
from phasestream.delivery.metrics import NotifyMetrics
from phasestream.delivery.sink import AlertSink
from phasestream.delivery.slack import SlackSender
from phasestream.http import build_app, serving
from phasestream.http_auth import HttpAccess
from phasestream.settings import Settings
from phasestream.wiring import connected
from projections.audit_sink import AuditSink
from tests.conftest import free_port, settings_env
from tests.integration.test_api import served
from tests.integration.test_notify import ALICE, publish, rollback

pytestmark = pytest.mark.integration
TOKEN = f"XOXB{uuid.uuid4().hex}"  # the secret part of each webhook URL
SMTP_PASSWORD = f"smtp-\\'{uuid.uuid4().hex}"  # a backslash and a quote: not a repr
JWT_SECRET = f"jwt-secret-{uuid.uuid4().hex}-of-at-least-32-bytes"
DB_PASSWORD = f"db-{uuid.uuid4().hex}"
TEST_SERVER_LOGGERS = ("mail.log",)


def alert() -> Notification:
    return from_command(rollback(ALICE, "wf-secret"))


def alert_sink(sender: SlackSender | EmailSender) -> AlertSink:
    return AlertSink(
        sender,
        dedup=Deduplicator(600),
        limiter=RateLimiter(100),
        metrics=NotifyMetrics(CollectorRegistry()),
        max_attempts=1,
    )


def assert_clean(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text, f"a secret reached the output: {text!r}"


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured record, rendered as a handler would (message, args, traceback),
    but those of this test's own indiscreet SMTP server (aiosmtpd logs what it receives)."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(
        formatter.format(record)
        for record in caplog.records
        if not record.name.startswith(TEST_SERVER_LOGGERS)
    )


@contextlib.asynccontextmanager
async def indiscreet_webhook() -> AsyncIterator[str]:
    """A webhook host whose paths loop, redirect to ftp, or fail quoting themselves."""

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(request.path)  # 307: POST again

    async def to_ftp(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"ftp://127.0.0.1{request.path}")

    async def error(request: web.Request) -> web.Response:
        return web.Response(status=500, text=f"upstream failed for {request.url}")

    app = web.Application()
    app.router.add_post("/services/T0/B0/{token}/loop", loop)
    app.router.add_post("/services/T0/B0/{token}/ftp", to_ftp)
    app.router.add_post("/services/T0/B0/{token}/error", error)
    async with serving(app, "127.0.0.1", 0) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("case", "failure"),
    [
        ("loop", "TooManyRedirects"),
        ("ftp", "NonHttpUrlRedirectClientError"),
        ("error", "HTTP 500"),
        ("invalid", "InvalidUrlClientError"),
        ("no-scheme", "InvalidUrlClientError"),
        ("non-http", "NonHttpUrlClientError"),
        ("refused", "ClientConnectorError"),
    ],
)
async def test_slack_failures_log_no_webhook_path(
    caplog: pytest.LogCaptureFixture, case: str, failure: str
) -> None:
    caplog.set_level(logging.DEBUG)
    async with indiscreet_webhook() as base:
        url = {
            "invalid": f"http://127.0.0.1:99999/services/T0/B0/{TOKEN}",
            "no-scheme": f"hooks.slack.com/services/T0/B0/{TOKEN}",
            "non-http": f"ftp://127.0.0.1/services/T0/B0/{TOKEN}",
            "refused": f"http://127.0.0.1:{free_port()}/services/T0/B0/{TOKEN}",
        }.get(case, f"{base}/services/T0/B0/{TOKEN}/{case}")
        async with SlackSender(url, timeout_s=5) as sender:
            delivered = await alert_sink(sender).deliver(alert())
    assert not delivered
    text = logged(caplog)
    assert "slack: alert" in text
    assert failure in text  # the failure path was the one meant
    assert_clean(text, TOKEN)


@contextlib.asynccontextmanager
async def refusing_smtp() -> AsyncIterator[int]:
    """An SMTP server that refuses every login, quoting the password it was given."""

    def authenticator(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        return AuthResult(
            success=False,
            handled=False,
            message=f"535 5.7.8 bad password {auth_data.password.decode()}",
        )

    class Handler:
        async def handle_DATA(
            self,
            server: SMTP,
            session: Session,  # aiosmtpd names it
            envelope: Envelope,
        ) -> str:
            return "250 OK"

    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(
            Handler(), hostname="localhost", authenticator=authenticator, auth_require_tls=False
        ),
        "127.0.0.1",
        0,
    )
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def test_smtp_failures_log_no_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    def config(port: int) -> SmtpConfig:
        return SmtpConfig(
            "127.0.0.1",
            port,
            starttls=False,
            username="alerts",
            password=SMTP_PASSWORD,
            sender="a@example.com",
            recipients=("ops@example.com",),
        )

    async with refusing_smtp() as port:
        refused_login = await alert_sink(EmailSender(config(port), 5)).deliver(alert())
    refused_connection = await alert_sink(EmailSender(config(free_port()), 5)).deliver(alert())
    assert (refused_login, refused_connection) == (False, False)
    text = logged(caplog)
    assert "SMTP 535" in text
    assert "ConnectionRefusedError" in text
    assert_clean(text, SMTP_PASSWORD)


async def test_refused_tokens_log_no_jwt_secret(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    settings = Settings(jwt_secret=SecretStr(JWT_SECRET))
    hub = websocket_hub(settings, CollectorRegistry())
    now = int(time.time())
    tokens = {
        "forged": jwt.encode(
            {"sub": ALICE, "exp": now + 60}, "another-secret-" * 3, algorithm="HS256"
        ),
        "expired": jwt.encode({"sub": ALICE, "exp": now - 60}, JWT_SECRET, algorithm="HS256"),
        "malformed": "not.a.token",
        "unsigned": jwt.encode({"sub": ALICE, "exp": now + 60}, "", algorithm="none"),
    }
    bodies = []
    app = build_app(CollectorRegistry(), {}, HttpAccess.from_settings(settings), hub.attach)
    async with serving(app, "127.0.0.1", 0) as port, aiohttp.ClientSession() as session:
        for token in tokens.values():
            async with session.get(
                f"http://127.0.0.1:{port}/ws", headers={"Authorization": f"Bearer {token}"}
            ) as response:
                assert response.status == 401
                bodies.append(await response.text())
    assert_clean(logged(caplog) + "\n".join(bodies), JWT_SECRET)
    assert "/ws refused" in logged(caplog)


def unreachable_database() -> str:
    return f"postgresql://phasestream:{DB_PASSWORD}@127.0.0.1:{free_port()}/phasestream"


async def test_database_password_stays_out_of_api_and_consumer_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = Settings(
        database_url=unreachable_database(), db_retry_initial_ms=50, db_retry_max_ms=100
    )
    async with served(settings) as session, session.get("/api/analytics") as response:
        assert response.status == 503
        body = await response.text()
    with pytest.raises(TimeoutError):  # a consumer waits for its database, retrying
        async with asyncio.timeout(1.0), connected(AuditSink, settings):
            pass
    text = logged(caplog)
    assert "connecting to Postgres failed" in text
    assert_clean(text + body, DB_PASSWORD)


async def run_cli(
    env: dict[str, str],
    *args: str,
    until: str | None = None,
) -> tuple[int, str]:
    """Run the CLI; its exit code and stderr. A long-running command is killed once its
    stderr shows ``until`` (a consumer waiting for its database does not heed SIGTERM
    before it connects)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "phasestream",
        *args,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    err = b""
    async with asyncio.timeout(120):
        while line := await process.stderr.readline():
            err += line
            if until is not None and until.encode() in line:
                process.kill()
        await process.wait()
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_database_password_stays_out_of_the_cli_stderr(settings: Settings) -> None:
    unreachable = unreachable_database()
    malformed = f"postgresql://phasestream:{DB_PASSWORD}@127.0.0.1:notaport/phasestream"
    env = settings_env(
        settings.model_copy(
            update={
                "database_url": unreachable,
                "api_database_url": malformed,
                "db_retry_initial_ms": 50,
                "db_retry_max_ms": 200,
            }
        )
    )
    code, report = await run_cli(env, "report", "analytics")
    assert (code, report) == (
        1,
        "error: the database URL is malformed: invalid literal "
        "for int() with base 10: 'notaport'\n",
    )
    code, migrate = await run_cli(env, "migrate")
    assert code == 1
    assert "Connect call failed" in migrate
    _, consumer = await run_cli(env, "run", "audit", until="connecting to Postgres failed")
    assert "connecting to Postgres failed" in consumer
    for err in (report, migrate, consumer):
        assert_clean(err, DB_PASSWORD)
        assert "Traceback" not in err


async def test_the_notifier_cli_logs_no_webhook_path_nor_jwt_secret(settings: Settings) -> None:
    env = settings_env(settings)
    env |= {
        "PHASESTREAM_SLACK_WEBHOOK_URL": f"ftp://127.0.0.1/services/T0/B0/{TOKEN}",
        "PHASESTREAM_JWT_SECRET": JWT_SECRET,
        "PHASESTREAM_LOG_LEVEL": "DEBUG",
    }

    async def keep_publishing() -> None:
        # A new notifier group starts at the end of the log: publish until it has joined.
        for n in range(120):
            await publish(settings, [rollback(ALICE, f"wf-cli-{n}")])
            await asyncio.sleep(1)

    publisher = asyncio.create_task(keep_publishing())
    try:
        _, err = await run_cli(env, "run", "notify", until="slack: alert")
    finally:
        publisher.cancel()
    assert "NonHttpUrlClientError" in err
    assert_clean(err, TOKEN, JWT_SECRET)
