"""The event contract: the Python validator, the codec and the shipped JSON Schema agree.

A corpus of good and bad payloads runs through ``decode_event``; every rejection must name
the field the contract blames. The same corpus runs through the JSON Schema, which must
reach the same verdict except for the rules a JSON Schema cannot state ("validator-only").
"""

from __future__ import annotations

import ast
import pickle
import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
import pytest
from jsonschema import Draft202012Validator
from msgspec.structs import replace

from models.errors import InvalidEventError
from models.event_codec import DEFAULT_MAX_EVENT_BYTES, decode_event, decode_record, encode_event
from models.events import SCHEMA_VERSION, PhaseEvent
from models.phases import LAST_PHASE, STATUSES, PhaseStatus
from models.schema import phase_event_schema
from models.validation import (
    MAX_DURATION_MS,
    MAX_METADATA_DEPTH,
    MAX_WORKFLOW_ID_CHARS,
    OPTIONAL,
    REQUIRED,
    UUID_PATTERN,
    event_from_mapping,
    uuid_from_checked,
)

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"

EVENT_ID = "6f1c2a3e-8b4d-4c5e-9f60-7a8b9c0d1e2f"
USER_ID = "0b7e4d2c-1a3f-4e5d-8c6b-9a0f1e2d3c4b"

MINIMAL: dict[str, Any] = {
    "schema_version": 1,
    "event_id": EVENT_ID,
    "workflow_id": "wf-0001",
    "user_id": USER_ID,
    "phase_number": 3,
    "status": "started",
    "timestamp": "2026-01-31T12:00:00Z",
}

FULL: dict[str, Any] = {
    **MINIMAL,
    "status": "completed",
    "duration_ms": 1_234,
    "previous_phase": 2,
    "error_message": None,
    "error_stack": None,
    "metadata": {"engine": "temporal", "attempt": 2, "tags": ["a", "b"], "ok": True},
    "rollback_triggered": False,
    "rollback_to_phase": None,
}


#: Passed as a field's value to ``event`` to leave the field out.
MISSING: Any = object()


def event(**changes: Any) -> dict[str, Any]:
    """MINIMAL with fields set (or removed, when the value is the MISSING sentinel)."""
    payload = dict(MINIMAL)
    for name, value in changes.items():
        if value is MISSING:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


def nested(depth: int) -> dict[str, Any]:
    """A metadata object whose deepest value sits at level ``depth`` (metadata is level 1)."""
    value: Any = "leaf"
    for _ in range(depth - 1):
        value = {"a": value}
    assert isinstance(value, dict)
    return value


def dumps(payload: object) -> bytes:
    return orjson.dumps(payload)


@dataclass(frozen=True)
class Case:
    name: str
    payload: bytes | None
    #: None for a good event; else the field InvalidEventError must name.
    field: str | None = None
    #: Why the JSON Schema cannot see this rule; None when the schema must agree.
    validator_only: str | None = None
    max_bytes: int = DEFAULT_MAX_EVENT_BYTES


def good(name: str, payload: dict[str, Any]) -> Case:
    return Case(name, dumps(payload))


