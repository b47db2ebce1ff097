"""One contract, three languages: tests/corpus/phase-events.json through the Python decoder
and the JSON Schema here, and through the TypeScript validator in sdk/typescript
(test/contract.test.ts, run by tests/integration/test_typescript_sdk.py)."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from models.errors import InvalidEventError
from models.event_codec import decode_event
from models.schema import phase_event_schema
from tests.corpus import PATH, corpus_json

CASES: list[dict[str, Any]] = orjson.loads(PATH.read_bytes())["cases"]
SCHEMA = Draft202012Validator(phase_event_schema())


def payload(case: dict[str, Any]) -> bytes | None:
    encoded = case["payload_base64"]
    return None if encoded is None else base64.b64decode(encoded)


def test_the_corpus_file_is_the_python_corpus() -> None:
    assert PATH.read_bytes() == corpus_json(), (
        "tests/corpus/phase-events.json is stale: run `python -m tests.corpus`"
    )
    assert len(CASES) > 100
    assert {c["field"] is None for c in CASES} == {True, False}


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_python_decoder_names_the_corpus_field(case: dict[str, Any]) -> None:
    assert verdict(case) == case["field"]


def verdict(case: dict[str, Any]) -> str | None:
    """The field the decoder blames, or None if it accepts the payload."""
    try:
        decode_event(payload(case), max_bytes=case["max_bytes"])
    except InvalidEventError as exc:
        return exc.field
    return None


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_json_schema_agrees_except_where_it_cannot_see(case: dict[str, Any]) -> None:
    raw = payload(case)
    try:
        value = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        assert case["field"] == "$"  # not a JSON object: nothing for a schema to judge
        return
    accepted = SCHEMA.is_valid(value)
    if case["validator_only"] is None:
        assert accepted is (case["field"] is None)
    else:
        assert accepted, "a validator-only rule is one the schema cannot see"
