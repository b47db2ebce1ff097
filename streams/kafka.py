"""Client settings shared by every phasestream producer and consumer."""

from __future__ import annotations

from typing import Any


def producer_config(bootstrap_servers: str, *, client_id: str, linger_ms: int,
                    max_request_bytes: int = 2 * 1_048_576,
                    idempotent: bool = False) -> dict[str, Any]:
    # acks=all for durability. Idempotence (Apache Kafka only: the local broker has no
    # InitProducerId) keeps a send that is retried across a leader failover from writing
    # its records twice.
    return {"bootstrap_servers": bootstrap_servers, "client_id": client_id, "acks": "all",
            "enable_idempotence": idempotent, "linger_ms": linger_ms,
            "max_request_size": max_request_bytes}


def consumer_config(bootstrap_servers: str, *, group_id: str, session_timeout_ms: int,
                    max_wait_ms: int, max_records: int) -> dict[str, Any]:
    # Positions live in the sink; Kafka commits only serve lag monitoring, so never auto.
    return {"bootstrap_servers": bootstrap_servers, "group_id": group_id,
            "client_id": group_id, "enable_auto_commit": False,
            "auto_offset_reset": "earliest", "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": max(100, session_timeout_ms // 4),
            "rebalance_timeout_ms": max(session_timeout_ms, 10_000),
            "fetch_max_wait_ms": max_wait_ms, "max_poll_records": max_records,
            "max_partition_fetch_bytes": 4 * 1_048_576, "isolation_level": "read_uncommitted"}