def bad(
    name: str,
    payload: object,
    field: str,
    validator_only: str | None = None,
    max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> Case:
    raw = payload if payload is None or isinstance(payload, bytes) else dumps(payload)
    return Case(name, raw, field, validator_only, max_bytes)


NUL = "NUL characters cannot be excluded from every string by a JSON Schema"
DEPTH = "JSON Schema cannot bound the nesting depth of a free-form object"
SIZE = "JSON Schema sees the parsed value, not the payload's size in bytes"
CALENDAR = "a regular expression does not know the length of each month"
INTEGRAL = "JSON Schema treats 3.0 as an integer (and 1.0 as equal to 1)"
NEWLINE = "Python's re lets $ match before a trailing newline (ECMA-262 does not)"

GOOD: list[Case] = [
    good("minimal-required-fields", MINIMAL),
    good("all-fields", FULL),
    good("status-started", event(status="started")),
    good("status-completed", event(status="completed", duration_ms=0)),
    good(
        "status-failed",
        event(
            status="failed",
            duration_ms=5,
            error_message="boom",
            error_stack="Traceback (most recent call last):\n  ...",
        ),
    ),
    good(
        "status-rolled-back",
        event(status="rolled_back", rollback_triggered=True, rollback_to_phase=1, previous_phase=3),
    ),
    good("fraction-1-digit", event(timestamp="2026-01-31T12:00:00.5Z")),
    good("fraction-9-digits", event(timestamp="2026-01-31T12:00:00.123456789Z")),
    good("offset-plus-0530", event(timestamp="2026-01-31T17:30:00+05:30")),
    good("offset-minus-0800", event(timestamp="2026-01-31T04:00:00-08:00")),
    good("offset-minus-0000", event(timestamp="2026-01-31T12:00:00-00:00")),
    good("offset-plus-2359", event(timestamp="2026-01-31T12:00:00+23:59")),
    good("offset-upper-z", event(timestamp="2026-01-31T12:00:00Z")),
    good("offset-lower-z-and-t", event(timestamp="2026-01-31t12:00:00.25z")),
    good("leap-day", event(timestamp="2028-02-29T23:59:59Z")),
    good("year-2000-as-written", event(timestamp="2000-01-01T00:30:00+01:00")),
    good("year-2099-as-written", event(timestamp="2099-12-31T23:30:00-01:00")),
    good("unicode-workflow-id", event(workflow_id="ワークフロー-é-🚀")),
    good("workflow-id-255-chars", event(workflow_id="w" * MAX_WORKFLOW_ID_CHARS)),
    good("workflow-id-255-multibyte", event(workflow_id="é" * MAX_WORKFLOW_ID_CHARS)),
    good("workflow-id-1-char", event(workflow_id="x")),
    good("uppercase-uuids", event(event_id=EVENT_ID.upper(), user_id=USER_ID.upper())),
    good("nested-metadata", event(metadata={"a": {"b": [1, {"c": None}], "d": 1.5}})),
    good("metadata-at-max-depth", event(metadata=nested(MAX_METADATA_DEPTH))),
    good("optional-fields-null", event(**dict.fromkeys(OPTIONAL))),
    good("duration-max", event(status="completed", duration_ms=MAX_DURATION_MS)),
    good(
        "phases-at-bounds",
        event(phase_number=LAST_PHASE, previous_phase=1, rollback_to_phase=LAST_PHASE),
    ),
]

BAD: list[Case] = [
    # Bytes that are not a JSON object at all.
    bad("not-json", b"this is not json", "$"),
    bad("truncated-json", dumps(MINIMAL)[:-7], "$"),
    bad("invalid-utf8", dumps(MINIMAL).replace(b"wf-0001", b"wf-\xff\xfe01"), "$"),
    bad("empty-bytes", b"", "$"),
    bad("tombstone-none", None, "$"),
    bad("json-null", b"null", "$"),
    bad("top-level-array", [MINIMAL], "$"),
    bad("top-level-string", "event", "$"),
    bad("payload-over-limit", MINIMAL, "$", SIZE, max_bytes=64),
    # Shape: required, unknown, version.
    *[bad(f"missing-{name}", event(**{name: MISSING}), name) for name in REQUIRED],
    bad("empty-object", {}, "schema_version"),
    bad("unknown-extra-field", event(priority="high"), "priority"),
    bad("schema-version-2", event(schema_version=2), "schema_version"),
    bad("schema-version-string", event(schema_version="1"), "schema_version"),
    bad("schema-version-bool", event(schema_version=True), "schema_version"),
    bad("schema-version-null", event(schema_version=None), "schema_version"),
    bad("schema-version-float", event(schema_version=1.0), "schema_version", INTEGRAL),
    # Ids.
    bad("event-id-not-uuid", event(event_id="not-a-uuid"), "event_id"),
    bad("event-id-no-hyphens", event(event_id=EVENT_ID.replace("-", "")), "event_id"),
    bad("event-id-braces", event(event_id="{" + EVENT_ID + "}"), "event_id"),
    bad("event-id-trailing-newline", event(event_id=EVENT_ID + "\n"), "event_id"),
    bad("event-id-integer", event(event_id=12345), "event_id"),
    bad("user-id-not-uuid", event(user_id="user-42"), "user_id"),
    bad("user-id-null", event(user_id=None), "user_id"),
    bad("workflow-id-256-chars", event(workflow_id="w" * 256), "workflow_id"),
    bad("workflow-id-empty", event(workflow_id=""), "workflow_id"),
    bad("workflow-id-integer", event(workflow_id=7), "workflow_id"),
    bad("workflow-id-nul", event(workflow_id="wf\x001"), "workflow_id", NUL),
    # Phases.
    bad("phase-string", event(phase_number="3"), "phase_number"),
    bad("phase-bool", event(phase_number=True), "phase_number"),
    bad("phase-float", event(phase_number=3.5), "phase_number"),
    bad("phase-integral-float", event(phase_number=3.0), "phase_number", INTEGRAL),
    bad("phase-0", event(phase_number=0), "phase_number"),
    bad("phase-8", event(phase_number=8), "phase_number"),
    bad(
        "phase-huge",
        dumps(event(phase_number=MISSING)).replace(
            b"{", b'{"phase_number":123456789012345678901234567890,', 1
        ),
        "phase_number",
    ),
    bad("previous-phase-0", event(previous_phase=0), "previous_phase"),
    bad("previous-phase-string", event(previous_phase="2"), "previous_phase"),
    bad("rollback-to-phase-8", event(rollback_to_phase=8), "rollback_to_phase"),
    # Status.
    bad("status-unknown", event(status="done"), "status"),
    bad("status-uppercase", event(status="STARTED"), "status"),
    bad("status-integer", event(status=1), "status"),
    # Timestamps.
    bad("timestamp-naive", event(timestamp="2026-01-31T12:00:00"), "timestamp"),
    bad("timestamp-year-1999", event(timestamp="1999-12-31T23:59:59Z"), "timestamp"),
    bad("timestamp-year-2100", event(timestamp="2100-01-01T00:00:00Z"), "timestamp"),
    bad("timestamp-1999-as-written", event(timestamp="1999-12-31T23:30:00-01:00"), "timestamp"),
    bad("timestamp-date-only", event(timestamp="2026-01-31"), "timestamp"),
    bad("timestamp-space-separator", event(timestamp="2026-01-31 12:00:00Z"), "timestamp"),
    bad(
        "timestamp-10-fraction-digits",
        event(timestamp="2026-01-31T12:00:00.1234567890Z"),
        "timestamp",
    ),
    bad("timestamp-hour-24", event(timestamp="2026-01-31T24:00:00Z"), "timestamp"),
    bad("timestamp-leap-second", event(timestamp="2026-12-31T23:59:60Z"), "timestamp"),
    bad("timestamp-month-13", event(timestamp="2026-13-01T12:00:00Z"), "timestamp"),
    bad("timestamp-offset-minute-60", event(timestamp="2026-01-31T12:00:00+05:60"), "timestamp"),
    bad("timestamp-offset-hour-24", event(timestamp="2026-01-31T12:00:00+24:00"), "timestamp"),
    bad("timestamp-offset-no-colon", event(timestamp="2026-01-31T12:00:00+0530"), "timestamp"),
    bad(
        "timestamp-non-ascii-digit",
        event(timestamp="2026-01-31T12:00:00.123456\u0661Z"),
        "timestamp",
    ),
    bad("timestamp-epoch-number", event(timestamp=1_769_860_800), "timestamp"),
    bad("timestamp-feb-30", event(timestamp="2026-02-30T12:00:00Z"), "timestamp", CALENDAR),
    bad("timestamp-apr-31", event(timestamp="2026-04-31T12:00:00Z"), "timestamp", CALENDAR),
    bad("timestamp-feb-29-no-leap", event(timestamp="2026-02-29T12:00:00Z"), "timestamp", CALENDAR),
    bad(
        "timestamp-trailing-newline",
        event(timestamp="2026-01-31T12:00:00Z\n"),
        "timestamp",
        NEWLINE,
    ),
    # Durations.
    bad("duration-negative", event(duration_ms=-1), "duration_ms"),
    bad("duration-2-pow-31", event(duration_ms=2**31), "duration_ms"),
    bad("duration-float", event(duration_ms=1.5), "duration_ms"),
    bad("duration-string", event(duration_ms="100"), "duration_ms"),
    bad("duration-integral-float", event(duration_ms=100.0), "duration_ms", INTEGRAL),
    # Texts, flags, metadata.
    bad("error-message-integer", event(error_message=42), "error_message"),
    bad("error-stack-list", event(error_stack=["frame"]), "error_stack"),
    bad("error-message-nul", event(error_message="bad\x00byte"), "error_message", NUL),
    bad("rollback-triggered-string", event(rollback_triggered="yes"), "rollback_triggered"),
    bad("rollback-triggered-int", event(rollback_triggered=1), "rollback_triggered"),
    bad("metadata-list", event(metadata=["a", "b"]), "metadata"),
    bad("metadata-string", event(metadata="{}"), "metadata"),
    bad(
        "metadata-40-deep",
        event(metadata=nested(40)),
        "metadata" + ".a" * MAX_METADATA_DEPTH,
        DEPTH,
    ),
    bad(
        "metadata-one-too-deep",
        event(metadata=nested(MAX_METADATA_DEPTH + 1)),
        "metadata" + ".a" * MAX_METADATA_DEPTH,
        DEPTH,
    ),
    bad("metadata-nul-value", event(metadata={"note": "a\x00b"}), "metadata.note", NUL),
    bad("metadata-nul-in-list", event(metadata={"tags": ["ok", "\x00"]}), "metadata.tags[1]", NUL),
    bad("metadata-nul-key", event(metadata={"k\x00": 1}), "metadata", NUL),
]

CORPUS = GOOD + BAD


def case_params(cases: list[Case]) -> list[Any]:
    return [pytest.param(case, id=case.name) for case in cases]


def parsed_object(case: Case) -> dict[str, Any] | None:
    """The payload as a JSON object, or None if it is not one."""
    if not case.payload:
        return None
    try:
        value = orjson.loads(case.payload)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


SCHEMA_CASES = [c for c in CORPUS if c.validator_only is None and parsed_object(c) is not None]
VALIDATOR_ONLY = [c for c in CORPUS if c.validator_only is not None]


@pytest.fixture(scope="module")
def schema() -> dict[str, object]:
    return phase_event_schema()


@pytest.fixture(scope="module")
def validator(schema: dict[str, object]) -> Draft202012Validator:
    return Draft202012Validator(schema)


# --- the corpus itself ---------------------------------------------------------------


def test_corpus_is_large_and_varied() -> None:
    assert len(GOOD) >= 8
    assert len(BAD) >= 30
    names = [case.name for case in CORPUS]
    assert len(names) == len(set(names)), "case names must be unique"
    assert {orjson.loads(c.payload)["status"] for c in GOOD if c.payload} == set(STATUSES)
    blamed = {case.field for case in BAD}
    assert set(REQUIRED) | {"$", "metadata", "duration_ms"} <= blamed
    # Most bad cases must be judged by the schema too, not waved through as validator-only.
    assert len(SCHEMA_CASES) > 2 * len(VALIDATOR_ONLY)


# --- decode_event over the corpus ----------------------------------------------------


@pytest.mark.parametrize("case", case_params(GOOD))
def test_good_event_is_accepted(case: Case) -> None:
    assert case.payload is not None
    payload = orjson.loads(case.payload)
    decoded = decode_event(case.payload, max_bytes=case.max_bytes)
    assert decoded.schema_version == SCHEMA_VERSION
    assert decoded.event_id == UUID(payload["event_id"])
    assert decoded.user_id == UUID(payload["user_id"])
    assert decoded.workflow_id == payload["workflow_id"]
    assert decoded.phase_number == payload["phase_number"]
    assert decoded.status is PhaseStatus(payload["status"])
    assert decoded.timestamp.utcoffset() is not None
    assert decoded.duration_ms == payload.get("duration_ms")
    assert decoded.previous_phase == payload.get("previous_phase")
    assert decoded.rollback_to_phase == payload.get("rollback_to_phase")
    assert decoded.error_message == payload.get("error_message")
    assert decoded.error_stack == payload.get("error_stack")
    assert decoded.metadata == (payload.get("metadata") or {})
    assert decoded.rollback_triggered is bool(payload.get("rollback_triggered"))


@pytest.mark.parametrize("case", case_params(BAD))
def test_bad_event_is_rejected_naming_the_field(case: Case) -> None:
    with pytest.raises(InvalidEventError) as caught:
        decode_event(case.payload, max_bytes=case.max_bytes)
    assert caught.value.field == case.field, caught.value.reason
    assert caught.value.reason.strip()
    assert str(caught.value) == f"{case.field}: {caught.value.reason}"
    assert not caught.value.retriable


@pytest.mark.parametrize(
    ("text", "microsecond", "offset_minutes"),
    [
        ("2026-01-31T12:00:00.123456789Z", 123_456, 0),
        ("2026-01-31T17:30:00+05:30", 0, 330),
        ("2026-01-31T04:00:00-08:00", 0, -480),
        ("2026-01-31t12:00:00.25z", 250_000, 0),
    ],
)
def test_timestamp_keeps_the_instant_and_the_offset(
    text: str, microsecond: int, offset_minutes: int
) -> None:
    decoded = decode_event(dumps(event(timestamp=text)))
    assert decoded.timestamp == datetime(2026, 1, 31, 12, 0, 0, microsecond, tzinfo=UTC)
    assert decoded.timestamp.utcoffset() == timedelta(minutes=offset_minutes)


def test_size_limit_is_inclusive() -> None:
    payload = dumps(MINIMAL)
    assert decode_event(payload, max_bytes=len(payload)).workflow_id == "wf-0001"
    with pytest.raises(InvalidEventError) as caught:
        decode_event(payload, max_bytes=len(payload) - 1)
    assert caught.value.field == "$"
    assert str(len(payload)) in caught.value.reason


def test_default_size_limit_is_one_mebibyte() -> None:
    assert DEFAULT_MAX_EVENT_BYTES == 1_048_576
    filler = "x" * (DEFAULT_MAX_EVENT_BYTES - len(dumps(event(metadata={"f": ""}))))
    at_limit = dumps(event(metadata={"f": filler}))
    assert len(at_limit) == DEFAULT_MAX_EVENT_BYTES
    assert decode_event(at_limit).metadata == {"f": filler}
    with pytest.raises(InvalidEventError) as caught:
        decode_event(dumps(event(metadata={"f": filler + "x"})))
    assert caught.value.field == "$"


# --- the JSON Schema -----------------------------------------------------------------


def test_schema_is_a_valid_draft_2020_12_schema(schema: dict[str, object]) -> None:
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"]
    assert schema["title"]


def test_schema_states_the_same_fields_and_limits(schema: dict[str, Any]) -> None:
    props: dict[str, Any] = schema["properties"]
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert schema["required"] == list(REQUIRED)
    assert set(props) == set(REQUIRED) | set(OPTIONAL)
    for name, prop in props.items():
        assert isinstance(prop.get("description"), str), name
        assert prop["description"].strip(), name
    assert props["schema_version"]["const"] == SCHEMA_VERSION
    assert props["event_id"]["pattern"] == UUID_PATTERN.pattern
    assert props["user_id"]["pattern"] == UUID_PATTERN.pattern
    assert props["status"]["enum"] == list(STATUSES)
    assert props["workflow_id"]["maxLength"] == MAX_WORKFLOW_ID_CHARS
    assert props["duration_ms"]["maximum"] == MAX_DURATION_MS
    for name in ("phase_number", "previous_phase", "rollback_to_phase"):
        assert props[name]["maximum"] == LAST_PHASE, name


def test_schema_documents_the_validator_only_rules(schema: dict[str, Any]) -> None:
    for text in (schema["description"], schema["$comment"]):
        assert isinstance(text, str)
        for rule in ("NUL", "32", "1 MiB", "Feb 30", "key"):
            assert rule in text, rule


def test_schema_agreement_covers_most_of_the_corpus() -> None:
    assert len([c for c in SCHEMA_CASES if c.field is None]) == len(GOOD)
    assert len([c for c in SCHEMA_CASES if c.field is not None]) >= 30


def decoder_accepts(payload: bytes | None, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> bool:
    try:
        decode_event(payload, max_bytes=max_bytes)
    except InvalidEventError:
        return False
    return True


@pytest.mark.parametrize("case", case_params(SCHEMA_CASES))
def test_schema_agrees_with_the_validator(case: Case, validator: Draft202012Validator) -> None:
    instance = parsed_object(case)
    errors = [error.message for error in validator.iter_errors(instance)]
    accepted = decoder_accepts(case.payload, case.max_bytes)
    assert accepted == (case.field is None)
    assert (not errors) == accepted, errors


@pytest.mark.parametrize("case", case_params(VALIDATOR_ONLY))
def test_validator_only_rules_are_invisible_to_the_schema(
    case: Case, validator: Draft202012Validator
) -> None:
    # Documents the gap: the schema passes these, only the Python validator catches them.
    instance = parsed_object(case)
    assert instance is not None
    assert [error.message for error in validator.iter_errors(instance)] == []
    assert not decoder_accepts(case.payload, case.max_bytes)


# --- round trips ---------------------------------------------------------------------


@pytest.mark.parametrize("case", case_params(GOOD))
def test_good_event_round_trips(case: Case, validator: Draft202012Validator) -> None:
    decoded = decode_event(case.payload)
    wire = encode_event(decoded)
    assert decode_event(wire) == decoded
    assert encode_event(decode_event(wire)) == wire
    assert validator.is_valid(orjson.loads(wire))


_ALPHABET = 'abcXYZ019-_./:é漢🚀 \t\n"\\'


def random_text(rng: random.Random, low: int, high: int) -> str:
    return "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(low, high)))


def random_json(rng: random.Random, depth: int) -> Any:
    """A random JSON value; containers only while ``depth`` is small."""
    makers: list[Callable[[], Any]] = [
        lambda: random_text(rng, 0, 12),
        lambda: rng.randint(-(2**63), 2**63 - 1),
        lambda: rng.uniform(-1e12, 1e12),
        lambda: rng.random() < 0.5,
        lambda: None,
    ]
    if depth < 4:
        makers += [
            lambda: [random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))],
            lambda: {
                random_text(rng, 1, 6): random_json(rng, depth + 1)
                for _ in range(rng.randint(0, 3))
            },
        ]
    return rng.choice(makers)()


