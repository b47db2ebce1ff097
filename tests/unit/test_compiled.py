"""The compiled decoders (msgspec) against the reference validators they stand in front of.

The compiled path may only make decoding faster: on every payload it either defers (None) or
returns exactly what the reference returns; it never accepts what the reference rejects.
Realistic events must take it, or it would be speed on paper only.
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from models.command_codec import COMMANDS, encode_command, reference_decode_command
from models.compiled import CompiledContract
from models.errors import InvalidEventError
from models.event_codec import (
    DEFAULT_MAX_EVENT_BYTES,
    PHASE_EVENTS,
    encode_event,
    reference_decode_event,
)
from models.rollback import RetryPolicy, RollbackPolicy, WorkflowHistory, decide
from models.schema import phase_event_schema, rollback_command_schema
from models.sla.policy import judge_open
from models.sla.violation_codec import VIOLATIONS, encode_violation, reference_decode_violation
from models.validation import TIMESTAMP_PATTERN, UUID_PATTERN
from phasestream.demo import workflow_events
from tests.unit.test_contract import _MUTATIONS, BAD, GOOD, random_events
from tests.unit.test_rollback import FRESH, NOW, failure
from tests.unit.test_sla import PHASE, T0


def reference_verdict(contract: CompiledContract[Any, Any], payload: bytes) -> object:
    try:
        return contract.reference(payload)
    except InvalidEventError as exc:
        return exc


def assert_agrees(contract: CompiledContract[Any, Any], payload: bytes) -> bool:
    """The compiled path defers or matches the reference; True if it decided."""
    compiled = contract.compiled(payload)
    if compiled is None:
        return False
    assert compiled == reference_verdict(contract, payload), payload[:300]
    return True


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in GOOD])
def test_good_corpus_takes_the_compiled_path(case: Any) -> None:
    assert assert_agrees(PHASE_EVENTS, case.payload)


#: The size limit is decode_event's, before either path.
@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, id=c.name)
        for c in BAD
        if c.payload and c.max_bytes == DEFAULT_MAX_EVENT_BYTES
    ],
)
def test_compiled_path_never_accepts_a_bad_event(case: Any) -> None:
    assert PHASE_EVENTS.compiled(case.payload) is None
    with pytest.raises(InvalidEventError):
        reference_decode_event(case.payload)


def test_realistic_and_generated_events_take_the_compiled_path() -> None:
    rng = random.Random(3)
    events = [e for _ in range(200) for e in workflow_events(rng, datetime.now(UTC))]
    events += list(random_events(5, 500))
    for event in events:
        wire = encode_event(event)
        assert assert_agrees(PHASE_EVENTS, wire)
        assert PHASE_EVENTS.decode(wire) == event


def mutate(rng: random.Random, payload: dict[str, Any]) -> bytes:
    name = rng.choice([*payload, "unknown_field"])
    extra: list[Any] = [
        "2026-01-31 12:00:00Z",
        "2026-01-31T12:00:00.1234567Z",
        "2026-01-31T12:00:00+0530",
        "2026-02-30T12:00:00Z",
        2**63,
        2**64,
        -(2**63) - 1,
        1.0,
        "6f1c2a3e8b4d4c5e9f607a8b9c0d1e2f",
        "x\x00",
        {"n": 2**70},
        {"n": [1e308, -0.0, "\u2028"]},
    ]
    if rng.random() < 0.1:
        payload.pop(name, None)
    else:
        payload[name] = rng.choice(_MUTATIONS + extra)
    # The standard library writes integers of any size (orjson refuses beyond 64 bits).
    return json.dumps(payload, ensure_ascii=rng.random() < 0.3).encode()


def test_compiled_and_reference_agree_on_mutated_events() -> None:
    rng = random.Random(17)
    decided = 0
    for event in random_events(17, 1500):
        decided += assert_agrees(PHASE_EVENTS, mutate(rng, orjson.loads(encode_event(event))))
    assert decided > 0


def commands() -> list[bytes]:
    policies = [RollbackPolicy(max_per_workflow=9, retry=RetryPolicy(enabled=True, max_attempts=1))]
    decisions = [
        decide(failure(phase), WorkflowHistory(retries=r), policy, NOW, 0.5)
        for phase in (2, 5)
        for r in (0, 1)
        for policy in policies
    ]
    decisions.append(decide(failure(3), FRESH, RollbackPolicy(), NOW, 0.5))
    return [encode_command(c) for d in decisions for c in d.commands]


def violations() -> list[bytes]:
    found = [
        judge_open(PHASE, threshold, T0 + timedelta(seconds=s), 0)
        for threshold in (10, 1000)
        for s in (5, 50)
    ]
    return [encode_violation(v) for v in found if v is not None]


@pytest.mark.parametrize(
    ("contract", "payloads"),
    [
        pytest.param(COMMANDS, commands, id="rollback-commands"),
        pytest.param(VIOLATIONS, violations, id="sla-violations"),
    ],
)
def test_commands_and_violations_agree_with_their_reference(
    contract: CompiledContract[Any, Any], payloads: Any
) -> None:
    good = payloads()
    assert len(good) >= 2
    rng = random.Random(23)
    decided = 0
    for wire in good:
        assert assert_agrees(contract, wire)
        for _ in range(200):
            decided += assert_agrees(contract, mutate(rng, orjson.loads(wire)))
    assert decided > 0
    for wire in (b"", b"[]", b"{}", good[0][:-3], good[0].replace(b'"kind":"', b'"kind":"x')):
        assert contract.compiled(wire) is None
        assert isinstance(reference_verdict(contract, wire), InvalidEventError)


def test_reference_names_the_field_of_a_command_timestamp() -> None:
    payload = orjson.loads(commands()[0]) | {"issued_at": "yesterday"}
    with pytest.raises(InvalidEventError) as caught:
        reference_decode_command(orjson.dumps(payload))
    assert caught.value.field == "issued_at"
    violation = orjson.loads(violations()[0]) | {"detected_at": "2026-02-30T00:00:00Z"}
    with pytest.raises(InvalidEventError) as caught:
        reference_decode_violation(orjson.dumps(violation))
    assert caught.value.field == "detected_at"


def test_compiled_timestamp_pattern_is_the_schemas() -> None:
    event_schema: Any = phase_event_schema()
    command_schema: Any = rollback_command_schema()
    assert event_schema["properties"]["timestamp"]["pattern"] == TIMESTAMP_PATTERN
    assert command_schema["properties"]["issued_at"]["pattern"] == TIMESTAMP_PATTERN


def test_nul_anywhere_and_deep_metadata_defer_to_the_reference() -> None:
    base = orjson.loads(encode_event(next(random_events(2, 1))))
    for payload in (
        {**base, "metadata": {"note": "a\x00"}},
        {**base, "error_stack": "\x00"},
        {
            **base,
            "metadata": {"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]},
        },
    ):
        wire = orjson.dumps(payload)
        assert PHASE_EVENTS.compiled(wire) is None
        assert isinstance(reference_verdict(PHASE_EVENTS, wire), InvalidEventError)
    just_deep_enough = {
        **base,
        "metadata": {"k": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]},
    }
    assert PHASE_EVENTS.compiled(orjson.dumps(just_deep_enough)) is not None
    # An escape that is no NUL (a backslash in the payload) stays on the compiled path.
    escaped = {**base, "error_stack": 'Traceback:\n  "x"\t\\', "metadata": {"é": "\u2028"}}
    assert b"\\" in orjson.dumps(escaped)
    assert PHASE_EVENTS.compiled(orjson.dumps(escaped)) is not None


def test_uuids_are_the_reference_uuids() -> None:
    for value in [str(uuid.uuid4()), str(uuid.uuid4()).upper()]:
        payload = orjson.loads(encode_event(next(random_events(4, 1)))) | {"user_id": value}
        decoded = PHASE_EVENTS.compiled(orjson.dumps(payload))
        assert decoded is not None
        assert decoded.user_id == uuid.UUID(value)
        assert decoded.user_id.is_safe == uuid.UUID(value).is_safe


def test_uuid_tokens_accept_exactly_the_uuid_pattern() -> None:
    """as_uuid's premise: of 36-character strings, msgspec parses just UUID_PATTERN's form."""
    rng = random.Random(8)
    canonical = "6f1c1d2e-8a4b-4c4f-9f6e-1a2b3c4d5e6f"
    alphabet = "0123456789abcdefABCDEFgG-_{} \u0661xX+\n"
    texts = [
        canonical,
        canonical.upper(),
        canonical.replace("-", ""),
        "{" + canonical[1:-1] + "}",
        canonical[:-1] + "\n",
        "0" * 32 + "----",
        canonical.replace("-", "_"),
    ]
    texts += [
        "".join(rng.choice(alphabet) if rng.random() < 0.06 else c for c in canonical)
        for _ in range(5000)
    ]
    for text in texts:
        wire = orjson.loads(encode_event(next(random_events(9, 1)))) | {"event_id": text}
        decoded = PHASE_EVENTS.compiled(orjson.dumps(wire))
        if UUID_PATTERN.fullmatch(text):
            assert decoded is not None, text
            assert decoded.event_id == uuid.UUID(text)
        else:
            assert decoded is None, text
    # The same UUID with its first digit escaped: the reference takes it, the token defers.
    good = orjson.loads(encode_event(next(random_events(9, 1)))) | {"event_id": canonical}
    escaped = orjson.dumps(good).replace(b'"event_id":"6', b'"event_id":"\\u0036', 1)
    assert PHASE_EVENTS.compiled(escaped) is None
    assert PHASE_EVENTS.decode(escaped).event_id == uuid.UUID(canonical)
