"""Decoding one phase event: the reference validator against the compiled decoder.

On the same N realistic events (``scratch.make_events``: demo workflows, as the audit
benchmark publishes them), in one process and one run, interleaved, best of R rounds:

- ``reference``: orjson, then every field checked by hand
  (``models.event_codec.reference_decode_event``, what ``decode_record`` was before the
  compiled decoder), plus the key check;
- ``compiled``: ``models.event_codec.decode_record``, msgspec first (what the consumers run);
- ``orjson.loads`` alone and msgspec's wire decode alone, the floors of either;
- ``frozen msgspec Struct as the value``: msgspec decoding straight into a frozen Struct of
  the same fields with typed ids, time and metadata (``DomainStruct``), no rule it cannot
  state: the floor if msgspec built the domain value in one step. ``PhaseEvent`` is a
  frozen Struct too, but built from the wire form, because msgspec's UUID and datetime
  parsers accept forms the contract refuses (bench/RESULTS.md, issue 13 step 5).

The machine may be shared: compare the lines of one run with each other (ratios), not with
another run's. ``--quick`` (``make bench-quick``) uses N = 20,000 and 3 rounds.

    .venv/bin/python -m bench.decode [--events 100000] [--rounds 5] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
import orjson

from bench import scratch
from models.errors import InvalidEventError
from models.event_codec import PHASE_EVENTS, decode_record, encode_event, reference_decode_event
from models.phases import PhaseStatus

_Phase = Annotated[int, msgspec.Meta(ge=1, le=7)]


class DomainStruct(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """The phase event as a frozen Struct with typed fields (not used by the product)."""

    schema_version: Literal[1]
    event_id: uuid.UUID
    workflow_id: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    user_id: uuid.UUID
    phase_number: _Phase
    status: PhaseStatus
    timestamp: Annotated[datetime, msgspec.Meta(tz=True)]
    duration_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None
    previous_phase: _Phase | None = None
    error_message: str | None = None
    error_stack: str | None = None
    metadata: dict[str, Any] = {}
    rollback_triggered: bool | None = None
    rollback_to_phase: _Phase | None = None


def reference_record(key: bytes, value: bytes) -> Any:
    event = reference_decode_event(value)
    if key != event.key:
        raise InvalidEventError("workflow_id", "does not match the record key")
    return event


def lines(records: Sequence[tuple[bytes, bytes]]) -> dict[str, Callable[[], None]]:
    wire = PHASE_EVENTS.decoder.decode
    domain = msgspec.json.Decoder(DomainStruct).decode

    def reference() -> None:
        for key, value in records:
            reference_record(key, value)

    def compiled() -> None:
        for key, value in records:
            decode_record(key, value)

    def orjson_alone() -> None:
        for _, value in records:
            orjson.loads(value)

    def msgspec_alone() -> None:
        for _, value in records:
            wire(value)

    def domain_struct() -> None:
        for _, value in records:
            domain(value)

    return {
        "reference (orjson + hand-written checks)": reference,
        "compiled (msgspec + raw-byte checks)": compiled,
        "orjson.loads alone": orjson_alone,
        "msgspec wire decode alone": msgspec_alone,
        "frozen msgspec Struct as the value": domain_struct,
    }


def measure(records: Sequence[tuple[bytes, bytes]], rounds: int) -> dict[str, float]:
    """Best CPU µs per event of each line over ``rounds`` interleaved rounds."""
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, run in lines(records).items():
            # CPU time, not wall time: on a shared machine waiting for a core is not decoding.
            began = time.process_time()
            run()
            us = (time.process_time() - began) / len(records) * 1e6
            best[name] = min(best.get(name, us), us)
    return best


def parse_args(argv: Iterable[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20_240_601)
    parser.add_argument("--quick", action="store_true", help="N = 20,000, 3 rounds")
    args = parser.parse_args(None if argv is None else list(argv))
    if args.quick:
        args.events, args.rounds = 20_000, 3
    return args


def main(argv: Iterable[str] | None = None) -> int:
    args = parse_args(argv)
    events = scratch.make_events(args.events, args.seed)
    records = [(e.key, encode_event(e)) for e in events]
    if any(decode_record(k, v) != e for (k, v), e in zip(records, events, strict=True)):
        raise SystemExit("the compiled decoder does not give back the published events")
    size = sum(len(v) for _, v in records) / len(records)
    best = measure(records, args.rounds)
    print(
        f"decoding {len(records):,} realistic events ({size:.0f} bytes each), "
        f"best of {args.rounds} interleaved rounds, CPU µs per event:"
    )
    for name, us in best.items():
        print(f"  {name:42s} {us:6.2f}")
    reference, compiled = list(best.values())[:2]
    print(f"  compiled is {reference / compiled:.1f}x faster than the reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
