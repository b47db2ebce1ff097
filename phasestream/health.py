"""Readiness checks for /healthz: can we reach Kafka and Postgres right now?"""

from __future__ import annotations

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from phasestream.http import Check
from phasestream.kafka_cluster import kafka_cluster
from phasestream.settings import Settings
from phasestream.wiring import database_url


def checks(settings: Settings) -> dict[str, Check]:
    async def postgres() -> None:
        conn = await asyncpg.connect(database_url(settings), timeout=2)
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

    async def kafka() -> None:
        admin = AIOKafkaAdminClient(**kafka_cluster(settings).client_kwargs(
            "phasestream-health"), request_timeout_ms=2000)
        await admin.start()
        try:
            await admin.list_topics()
        finally:
            await admin.close()

    return {"kafka": kafka, "postgres": postgres}
