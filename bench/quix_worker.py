"""The Quix Streams peer of ``quix_peer.py``: phase events into ``bench.quix_phase_logs``.

Run by ``quix_peer.py`` (and ``profile_audit.py --target quix*``) as its own process:
``python -m bench.quix_worker --bootstrap HOST:PORT --topic T --group G --database-url URL
[--decoder schema|phasestream|none] [--commit-interval S]``; it runs until SIGTERM.

One Quix Streams ``Application``: at least once (Kafka offsets committed after the sink's
flush at each checkpoint), no changelog topics, producer idempotence off (the local broker
has no idempotent producer and no transactions), a 2 s session timeout like phasestream's
bench workers. Then:

- ``--decoder schema``: Quix's ``JSONDeserializer`` (orjson) with a jsonschema Draft 2020-12
  validator of phasestream's own contract (``models/schemas/phase-event.schema.json``),
  then a mapping of the fields to the audit columns (Postgres parses the UUIDs and the
  timestamp);
- ``--decoder phasestream``: phasestream's decoder and row builder (``decode_record``,
  ``audit_row``: the projector's validation) in an ``apply`` with the record's key;
- ``--decoder none``: ``JSONDeserializer`` without a validator, then the mapping.

The rows go to ``PostgreSQLSink`` (psycopg2 ``execute_values``, ``ON CONFLICT DO NOTHING``,
one transaction per partition batch at each checkpoint) with ``schema_auto_update`` off
and ``include_metadata`` off (its ``timestamp`` column would overwrite the event's).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Mapping
from typing import Any

# Quix Streams and psycopg2 come with the bench extra: where only dev is installed (make
# test), mypy sees them as Any, hence the ignores that are unused where they are installed.
from psycopg2.extensions import AsIs  # type: ignore[import-not-found, import-untyped, unused-ignore]
from psycopg2.extras import register_uuid  # type: ignore[import-not-found, import-untyped, unused-ignore]
from quixstreams import Application  # type: ignore[import-not-found, unused-ignore]
from quixstreams.models.serializers.json import (  # type: ignore[import-not-found, unused-ignore]
    JSONDeserializer,
)
from quixstreams.sinks.community.postgresql import (  # type: ignore[import-not-found, unused-ignore]
    PostgreSQLSink,
)

from bench import scratch
from bench.quix_peer import PEER_TABLE, SCHEMA_PATH
from models.event_codec import decode_record
from projections.audit_sink import COLUMNS, audit_row

# PostgreSQLSink drops None values from each row and takes a batch's columns from its FIRST
# row only: a later row's value in a column that the first row left out (e.g. duration_ms
# after a "started" event) would be silently lost. An explicit SQL NULL that is not None
# keeps every column in every row.
NULL = AsIs("NULL")


def nulls(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: NULL if v is None else v for k, v in row.items()}


def audit_columns(event: Mapping[str, Any]) -> dict[str, Any]:
    """The contract's fields (decoded JSON) as the audit columns."""
    metadata = event.get("metadata")
    return nulls(
        {
            "id": event["event_id"],
            "workflow_id": event["workflow_id"],
            "user_id": event["user_id"],
            "phase_number": event["phase_number"],
            "status": event["status"],
            "timestamp": event["timestamp"],
            "duration_ms": event.get("duration_ms"),
            "previous_phase": event.get("previous_phase"),
            "error_message": event.get("error_message"),
            "error_stack": event.get("error_stack"),
            "metadata": {} if metadata is None else metadata,
            "rollback_triggered": bool(event.get("rollback_triggered")),
            "rollback_to_phase": event.get("rollback_to_phase"),
        }
    )


def phasestream_row(
    value: bytes, key: bytes | None, _timestamp: int, _headers: Any
) -> dict[str, Any]:
    """phasestream's decoder and row builder, as the projector uses them."""
    return nulls(dict(zip(COLUMNS, audit_row(decode_record(key, value)), strict=True)))


def build(args: argparse.Namespace) -> Any:
    """The Application with its one dataframe and sink (typed Any: see the imports)."""
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        processing_guarantee="at-least-once",
        commit_interval=args.commit_interval,
        use_changelog_topics=False,
        auto_create_topics=False,
        loglevel="WARNING",
        consumer_extra_config={
            "session.timeout.ms": scratch.SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": scratch.SESSION_TIMEOUT_MS // 4,
            "fetch.wait.max.ms": 100,
        },
        producer_extra_config={"enable.idempotence": False},
    )
    if args.decoder == "phasestream":
        register_uuid()  # type: ignore[no-untyped-call, unused-ignore]  # untyped in the stubs
        topic = app.topic(args.topic, value_deserializer="bytes", key_deserializer="bytes")
        rows = app.dataframe(topic).apply(phasestream_row, metadata=True)
    else:
        validator = None
        if args.decoder == "schema":
            from jsonschema import Draft202012Validator  # noqa: PLC0415  # this decoder only

            validator = Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))
        topic = app.topic(args.topic, value_deserializer=JSONDeserializer(validator=validator))
        rows = app.dataframe(topic).apply(audit_columns)
    db = scratch.libpq_parts(args.database_url)
    schema, table = PEER_TABLE.split(".")
    rows.sink(
        PostgreSQLSink(
            host=db["host"],
            port=db["port"],
            dbname=db["dbname"],
            user=db["user"],
            password=db["password"],
            table_name=table,
            schema_name=schema,
            schema_auto_update=False,
            on_conflict_do_nothing=True,
            include_metadata=False,
        )
    )
    return app


def parse_args(argv: Iterable[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument(
        "--commit-interval",
        type=float,
        default=1.0,
        help="checkpoint interval, seconds: the sink's batches",
    )
    parser.add_argument("--decoder", choices=("schema", "phasestream", "none"), default="schema")
    return parser.parse_args(None if argv is None else list(argv))


def main(argv: Iterable[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=scratch.LOG_FORMAT)
    build(args).run()  # until SIGTERM
    return 0


if __name__ == "__main__":
    sys.exit(main())