def maybe(rng: random.Random, make: Callable[[], Any]) -> Any:
    return None if rng.random() < 0.4 else make()


def random_event(rng: random.Random) -> PhaseEvent:
    offset = timedelta(minutes=rng.randint(-(24 * 60 - 1), 24 * 60 - 1))
    moment = datetime(
        rng.randint(2000, 2099),
        rng.randint(1, 12),
        rng.randint(1, 28),
        rng.randint(0, 23),
        rng.randint(0, 59),
        rng.randint(0, 59),
        rng.choice([0, rng.randint(0, 999_999)]),
        tzinfo=timezone(offset),
    )
    return PhaseEvent(
        event_id=UUID(int=rng.getrandbits(128)),
        workflow_id=random_text(rng, 1, MAX_WORKFLOW_ID_CHARS),
        user_id=UUID(int=rng.getrandbits(128)),
        phase_number=rng.randint(1, LAST_PHASE),
        status=rng.choice(list(PhaseStatus)),
        timestamp=moment,
        duration_ms=maybe(
            rng, lambda: rng.choice([0, MAX_DURATION_MS, rng.randint(0, MAX_DURATION_MS)])
        ),
        previous_phase=maybe(rng, lambda: rng.randint(1, LAST_PHASE)),
        error_message=maybe(rng, lambda: random_text(rng, 0, 40)),
        error_stack=maybe(rng, lambda: random_text(rng, 0, 200)),
        metadata={random_text(rng, 1, 8): random_json(rng, 2) for _ in range(rng.randint(0, 4))},
        rollback_triggered=rng.random() < 0.5,
        rollback_to_phase=maybe(rng, lambda: rng.randint(1, LAST_PHASE)),
    )


