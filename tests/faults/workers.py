"""The fault tests' consumer processes: `phasestream run NAME` in a subprocess, each with its
own HTTP port, known to be ready when its /healthz answers 200 and to be consuming when its
/metrics shows partitions it reads, not from its log text.

Readiness by /healthz matters for the signals the tests send: a process is past its imports
and its startup when its server answers, so a SIGTERM is handled there (exit 0), where one
sent while it was still importing killed it (a flaky exit code under load).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port

#: The gauge a consumer sets for each partition it reads (a label once set stays).
LAG = "phasestream_consumer_lag_records"
PROBE_TIMEOUT = aiohttp.ClientTimeout(total=5)


@dataclass
class Worker:
    """One `phasestream run NAME` process at a time, restarted by :meth:`start`; ``group``
    is the consumer group whose partitions show it is consuming."""

    name: str
    group: str
    env: dict[str, str]
    logs_dir: Path
    label: str = ""  # the logs' name; the consumer's name when empty
    logs: list[Path] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    port: int = 0

    def start(self) -> None:
        self.port = free_port()
        self.logs.append(self.logs_dir / f"{self.label or self.name}-{len(self.logs)}.log")
        env = self.env | {"PHASESTREAM_HTTP_PORT": str(self.port)}
        with self.logs[-1].open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "phasestream", "run", self.name],
                env=env,
                stdout=out,
                stderr=out,
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def healthy(self) -> bool:
        """Whether /healthz answers 200 (its server is up, Kafka and Postgres reachable)."""
        try:
            async with (
                aiohttp.ClientSession(timeout=PROBE_TIMEOUT) as http,
                http.get(f"http://127.0.0.1:{self.port}/healthz") as response,
            ):
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False  # not listening yet

    async def partitions(self) -> int:
        """How many partitions of its group this process has read from (0 before it is
        ready or assigned): the partition labels of its lag gauge."""
        try:
            async with (
                aiohttp.ClientSession(timeout=PROBE_TIMEOUT) as http,
                http.get(f"http://127.0.0.1:{self.port}/metrics") as response,
            ):
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError):
            return 0
        return len(
            {
                sample.labels["partition"]
                for family in text_string_to_metric_families(text)
                if family.name == LAG
                for sample in family.samples
                if sample.labels.get("consumer") == self.group
            }
        )

    async def until_ready(self, timeout_s: float = 60.0) -> None:
        """Wait for /healthz; fail if the process dies or the timeout passes first."""
        deadline = time.monotonic() + timeout_s
        while not await self.healthy():
            assert self.alive(), f"{self.name} died while starting:\n{self.tail()}"
            assert time.monotonic() < deadline, f"{self.name} not ready:\n{self.tail()}"
            await asyncio.sleep(0.05)

    async def until_assigned(self, timeout_s: float) -> bool:
        """Whether it reads partitions within ``timeout_s`` (ready first, however long)."""
        await self.until_ready()
        deadline = time.monotonic() + timeout_s
        while not await self.partitions():
            assert self.alive(), f"{self.name} died while joining:\n{self.tail()}"
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def log(self) -> str:
        """What its current run has logged so far."""
        return self.logs[-1].read_text(errors="replace")

    async def until_logged(self, text: str, timeout_s: float = 60.0) -> None:
        """Wait until its current run logs ``text``; fail if it dies or the timeout passes."""
        deadline = time.monotonic() + timeout_s
        while text not in self.log():
            assert self.alive(), f"{self.name} died:\n{self.tail()}"
            assert time.monotonic() < deadline, f"no {text!r}:\n{self.tail()}"
            await asyncio.sleep(0.05)

    async def kill(self) -> int:
        """SIGKILL: no cleanup, anywhere in or between its commits; the exit code."""
        assert self.process is not None
        assert self.alive(), f"{self.name} died:\n{self.tail()}"
        self.process.kill()
        return await asyncio.to_thread(self.process.wait)

    async def stop(self) -> int | None:
        """SIGTERM and the exit code; None if it had to be killed after 30 s."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.terminate()
        try:
            return await asyncio.to_thread(self.process.wait, 30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            await asyncio.to_thread(self.process.wait)
            return None

    def tail(self, chars: int = 2500) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-chars:]}"
            for log in self.logs[-2:]
            if log.exists()
        )


def tails(running: Iterable[Worker]) -> str:
    return "\n".join(w.tail() for w in running)
