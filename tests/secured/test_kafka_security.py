"""phasestream against a secured Apache Kafka: SASL_SSL with SCRAM-SHA-512, and TLS.

One broker for the module (phasestream/local_kafka.py), no ACLs, with three client listeners
besides its PLAINTEXT inter-broker one: SECURE (SASL_SSL, a certificate for 127.0.0.1),
OTHERNAME (SASL_SSL, a certificate for another host name) and MTLS (SSL, client
certificate required). The CA, the certificates and the SCRAM user are made per run.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from models.phases import PhaseStatus
from phasestream.consumers import ALL
from phasestream.kafka_cluster import KafkaSetupError, check_kafka, kafka_cluster
from phasestream.local_kafka import start_kafka
from phasestream.replay import replay
from phasestream.settings import Settings
from phasestream.wiring import create_topics
from streams.publisher import PhaseEventPublisher
from streams.topic_scan import TopicScanError, highwaters
from tests.background import consumers_running
from tests.conftest import settings_env
from tests.events import make_event, many_events
from tests.secured.tls import Authority, Leaf
from tests.waiting import count_rows, eventually

pytestmark = [pytest.mark.integration, pytest.mark.kafka_cluster]

USER = "phasestream-app"
SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
LISTENERS = {"SECURE": "SASL_SSL", "OTHERNAME": "SASL_SSL", "MTLS": "SSL"}


@dataclass(frozen=True)
class SecuredKafka:
    addresses: dict[str, str]
    ca: Path
    password: str
    client: Leaf
    client_key_password: str


def broker_properties(good: Path, other: Path, ca: Path) -> dict[str, str]:
    props = {"sasl.enabled.mechanisms": "SCRAM-SHA-512"}
    for listener, keystore in (("secure", good), ("othername", other)):
        props |= {
            f"listener.name.{listener}.sasl.enabled.mechanisms": "SCRAM-SHA-512",
            f"listener.name.{listener}.scram-sha-512.sasl.jaas.config": SCRAM,
            f"listener.name.{listener}.ssl.keystore.type": "PEM",
            f"listener.name.{listener}.ssl.keystore.location": str(keystore),
        }
    return props | {
        "listener.name.mtls.ssl.keystore.type": "PEM",
        "listener.name.mtls.ssl.keystore.location": str(good),
        "listener.name.mtls.ssl.truststore.type": "PEM",
        "listener.name.mtls.ssl.truststore.location": str(ca),
        "listener.name.mtls.ssl.client.auth": "required",
    }


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredKafka]:
    root = tmp_path_factory.mktemp("secured-kafka")
    ca = Authority(root / "tls")
    good = ca.issue("broker", "IP:127.0.0.1,DNS:localhost").keystore()
    other = ca.issue("elsewhere", "DNS:kafka.elsewhere.example").keystore()
    key_password = secrets.token_urlsafe(12)
    client = ca.issue(
        "client", "DNS:phasestream-client", usage="clientAuth", key_password=key_password
    )
    password = secrets.token_urlsafe(16)
    with start_kafka(
        root / "kafka",
        extra_props=broker_properties(good, other, ca.cert),
        listeners=LISTENERS,
        format_args=["--add-scram", f"SCRAM-SHA-512=[name={USER},password={password}]"],
    ) as cluster:
        yield SecuredKafka(
            {name: cluster.address_of(1, name) for name in LISTENERS},
            ca.cert,
            password,
            client,
            key_password,
        )


def on(settings: Settings, kafka: SecuredKafka, listener: str, **security: Any) -> Settings:
    """``settings`` (this test's topics, groups, database) pointed at one listener."""
    login: dict[str, Any] = {}
    if LISTENERS[listener] == "SASL_SSL":
        login = {
            "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_sasl_username": USER,
            "kafka_sasl_password": kafka.password,
        }
    return Settings(
        **{
            **settings.model_dump(),
            "kafka_bootstrap_servers": kafka.addresses[listener],
            "kafka_security_protocol": LISTENERS[listener],
            "kafka_ssl_ca_file": kafka.ca,
            **login,
            **security,
        }
    )


async def phasestream(
    settings: Settings,
    *args: str,
    password: str | None = None,
) -> tuple[int, str]:
    """Run the CLI with these settings; its exit code and standard error."""
    env = settings_env(settings)
    if password is not None:  # settings_env cannot see through SecretStr
        env["PHASESTREAM_KAFKA_SASL_PASSWORD"] = password
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "phasestream",
        *args,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def end_total(settings: Settings, topic: str) -> int:
    """Records on ``topic`` (read by phasestream's own end reader); -1 while the topic
    is not in the metadata yet (Kafka creates topics asynchronously)."""
    try:
        return sum((await highwaters(kafka_cluster(settings), topic)).values())
    except TopicScanError:
        return -1


async def test_right_password_runs_every_consumer_end_to_end(
    secured: SecuredKafka, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Every client phasestream makes (admin, publisher, consumers, dead-letter and relay
    producers, end readers, the health check, replay) logs in over TLS: the events are
    projected, the failed phase is rolled back, the health check passes, replay rebuilds."""
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.INFO, logger="aiokafka.conn")  # phasestream.logs quiets aiokafka
    s = on(settings, secured, "SECURE")
    assert await create_topics(s)
    events = [
        *many_events(30),
        make_event(
            "wf-failing", phase=2, status=PhaseStatus.FAILED, duration_ms=5, error_message="boom"
        ),
    ]
    async with (
        consumers_running(s, *ALL) as runtime,
        PhaseEventPublisher(kafka_cluster(s), s.phase_events_topic) as publisher,
    ):
        await publisher.publish_many(events)
        db = s.database_url or ""
        # The commander answers the failed phase 2 with a rollback command, and puts a
        # rolled_back event back into the log, which the audit projects too.
        await eventually(
            lambda: end_total(s, s.rollback_commands_topic),
            lambda n: n >= 1,
            what="a rollback command on its topic",
        )
        await eventually(
            lambda: count_rows(db), lambda n: n >= len(events) + 1, what="the audit rows"
        )
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{runtime.http_port}/healthz") as health,
        ):
            assert health.status == 200, await health.text()
    assert await count_rows(db) == len(events) + 1
    assert (
        await count_rows(
            db, "SELECT count(*) FROM workflow_phase_logs WHERE status = $1", "rolled_back"
        )
        == 1
    )
    # replay's end reader and its group-less consumer log in too.
    assert (await replay(s, "audit")).replayed == len(events) + 1
    assert f"Authenticated as {USER} via SCRAM-SHA-512" in caplog.text  # aiokafka's line
    assert secured.password not in caplog.text


@pytest.mark.parametrize(
    "command",
    [
        ("run", "audit"),
        ("topics", "create"),
        (
            "publish",
            "--workflow-id",
            "wf-1",
            "--user-id",
            str(uuid.uuid4()),
            "--phase",
            "1",
            "--status",
            "started",
        ),
    ],
)
async def test_wrong_password_fails_at_start_in_one_line(
    secured: SecuredKafka, settings: Settings, command: tuple[str, ...]
) -> None:
    wrong = secrets.token_urlsafe(16)
    code, stderr = await phasestream(on(settings, secured, "SECURE"), *command, password=wrong)
    assert code == 1, stderr
    assert stderr.count("\n") == 1, stderr  # one line, no traceback
    assert f"refused the SASL login for PHASESTREAM_KAFKA_SASL_USERNAME={USER}" in stderr
    assert "check PHASESTREAM_KAFKA_SASL_PASSWORD" in stderr
    assert wrong not in stderr


async def test_the_right_password_on_the_command_line_connects(
    secured: SecuredKafka, settings: Settings
) -> None:
    s = on(settings, secured, "SECURE")
    code, stderr = await phasestream(s, "topics", "create", password=secured.password)
    assert code == 0, stderr
    assert (
        await eventually(
            lambda: end_total(s, s.phase_events_topic), lambda n: n >= 0, what="the created topic"
        )
        == 0
    )


async def test_a_certificate_for_another_host_name_is_refused(
    secured: SecuredKafka, settings: Settings
) -> None:
    code, stderr = await phasestream(
        on(settings, secured, "OTHERNAME"), "run", "audit", password=secured.password
    )
    assert code == 1, stderr
    assert stderr.count("\n") == 1, stderr
    assert "TLS certificate of 127.0.0.1:" in stderr
    assert "is for another host name" in stderr
    assert "PHASESTREAM_KAFKA_SSL_CHECK_HOSTNAME=false" in stderr


async def test_without_hostname_verification_that_certificate_is_accepted(
    secured: SecuredKafka, settings: Settings
) -> None:
    s = on(settings, secured, "OTHERNAME", kafka_ssl_check_hostname=False)
    await check_kafka(s)
    await create_topics(s)
    async with PhaseEventPublisher(kafka_cluster(s), s.phase_events_topic) as publisher:
        await publisher.publish_many(many_events(5))
    assert await end_total(s, s.phase_events_topic) == 5


async def test_a_certificate_from_an_untrusted_ca_is_refused(
    secured: SecuredKafka, settings: Settings
) -> None:
    s = on(settings, secured, "SECURE", kafka_ssl_ca_file=None)  # the system's CAs
    with pytest.raises(KafkaSetupError) as refused:
        await check_kafka(s)
    assert "is not trusted" in str(refused.value)
    assert "PHASESTREAM_KAFKA_SSL_CA_FILE is unset" in str(refused.value)


async def test_mutual_tls_with_an_encrypted_client_key(
    secured: SecuredKafka, settings: Settings
) -> None:
    s = on(
        settings,
        secured,
        "MTLS",
        kafka_ssl_cert_file=secured.client.cert,
        kafka_ssl_key_file=secured.client.key,
        kafka_ssl_key_password=secured.client_key_password,
    )
    await check_kafka(s)
    await create_topics(s)
    async with PhaseEventPublisher(kafka_cluster(s), s.phase_events_topic) as publisher:
        await publisher.publish_many(many_events(3))
    assert await end_total(s, s.phase_events_topic) == 3


async def test_mutual_tls_without_a_client_certificate_names_the_setting(
    secured: SecuredKafka, settings: Settings
) -> None:
    with pytest.raises(KafkaSetupError) as refused:
        await check_kafka(on(settings, secured, "MTLS"))
    assert "ended the connection" in str(refused.value)
    assert "PHASESTREAM_KAFKA_SSL_CERT_FILE" in str(refused.value)


async def test_a_mechanism_the_listener_does_not_offer_names_the_setting(
    secured: SecuredKafka, settings: Settings
) -> None:
    with pytest.raises(KafkaSetupError) as refused:
        await check_kafka(on(settings, secured, "SECURE", kafka_sasl_mechanism="SCRAM-SHA-256"))
    assert "does not offer PHASESTREAM_KAFKA_SASL_MECHANISM=SCRAM-SHA-256" in str(refused.value)


async def test_plaintext_to_a_tls_listener_names_the_protocol(
    secured: SecuredKafka, settings: Settings
) -> None:
    plain = Settings(
        **{**settings.model_dump(), "kafka_bootstrap_servers": secured.addresses["SECURE"]}
    )
    with pytest.raises(KafkaSetupError) as refused:
        await check_kafka(plain)
    assert "ended the connection" in str(refused.value)
    assert "check PHASESTREAM_KAFKA_SECURITY_PROTOCOL=PLAINTEXT" in str(refused.value)
