"""`phasestream dev --demo` on the embedded default: broker and Postgres started for you."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phasestream.local_stack import port_open
from tests.conftest import free_port
from tests.support import count_rows, eventually

# `dev` starts its own Tansu: nothing here is about the broker a run points at.
pytestmark = [pytest.mark.integration, pytest.mark.embedded_broker]


def wait_for_line(log: Path, pattern: str, timeout_s: float = 60) -> re.Match[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text())
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no line matching {pattern!r} in:\n{log.read_text()[-3000:]}")


async def test_dev_demo_starts_everything_shows_rows_and_stops_on_ctrl_c(
        tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHASESTREAM_")}
    env |= {"PHASESTREAM_DATA_DIR": str(tmp_path / "data"),
            "PHASESTREAM_EMBEDDED_KAFKA_PORT": str(port),
            "PHASESTREAM_CONSUMER_SESSION_TIMEOUT_MS": "2000", "PHASESTREAM_HTTP_PORT": "0"}
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "phasestream", "dev", "--demo", "--demo-rate", "3"],
            env=env, stdout=out, stderr=out)
    try:
        url = wait_for_line(log, r"embedded Postgres listens at (\S+)").group(1)
        wait_for_line(log, rf"embedded Kafka broker .* listens on 127\.0\.0\.1:{port}")
        wait_for_line(log, r"database schema is current")
        rows = await eventually(lambda: count_rows(url), lambda n: n >= 20, timeout_s=60,
                                what="demo rows in workflow_phase_logs")
        statuses = await count_rows(url, "SELECT count(DISTINCT status) FROM workflow_phase_logs")
        assert statuses >= 2
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert process.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert "running consumers: audit, sla, metrics, rollback, notify" in text
    assert "dev stack stopped" in text
    assert "Traceback" not in text, text[-3000:]
    assert rows >= 20
    assert not port_open("127.0.0.1", port), "the embedded broker still runs"
    assert not (tmp_path / "data" / "postgres" / "postmaster.pid").exists(), "Postgres still runs"