def random_events(seed: int, count: int) -> Iterator[PhaseEvent]:
    rng = random.Random(seed)
    for _ in range(count):
        yield random_event(rng)


@pytest.mark.parametrize("seed", [0, 1, 20260131])
def test_generated_events_round_trip(seed: int, validator: Draft202012Validator) -> None:
    for original in random_events(seed, 300):
        wire = encode_event(original)
        decoded = decode_event(wire)
        assert decoded == original
        assert decoded.timestamp.utcoffset() == original.timestamp.utcoffset()
        assert encode_event(decoded) == wire
        assert decode_record(original.key, wire) == original
        errors = [error.message for error in validator.iter_errors(orjson.loads(wire))]
        assert errors == [], (wire[:200], errors)


#: Values that either side judges the same way in any field (no NUL, no integral floats).
_MUTATIONS: list[Any] = [
    None,
    True,
    False,
    -1,
    0,
    1,
    2,
    7,
    8,
    2**31 - 1,
    2**31,
    3.5,
    "",
    "x",
    "started",
    "rolled_back",
    "1",
    EVENT_ID,
    EVENT_ID.upper(),
    "2026-01-31T12:00:00Z",
    "2026-01-31T12:00:00",
    "1999-01-01T00:00:00+00:00",
    "w" * 256,
    [],
    [1],
    {},
    {"k": "v"},
]


