"""Kafka security settings: the combinations refused at start, and the client arguments
built from the rest. No broker: the secured-broker tests are in tests/secured/."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from phasestream.cli_support import settings_problems
from phasestream.kafka_cluster import KafkaSetupError, kafka_cluster
from phasestream.settings import Settings
from phasestream.wiring import consumer_options
from streams.kafka import KafkaCluster, KafkaSecurity, SaslLogin, consumer_config, producer_config
from tests.secured.tls import Authority

SERVERS = "kafka-1.example:9093"
PASSWORD = "hunter2-not-shown"


def scram(**extra: Any) -> dict[str, Any]:
    return {
        "kafka_bootstrap_servers": SERVERS,
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "app",
        "kafka_sasl_password": PASSWORD,
        **extra,
    }


def problem(**fields: Any) -> str:
    with pytest.raises(ValidationError) as refused:
        Settings(**fields)
    return settings_problems(refused.value)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"kafka_security_protocol": "SASL_SSL"},
            "PHASESTREAM_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs "
            "PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS",
        ),
        (
            scram(kafka_sasl_username=None),
            "PHASESTREAM_KAFKA_SECURITY_PROTOCOL=SASL_SSL logs in: "
            "set PHASESTREAM_KAFKA_SASL_USERNAME",
        ),
        (
            scram(kafka_sasl_password=None),
            "PHASESTREAM_KAFKA_SECURITY_PROTOCOL=SASL_SSL logs in: "
            "set PHASESTREAM_KAFKA_SASL_PASSWORD",
        ),
        (
            scram(kafka_security_protocol="SSL"),
            "PHASESTREAM_KAFKA_SASL_USERNAME/PASSWORD are set but "
            "PHASESTREAM_KAFKA_SECURITY_PROTOCOL=SSL does not log in",
        ),
        (
            scram(kafka_security_protocol="SASL_PLAINTEXT", kafka_ssl_ca_file="/ca.pem"),
            "PHASESTREAM_KAFKA_SSL_CA_FILE is set but "
            "PHASESTREAM_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT uses no TLS",
        ),
        (scram(kafka_ssl_key_file="/client.key"), "set PHASESTREAM_KAFKA_SSL_CERT_FILE too"),
        (
            {"kafka_bootstrap_servers": SERVERS, "kafka_security_protocol": "TLS"},
            "PHASESTREAM_KAFKA_SECURITY_PROTOCOL: Input should be 'PLAINTEXT', 'SSL', ",
        ),
        (
            scram(kafka_sasl_mechanism="GSSAPI"),
            "PHASESTREAM_KAFKA_SASL_MECHANISM: Input should be 'PLAIN', 'SCRAM-SHA-256' or ",
        ),
    ],
)
def test_a_bad_combination_is_one_line_naming_the_variable(
    fields: dict[str, Any], expected: str
) -> None:
    message = problem(**fields)
    assert expected in message
    assert "\n" not in message
    assert PASSWORD not in message


def test_the_default_is_plaintext_to_the_embedded_broker() -> None:
    cluster = kafka_cluster(Settings(kafka_bootstrap_servers=None, embedded_kafka_port=9092))
    assert cluster.bootstrap_servers == "127.0.0.1:9092"
    assert cluster.security.client_kwargs() == {"security_protocol": "PLAINTEXT"}


def test_scram_over_tls_gives_every_client_the_login_and_a_verifying_context() -> None:
    cluster = kafka_cluster(Settings(**scram()))
    for config in (
        producer_config(cluster, client_id="p", linger_ms=5),
        consumer_config(
            cluster, group_id="g", session_timeout_ms=6000, max_wait_ms=100, max_records=10
        ),
        cluster.client_kwargs("admin"),
    ):
        assert config["bootstrap_servers"] == SERVERS
        assert config["security_protocol"] == "SASL_SSL"
        assert config["sasl_mechanism"] == "SCRAM-SHA-512"
        assert (config["sasl_plain_username"], config["sasl_plain_password"]) == ("app", PASSWORD)
        context = config["ssl_context"]
        assert context.check_hostname
        assert context.verify_mode == ssl.CERT_REQUIRED


def test_hostname_verification_can_be_turned_off_but_the_chain_is_still_verified() -> None:
    context = kafka_cluster(Settings(**scram(kafka_ssl_check_hostname=False))).security.ssl_context
    assert context is not None
    assert not context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_the_password_is_never_in_a_repr() -> None:
    cluster = kafka_cluster(Settings(**scram()))
    assert PASSWORD not in repr(cluster)
    assert PASSWORD not in repr(Settings(**scram()))


def test_security_refuses_a_protocol_without_its_parts() -> None:
    with pytest.raises(ValueError, match="SASL login goes with SASL_"):
        KafkaSecurity("SASL_PLAINTEXT")
    with pytest.raises(ValueError, match="TLS context goes with SSL"):
        KafkaSecurity("SSL")
    with pytest.raises(ValueError, match="SASL login goes with SASL_"):
        KafkaSecurity("PLAINTEXT", sasl=SaslLogin("PLAIN", "u", "p"))
    assert KafkaCluster("h:1").security.protocol == "PLAINTEXT"


def test_a_missing_ca_file_names_the_setting(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(KafkaSetupError) as refused:
        kafka_cluster(Settings(**scram(kafka_ssl_ca_file=missing)))
    assert str(refused.value).startswith(f"PHASESTREAM_KAFKA_SSL_CA_FILE={missing}: no CA")


def test_a_client_key_with_the_wrong_password_names_the_settings(tmp_path: Path) -> None:
    ca = Authority(tmp_path)
    leaf = ca.issue("client", "DNS:client", usage="clientAuth", key_password="right-one")
    with pytest.raises(KafkaSetupError) as refused:
        kafka_cluster(
            Settings(
                **scram(
                    kafka_ssl_ca_file=ca.cert,
                    kafka_ssl_cert_file=leaf.cert,
                    kafka_ssl_key_file=leaf.key,
                    kafka_ssl_key_password="wrong-one",
                )
            )
        )
    message = str(refused.value)
    assert "the client certificate and its key could not be loaded" in message
    assert "PHASESTREAM_KAFKA_SSL_KEY_PASSWORD" in message
    assert "wrong-one" not in message
    loaded = kafka_cluster(
        Settings(
            **scram(
                kafka_ssl_ca_file=ca.cert,
                kafka_ssl_cert_file=leaf.cert,
                kafka_ssl_key_file=leaf.key,
                kafka_ssl_key_password="right-one",
            )
        )
    )
    assert loaded.security.ssl_context is not None


def test_the_minimum_fetch_size_reaches_the_consumer() -> None:
    assert consumer_options(Settings(_env_file=None), "g")["fetch_min_bytes"] == 1
    held = Settings(_env_file=None, batch_min_bytes=65_536)
    assert consumer_options(held, "g")["fetch_min_bytes"] == 65_536
