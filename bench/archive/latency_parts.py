"""Where publish -> visible goes at a steady rate: the audit projector's batches, timed.

Runs ``bench.audit_projection`` (its arguments pass through) with the projector's fetch and
write wrapped, then prints, over the steady phase's batches (fewer than 3,000 events, the
first fifth left out as warm-up):

- how old a batch's newest and oldest records are when ``getmany`` returns them (from each
  record's Kafka timestamp, set by the producer on send: linger, broker, fetch, and the
  time records waited while the previous batch was written);
- how long a write takes (dead letters, the sink transaction, the Kafka commit);
- the gap between one write's end and the next one's start (near 0: the writer never idles).

    .venv/bin/python -m bench.archive.latency_parts --events 20000 --rate 10000 \\
        --seconds 15 --workers 0 --naive-sample 2000

Issue 13 step 6 in bench/RESULTS.md has its figures. It patches the projector's module, so
it is a probe, not a benchmark.
"""

from __future__ import annotations

import statistics
import sys
import time
from itertools import pairwise
from typing import Any

import streams.projector as projector_module

LOG: list[dict[str, Any]] = []
_getmany = projector_module.getmany_or_stop
_write = projector_module.Projector.write


async def _timed_getmany(*args: Any, **kwargs: Any) -> Any:
    called = time.time()
    fetched = await _getmany(*args, **kwargs)
    stamps = [r.timestamp / 1000 for records in fetched.values() for r in records]
    if stamps:
        LOG.append(
            {"kind": "fetch", "called": called, "returned": time.time(), "n": len(stamps)}
            | {"oldest": min(stamps), "newest": max(stamps)}
        )
    return fetched


async def _timed_write(self: Any, batch: Any) -> bool:
    began = time.time()
    written = await _write(self, batch)
    events = sum(len(d.events) for d in batch.values())
    LOG.append({"kind": "write", "began": began, "ended": time.time(), "n": events})
    return written


def _quantiles(values: list[float]) -> str:
    values = sorted(values)
    n = len(values)
    ms = [1000 * values[min(n - 1, int(n * q))] for q in (0.5, 0.9, 0.99)]
    return f"p50 {ms[0]:7.1f}  p90 {ms[1]:7.1f}  p99 {ms[2]:7.1f}  max {1000 * values[-1]:7.1f} ms"


def report() -> None:
    def steady(kind: str) -> list[dict[str, Any]]:
        rows = [e for e in LOG if e["kind"] == kind and e["n"] < 3000]
        return rows[len(rows) // 5 :]

    fetches, writes = steady("fetch"), steady("write")
    if len(fetches) < 10 or len(writes) < 10:
        print("too few steady batches to report")
        return
    print(f"steady batches: {len(writes)}, mean {statistics.mean(w['n'] for w in writes):.0f}")
    lines = {
        "newest record's age when fetched": [f["returned"] - f["newest"] for f in fetches],
        "oldest record's age when fetched": [f["returned"] - f["oldest"] for f in fetches],
        "write (sink transaction, commit)": [w["ended"] - w["began"] for w in writes],
        "gap between writes              ": [b["began"] - a["ended"] for a, b in pairwise(writes)],
    }
    for label, values in lines.items():
        print(f"{label} : {_quantiles(values)}")


if __name__ == "__main__":
    projector_module.getmany_or_stop = _timed_getmany  # type: ignore[assignment]
    projector_module.Projector.write = _timed_write  # type: ignore[method-assign]
    from bench import audit_projection

    code = audit_projection.main(sys.argv[1:])
    report()
    sys.exit(code)