@pytest.mark.parametrize("seed", [7, 11])
def test_schema_and_validator_agree_on_mutated_events(
    seed: int, validator: Draft202012Validator
) -> None:
    rng = random.Random(seed)
    fields = [*REQUIRED, *OPTIONAL, "unknown_field"]
    verdicts = {True: 0, False: 0}
    for original in random_events(seed, 200):
        payload = orjson.loads(encode_event(original))
        name = rng.choice(fields)
        if rng.random() < 0.1:
            payload.pop(name, None)
        else:
            payload[name] = rng.choice(_MUTATIONS)
        accepted = decoder_accepts(dumps(payload))
        assert validator.is_valid(payload) == accepted, (name, payload.get(name))
        verdicts[accepted] += 1
    assert verdicts[True] > 0
    assert verdicts[False] > 0


# --- Kafka key -----------------------------------------------------------------------


def test_key_is_the_utf8_workflow_id() -> None:
    decoded = decode_event(dumps(event(workflow_id="wf-é-漢")))
    assert decoded.key == "wf-é-漢".encode()
    assert decoded.key == b"wf-\xc3\xa9-\xe6\xbc\xa2"
    assert replace(decoded, workflow_id="other").key == b"other"


def test_decode_record_rejects_a_key_that_is_not_the_workflow_id() -> None:
    wire = dumps(MINIMAL)
    for key in (b"wf-0002", b"", b"WF-0001", "wf-0001".encode("utf-16")):
        with pytest.raises(InvalidEventError) as caught:
            decode_record(key, wire)
        assert caught.value.field == "workflow_id"
        assert caught.value.reason.strip()


