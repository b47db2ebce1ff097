"""The TypeScript SDK's tests (sdk/typescript, Node's test runner) against the real broker
and the projector this suite starts: the audit projector and the rollback commander run
here, `npm test` runs there with their addresses in the environment.

`make test` runs `npm ci` first (the lockfile's versions); `npm test` builds and runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from phasestream.settings import Settings
from tests.background import consumers_running
from tests.conftest import settings_env

pytestmark = pytest.mark.integration
SDK = Path(__file__).resolve().parents[2] / "sdk" / "typescript"


@contextlib.asynccontextmanager
async def sdk_build_lock() -> AsyncIterator[None]:
    """`npm test` rebuilds dist/ in the checkout: the suites of `make test`, which run at
    the same time, take turns, so that neither runs files the other is rewriting."""
    with (SDK / "node_modules" / ".phasestream-test.lock").open("w") as lock:
        await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


async def test_the_typescript_sdk_passes_its_tests_against_broker_and_projector(
    settings: Settings,
) -> None:
    npm = shutil.which("npm")
    assert npm is not None, "npm is missing: install Node.js 20 (docs/development.md)"
    assert (SDK / "node_modules").is_dir(), (
        "sdk/typescript/node_modules is missing: run `make sdk` (npm ci) first"
    )
    async with sdk_build_lock(), consumers_running(settings, "audit", "rollback"):
        process = await asyncio.create_subprocess_exec(
            npm,
            "test",
            cwd=SDK,
            env=settings_env(settings),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), timeout=240)
    report = output.decode(errors="replace")
    assert process.returncode == 0, report[-6000:]
    assert "# fail 0" in report
    assert "# pass 0\n" not in report
