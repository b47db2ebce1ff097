"""Which dead letters a redrive sends, and what: a plain function of the letters, the fixes
an operator wrote, and the letters sent before."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from models.dead_letters import StoredLetter
from models.errors import InvalidEventError
from models.event_codec import decode_event
from models.events import PhaseEvent

#: (dlq partition, dlq offset)
LetterPlace = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Fix:
    """A corrected event for the letter of ``source`` ("TOPIC/PARTITION/OFFSET")."""

    source: str
    value: bytes


@dataclass(slots=True)
class RedrivePlan:
    send: list[tuple[LetterPlace, PhaseEvent]] = field(default_factory=list)
    sent_before: int = 0
    #: One line per letter that would be refused again: where it is, field and reason.
    invalid: list[str] = field(default_factory=list)


def plan_redrive(
    letters: Iterable[StoredLetter],
    fixes: Mapping[str, Fix] | None,
    already: set[LetterPlace],
    *,
    max_bytes: int,
) -> RedrivePlan:
    """With ``fixes``, only the letters they name, each with its fix; else every letter as
    it was. Each is validated as the audit projector would (key = workflow id, which is
    the key it is sent with), so nothing is sent that would be dead-lettered again."""
    plan = RedrivePlan()
    for letter in letters:
        place = (letter.dlq_partition, letter.dlq_offset)
        fix = None if fixes is None else fixes.get(letter.source)
        if fixes is not None and fix is None:
            continue
        if place in already:
            plan.sent_before += 1
            continue
        if letter.truncated and fix is None:
            plan.invalid.append(
                f"{letter.source}: $: the letter holds only part of the value "
                "(it was cut); redrive it with a fix"
            )
            continue
        value = letter.value if fix is None else fix.value
        try:
            event = decode_event(value, max_bytes=max_bytes)
        except InvalidEventError as exc:
            plan.invalid.append(f"{letter.source}: {exc.field}: {exc.reason}")
            continue
        plan.send.append((place, event))
    return plan
