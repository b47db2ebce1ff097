"""Loading and saving the SLA monitor's state rows for the keys of one batch."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from models.events import PhaseEvent
from models.phases import PhaseStatus
from models.sla.policy import OpenPhase
from models.sla.state import Key, OpenEntry, SlaState
from projections.database import Connection, as_uuid

_KEYS = "(SELECT * FROM unnest($1::text[], $2::int[]))"


def _key_arrays(keys: Iterable[Key]) -> tuple[list[str], list[int]]:
    listed = list(keys)
    return [k[0] for k in listed], [k[1] for k in listed]


async def load_state(conn: Connection, keys: Iterable[Key]) -> SlaState:
    """The state of these keys, locked until the transaction ends."""
    workflows, phases = _key_arrays(keys)
    state = SlaState()
    for row in await conn.fetch(
        f"SELECT * FROM sla_open_phases WHERE (workflow_id, phase_number) IN {_KEYS} FOR UPDATE",
        workflows,
        phases,
    ):
        state.open[(row["workflow_id"], row["phase_number"])] = OpenEntry(
            open_phase(row), row["source_partition"], row["overdue_reported"]
        )
    for row in await conn.fetch(
        f"SELECT * FROM sla_early_terminals WHERE (workflow_id, phase_number) IN {_KEYS} "
        "FOR UPDATE",
        workflows,
        phases,
    ):
        state.early[(row["workflow_id"], row["phase_number"])] = _early_event(row)
    return state


def open_phase(row: Any) -> OpenPhase:
    """The open phase of a ``sla_open_phases`` row."""
    return OpenPhase(
        as_uuid(row["started_event_id"]),
        row["workflow_id"],
        as_uuid(row["user_id"]),
        row["phase_number"],
        row["started_at"],
    )


def _early_event(row: Any) -> PhaseEvent:
    # Only what the SLA decision reads is kept for an early end.
    return PhaseEvent(
        as_uuid(row["event_id"]),
        row["workflow_id"],
        as_uuid(row["user_id"]),
        row["phase_number"],
        PhaseStatus(row["status"]),
        row["event_timestamp"],
        duration_ms=row["duration_ms"],
    )


async def save_state(conn: Connection, before: SlaState, after: SlaState) -> None:
    """Write what changed between ``before`` and ``after``."""
    gone_open = [k for k in before.open if k not in after.open]
    changed_open = [(k, e) for k, e in after.open.items() if before.open.get(k) != e]
    gone_early = [k for k in before.early if k not in after.early]
    changed_early = [(k, e) for k, e in after.early.items() if before.early.get(k) != e]
    if gone_open:
        await conn.execute(
            f"DELETE FROM sla_open_phases WHERE (workflow_id, phase_number) IN {_KEYS}",
            *_key_arrays(gone_open),
        )
    if changed_open:
        await conn.executemany(
            "INSERT INTO sla_open_phases (workflow_id, phase_number, started_event_id, "
            "user_id, started_at, source_partition, overdue_reported) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (workflow_id, phase_number) DO "
            "UPDATE SET started_event_id = EXCLUDED.started_event_id, user_id = "
            "EXCLUDED.user_id, started_at = EXCLUDED.started_at, source_partition = "
            "EXCLUDED.source_partition, overdue_reported = EXCLUDED.overdue_reported",
            [
                (
                    k[0],
                    k[1],
                    e.phase.started_event_id,
                    e.phase.user_id,
                    e.phase.started_at,
                    e.partition,
                    e.overdue_reported,
                )
                for k, e in changed_open
            ],
        )
    if gone_early:
        await conn.execute(
            f"DELETE FROM sla_early_terminals WHERE (workflow_id, phase_number) IN {_KEYS}",
            *_key_arrays(gone_early),
        )
    if changed_early:
        await conn.executemany(
            "INSERT INTO sla_early_terminals (workflow_id, phase_number, event_id, user_id, "
            "status, event_timestamp, duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) "
            "ON CONFLICT (workflow_id, phase_number) DO UPDATE SET event_id = "
            "EXCLUDED.event_id, user_id = EXCLUDED.user_id, status = EXCLUDED.status, "
            "event_timestamp = EXCLUDED.event_timestamp, duration_ms = EXCLUDED.duration_ms, "
            "received_at = now()",
            [
                (k[0], k[1], e.event_id, e.user_id, e.status.value, e.timestamp, e.duration_ms)
                for k, e in changed_early
            ],
        )
