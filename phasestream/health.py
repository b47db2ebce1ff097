"""Readiness checks for /healthz: can we reach Kafka and Postgres right now?"""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient

from phasestream.http import Check
from phasestream.kafka_cluster import kafka_cluster
from phasestream.settings import Settings
from projections.database import connection


def checks(settings: Settings) -> dict[str, Check]:
    async def postgres() -> None:
        async with connection(settings.resolved_database_url, timeout=2) as conn:
            await conn.fetchval("SELECT 1")

    async def kafka() -> None:
        admin = AIOKafkaAdminClient(
            **kafka_cluster(settings).client_kwargs("phasestream-health"), request_timeout_ms=2000
        )
        await admin.start()
        try:
            await admin.list_topics()
        finally:
            await admin.close()

    return {"kafka": kafka, "postgres": postgres}
