"""A consumer asked to stop while it still waits for its first Postgres connection stops
there, cleanly: exit 0 and one line saying so, not an endless retry or a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from phasestream.settings import Settings
from tests.conftest import free_port, settings_env
from tests.faults.workers import Worker

pytestmark = pytest.mark.integration
RETRYING = "AuditSink: connecting to Postgres failed"
STOPPED = "stopped while waiting for Postgres"


async def test_sigterm_while_waiting_for_postgres_exits_0(
    settings: Settings, tmp_path: Path
) -> None:
    # Nothing listens on that port: every connection attempt is refused.
    nowhere = settings.model_copy(
        update={"database_url": f"postgresql://nobody@127.0.0.1:{free_port()}/none"}
    )
    worker = Worker("audit", settings.audit_consumer_group, settings_env(nowhere), tmp_path)
    worker.start()
    try:
        await worker.until_logged(RETRYING)
        code = await worker.stop()
    finally:
        await worker.stop()
    log = worker.log()
    assert code == 0, log
    said = [line for line in log.splitlines() if STOPPED in line]
    assert len(said) == 1, log
    assert said[0].endswith(f"audit: {STOPPED} (AuditSink)"), log
    assert "Traceback" not in log, log
