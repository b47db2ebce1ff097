"""`phasestream dlq redrive`: selected dead letters back onto the phase-events topic, once.

The order of effects:
1. read the letters sent before (``dlq_redrives``) and plan: which letters, which value,
   each validated as the audit projector would validate it;
2. send the planned events keyed by their workflow id and wait for every acknowledgement;
3. record the sent letters in ``dlq_redrives``.
A crash between 2 and 3 sends those events again on the next run; the projections treat an
event id they hold already with the same payload as a no-op, so nothing is counted twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import orjson

from models.dead_letters import StoredLetter
from models.errors import PhasestreamError
from models.redrive import Fix, plan_redrive
from phasestream.settings import Settings
from projections.database import connection, translated
from projections.redrives import record_redriven, redriven
from streams.publisher import PhaseEventPublisher

#: A fixes line longer than this is refused (it could not be a valid event anyway).
MAX_FIX_LINE_BYTES: Final = 2 * 1_048_576


class FixesFileError(PhasestreamError):
    """The --fixes file cannot be used; the message names the line and the cause."""


@dataclass(slots=True)
class Outcome:
    sent: int = 0
    sent_before: int = 0
    invalid: list[str] = field(default_factory=list)

    def summary(self, topic: str, *, dry_run: bool) -> str:
        verb = "would redrive" if dry_run else "redrove"
        return (
            f"{verb} {self.sent} letters to {topic}; {self.sent_before} redriven before "
            f"(not sent again); {len(self.invalid)} still invalid (not sent)"
        )


def read_fixes(path: str) -> dict[str, Fix]:
    fixes: dict[str, Fix] = {}
    if not Path(path).is_file():
        raise FixesFileError(f"--fixes: {path} does not exist")
    with open(path, "rb") as stream:
        for number, line in enumerate(
            iter(lambda: stream.readline(MAX_FIX_LINE_BYTES + 1), b""), start=1
        ):
            if len(line) > MAX_FIX_LINE_BYTES:
                raise FixesFileError(
                    f"--fixes: line {number} is longer than {MAX_FIX_LINE_BYTES} bytes"
                )
            if line.strip():
                fix = _fix(number, line)
                fixes[fix.source] = fix
    return fixes


def _fix(number: int, line: bytes) -> Fix:
    try:
        item = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise FixesFileError(f"--fixes: line {number} is not JSON: {exc}") from None
    if (
        not isinstance(item, dict)
        or not isinstance(item.get("source"), str)
        or not isinstance(item.get("event"), dict)
    ):
        raise FixesFileError(
            f'--fixes: line {number} must be an object with "source" '
            '(TOPIC/PARTITION/OFFSET, as `dlq list` shows it) and "event"'
        )
    return Fix(item["source"], orjson.dumps(item["event"]))


async def redrive(
    settings: Settings, letters: Sequence[StoredLetter], fixes_path: str | None, *, dry_run: bool
) -> Outcome:
    fixes = None if fixes_path is None else read_fixes(fixes_path)
    async with connection(settings.resolved_database_url) as conn:
        async with translated():
            already = await redriven(conn, settings.dlq_topic)
        plan = plan_redrive(letters, fixes, already, max_bytes=settings.max_event_bytes)
        outcome = Outcome(len(plan.send), plan.sent_before, plan.invalid)
        if dry_run or not plan.send:
            return outcome
        async with PhaseEventPublisher(
            settings.bootstrap_servers,
            settings.phase_events_topic,
            linger_ms=settings.producer_linger_ms,
            max_event_bytes=settings.max_event_bytes,
            client_id="phasestream-redrive",
        ) as publisher:
            await publisher.publish_many(event for _, event in plan.send)
        async with translated():
            await record_redriven(
                conn, settings.dlq_topic, [(place, event.event_id) for place, event in plan.send]
            )
        return outcome