def test_decode_record_accepts_a_matching_key() -> None:
    wire = dumps(event(workflow_id="wf-é"))
    assert decode_record("wf-é".encode(), wire) == decode_event(wire)


def test_decode_record_refuses_a_record_without_a_key() -> None:
    # Without the key a workflow's events scatter over partitions and lose their order.
    with pytest.raises(InvalidEventError) as caught:
        decode_record(None, dumps(MINIMAL))
    assert caught.value.field == "$key"
    assert caught.value.reason.startswith("is missing (null); publish with the workflow id")


def test_decode_record_still_validates_the_value() -> None:
    with pytest.raises(InvalidEventError) as caught:
        decode_record(b"wf-0001", None)
    assert caught.value.field == "$"
    with pytest.raises(InvalidEventError) as caught:
        decode_record(b"wf-0001", dumps(MINIMAL), max_bytes=10)
    assert caught.value.field == "$"


# --- purity of models/ ---------------------------------------------------------------

BANNED = frozenset(
    {
        "aiokafka",
        "asyncpg",
        "faust",
        "prometheus_client",
        "aiohttp",
        "streams",
        "projections",
        "phasestream",
    }
)


def imported_packages(source: str) -> set[str]:
    """Top-level packages that a module's source imports (absolute imports only)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.partition(".")[0])
    return found


def test_import_scanner_sees_nested_and_from_imports() -> None:
    source = (
        "import os, aiokafka.producer\n"
        "from streams.topics import X\n"
        "from . import sibling\n"
        "def f() -> None:\n"
        "    import asyncpg\n"
    )
    assert imported_packages(source) == {"os", "aiokafka", "streams", "asyncpg"}


def test_models_import_no_adapter_or_io_library() -> None:
    modules = sorted(MODELS_DIR.rglob("*.py"))  # the subpackages (sla/, notifications/) too
    names = {m.relative_to(MODELS_DIR).as_posix() for m in modules}
    assert {
        "events.py",
        "validation.py",
        "event_codec.py",
        "schema.py",
        "sla/violation_codec.py",
        "notifications/value.py",
    } <= names
    allowed = set(sys.stdlib_module_names) | {"orjson", "msgspec", "models"}
    for module in modules:
        packages = imported_packages(module.read_text(encoding="utf-8"))
        assert not packages & BANNED, (module.name, sorted(packages & BANNED))
        assert packages <= allowed, (module.name, sorted(packages - allowed))


def test_uuid_check_accepts_exactly_the_uuid_pattern() -> None:
    """The fast UUID check must accept the same strings as UUID_PATTERN, no more, no less."""
    rng = random.Random(7)
    canonical = "6f1c1d2e-8a4b-4c4f-9f6e-1a2b3c4d5e6f"
    tricky = [
        "{" + canonical[1:-1] + "}",
        "urn:uuid:" + canonical,
        canonical.replace("-", ""),
        canonical.upper(),
        canonical[:-1] + "\u0661",
        " " + canonical[1:],
        canonical[:8] + "_" + canonical[9:],
        "0" * 32 + "----",
        canonical + "\n",
    ]
    alphabet = "0123456789abcdefABCDEFg-_{} \u0661"
    for text in tricky + [
        "".join(rng.choice(alphabet) if rng.random() < 0.05 else c for c in canonical)
        for _ in range(3000)
    ]:
        payload = event(event_id=text)
        if UUID_PATTERN.fullmatch(text):
            assert str(event_from_mapping(payload).event_id) == text.lower()
        else:
            with pytest.raises(InvalidEventError) as raised:
                event_from_mapping(payload)
            assert raised.value.field == "event_id", text


def test_uuids_built_without_reparsing_equal_those_uuid_parses() -> None:
    rng = random.Random(6)
    texts = [str(UUID(int=rng.getrandbits(128))) for _ in range(2000)]
    texts += [t.upper() for t in texts[:200]] + [
        "00000000-0000-0000-0000-000000000000",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
    ]
    for text in texts:
        built, parsed = uuid_from_checked(text), UUID(text)
        assert (built, hash(built), str(built), built.version, built.is_safe) == (
            parsed,
            hash(parsed),
            str(parsed),
            parsed.version,
            parsed.is_safe,
        )
        assert pickle.loads(pickle.dumps(built)) == parsed
