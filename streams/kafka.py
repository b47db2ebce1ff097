"""Client settings shared by every phasestream producer, consumer and admin client.

``KafkaCluster`` says where the cluster is and how to reach it (TLS, SASL login); every
client phasestream makes takes its keyword arguments from here, so no client can miss the
security the others use.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any, Literal

from streams.partitioner import KeyPartitioner

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
TLS_PROTOCOLS: frozenset[str] = frozenset({"SSL", "SASL_SSL"})
SASL_PROTOCOLS: frozenset[str] = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})


@dataclass(frozen=True, slots=True)
class SaslLogin:
    mechanism: SaslMechanism
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """How clients authenticate the brokers (TLS) and themselves (TLS client
    certificate or SASL login). The default is plain, unauthenticated TCP."""

    protocol: SecurityProtocol = "PLAINTEXT"
    ssl_context: ssl.SSLContext | None = None
    sasl: SaslLogin | None = None

    def __post_init__(self) -> None:
        if (self.protocol in TLS_PROTOCOLS) != (self.ssl_context is not None):
            raise ValueError(f"{self.protocol}: a TLS context goes with SSL and SASL_SSL only")
        if (self.protocol in SASL_PROTOCOLS) != (self.sasl is not None):
            raise ValueError(f"{self.protocol}: a SASL login goes with SASL_* only")

    def client_kwargs(self) -> dict[str, Any]:
        """What aiokafka's producers, consumers, admin clients and connections take."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.ssl_context is not None:
            kwargs["ssl_context"] = self.ssl_context
        if self.sasl is not None:
            kwargs.update(
                sasl_mechanism=self.sasl.mechanism,
                sasl_plain_username=self.sasl.username,
                sasl_plain_password=self.sasl.password,
            )
        return kwargs


@dataclass(frozen=True, slots=True)
class KafkaCluster:
    """Where the brokers are (``host:port,...``) and how to reach them."""

    bootstrap_servers: str
    security: KafkaSecurity = KafkaSecurity()

    def client_kwargs(self, client_id: str) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": client_id,
            **self.security.client_kwargs(),
        }


def as_cluster(servers: str | KafkaCluster) -> KafkaCluster:
    """``host:port,...`` of a cluster without security, or the cluster itself (the SDKs take
    either)."""
    return servers if isinstance(servers, KafkaCluster) else KafkaCluster(servers)


def producer_config(
    cluster: KafkaCluster,
    *,
    client_id: str,
    linger_ms: int,
    max_request_bytes: int = 2 * 1_048_576,
    idempotent: bool = False,
    partitioner: KeyPartitioner | None = None,
) -> dict[str, Any]:
    # acks=all for durability. Idempotence (Apache Kafka only: the local broker has no
    # InitProducerId) keeps a send that is retried across a leader failover from writing
    # its records twice. The partitioner is aiokafka's rule with a cache of key hashes;
    # a caller that partitions records itself (the publisher's batches) passes the one it
    # uses, so its choice and the producer's cannot differ.
    return {
        **cluster.client_kwargs(client_id),
        "acks": "all",
        "enable_idempotence": idempotent,
        "linger_ms": linger_ms,
        "max_request_size": max_request_bytes,
        "partitioner": KeyPartitioner() if partitioner is None else partitioner,
    }


def consumer_config(
    cluster: KafkaCluster,
    *,
    group_id: str,
    session_timeout_ms: int,
    max_wait_ms: int,
    max_records: int,
    min_bytes: int = 1,
) -> dict[str, Any]:
    # Positions live in the sink; Kafka commits only serve lag monitoring, so never auto.
    # min_bytes > 1 lets the broker hold a fetch (up to max_wait_ms) until that much is
    # there: fewer, larger batches under light load, each paying one transaction.
    return {
        **cluster.client_kwargs(group_id),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": session_timeout_ms,
        "heartbeat_interval_ms": max(100, session_timeout_ms // 4),
        "rebalance_timeout_ms": max(session_timeout_ms, 10_000),
        "fetch_max_wait_ms": max_wait_ms,
        "fetch_min_bytes": min_bytes,
        "max_poll_records": max_records,
        "max_partition_fetch_bytes": 4 * 1_048_576,
        "isolation_level": "read_uncommitted",
    }
