"""`phasestream dev --demo` on the embedded default: broker and Postgres started for you."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from phasestream.local_stack import port_open
from tests.conftest import free_port
from tests.waiting import count_rows, eventually

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


def dev_env(data_dir: Path, kafka_port: int, http_port: int = 0) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHASESTREAM_")}
    return env | {
        "PHASESTREAM_DATA_DIR": str(data_dir),
        "PHASESTREAM_EMBEDDED_KAFKA_PORT": str(kafka_port),
        "PHASESTREAM_CONSUMER_SESSION_TIMEOUT_MS": "2000",
        "PHASESTREAM_HTTP_PORT": str(http_port),
    }


def start_dev(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "phasestream", "dev", "--demo", "--demo-rate", "3"],
            env=env,
            stdout=out,
            stderr=out,
        )


def refused(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A `phasestream dev` expected to refuse at once."""
    return subprocess.run(
        [sys.executable, "-m", "phasestream", "dev"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_dev_demo_starts_everything_shows_rows_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "dev.log"
    env = dev_env(tmp_path / "data", port) | {"PHASESTREAM_PROGRESS_INTERVAL_S": "1"}
    process = start_dev(env, log)
    try:
        url = wait_for_line(log, r"embedded Postgres listens at (\S+)").group(1)
        wait_for_line(log, rf"embedded Kafka broker .* listens on 127\.0\.0\.1:{port}")
        wait_for_line(log, r"database schema is current")
        rows = await eventually(
            lambda: count_rows(url),
            lambda n: n >= 20,
            timeout_s=60,
            what="demo rows in workflow_phase_logs",
        )
        await check_guided_start(log, tmp_path / "data")
        # With a 1 s interval, the audit projector's progress shows while the demo runs.
        wait_for_line(log, r"audit\S*: \d+ events applied")
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


async def check_guided_start(log: Path, data: Path) -> None:
    """The ready block names the real port; / leads to the dashboard; /api/ speaks JSON."""
    block = wait_for_line(log, r"ready:\n(?:  .*\n){7}").group(0)
    http = re.search(r"dashboard +(http://127\.0\.0\.1:(\d+))/dashboard\n", block)
    assert http, block
    base, bound = http.group(1), http.group(2)
    assert bound != "0"
    for line in (
        f"  API        {base}/api/analytics",
        f"(OpenAPI: {base}/api/openapi.json)",
        f"  metrics    {base}/metrics",
        f"  WebSocket  ws://127.0.0.1:{bound}/ws",
        "  stop       Ctrl-C",
        f"  reset      stop, then delete {data}",
    ):
        assert line in block, block
    cli = re.search(r"  CLI        (\S+) report analytics", block)
    assert cli, block
    assert Path(cli.group(1)).name == "phasestream"
    assert Path(cli.group(1)).exists() or (Path.cwd() / cli.group(1)).exists()
    async with aiohttp.ClientSession(base) as session:
        async with session.get("/", allow_redirects=False) as home:
            assert home.status == 307
            assert home.headers["Location"] == "dashboard"
        async with session.get("/") as followed:
            assert followed.status == 200
            assert followed.url.path == "/dashboard"
        async with session.get("/api/no-such-report") as missing:
            assert missing.status == 404
            assert (await missing.json())["error"].startswith("no endpoint /api/no-such-report")


POSITIONS = (
    "SELECT consumer || '/' || topic || '/' || partition AS k, next_offset "
    "FROM phasestream_consumer_positions"
)


async def positions(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        return {r["k"]: r["next_offset"] for r in await conn.fetch(POSITIONS)}
    finally:
        await conn.close()


async def test_a_second_dev_on_the_same_data_dir_refuses_and_changes_nothing(
    tmp_path: Path,
) -> None:
    data, log = tmp_path / "data", tmp_path / "dev.log"
    first = start_dev(dev_env(data, free_port()), log)
    try:
        url = wait_for_line(log, r"embedded Postgres listens at (\S+)").group(1)
        wait_for_line(log, r"database schema is current")
        await eventually(lambda: count_rows(url), lambda n: n >= 10, timeout_s=60, what="demo rows")
        before = await positions(url)
        second_kafka = free_port()
        done = refused(dev_env(data, second_kafka))
        after = await positions(url)
        rows = await count_rows(url)
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: another phasestream dev (pid {first.pid}) is running on {data}; stop it, "
        "or give this one its own PHASESTREAM_DATA_DIR"
    ]
    assert not port_open("127.0.0.1", second_kafka), "the second one started a broker"
    # The running stack's consumers were not reset: every position stayed or moved on.
    assert before
    assert all(after.get(k, -1) >= v for k, v in before.items()), (before, after)
    assert rows >= 10
    assert "Traceback" not in log.read_text()


async def test_dev_refuses_a_busy_http_port_before_starting_anything(tmp_path: Path) -> None:
    kafka = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        http = busy.getsockname()[1]
        done = refused(dev_env(tmp_path / "data", kafka, http))
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: something already listens on 127.0.0.1:{http}, the HTTP port (Address "
        "already in use); stop it, or set PHASESTREAM_HTTP_PORT to another port "
        "(0: any free one)"
    ]
    assert not port_open("127.0.0.1", kafka), "a broker was started"
    assert not (tmp_path / "data" / "postgres").exists(), "Postgres was started"
