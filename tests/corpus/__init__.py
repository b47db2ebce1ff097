"""The shared contract corpus: tests/unit/test_contract.py's good and bad phase events as
JSON (tests/corpus/phase-events.json), so the Python decoder, the JSON Schema and the
TypeScript validator are held to the same cases.

``python -m tests.corpus`` rewrites the file after the corpus changed; a test fails until
it is rewritten.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Final

import orjson

from tests.unit.test_contract import CORPUS, INTEGRAL

PATH: Final = Path(__file__).with_name("phase-events.json")


def corpus_json() -> bytes:
    cases: list[dict[str, Any]] = [
        {
            "name": case.name,
            # Base64: some payloads are not UTF-8 (or not there at all: a tombstone).
            "payload_base64": None
            if case.payload is None
            else base64.b64encode(case.payload).decode(),
            "field": case.field,
            "validator_only": case.validator_only,
            # The verdict depends on how a number is written (3.0 against 3), which a parsed
            # JavaScript value no longer tells: a TypeScript producer cannot send such a case.
            "number_as_written": case.validator_only == INTEGRAL,
            "max_bytes": case.max_bytes,
        }
        for case in CORPUS
    ]
    return orjson.dumps({"cases": cases}, option=orjson.OPT_INDENT_2) + b"\n"
