-- The audit trail: one row per phase event; the primary key is the event's event_id,
-- so a redelivered or replayed event is a no-op (INSERT ... ON CONFLICT DO NOTHING).
CREATE TABLE workflow_phase_logs (
    id                 UUID PRIMARY KEY,
    workflow_id        VARCHAR(255) NOT NULL,
    user_id            UUID NOT NULL,
    phase_number       INTEGER NOT NULL CHECK (phase_number BETWEEN 1 AND 7),
    status             VARCHAR(50) NOT NULL
                       CHECK (status IN ('started', 'completed', 'failed', 'rolled_back')),
    "timestamp"        TIMESTAMPTZ NOT NULL,
    duration_ms        INTEGER CHECK (duration_ms >= 0),
    previous_phase     INTEGER CHECK (previous_phase BETWEEN 1 AND 7),
    error_message      TEXT,
    error_stack        TEXT,
    metadata           JSONB,
    rollback_triggered BOOLEAN DEFAULT FALSE,
    rollback_to_phase  INTEGER CHECK (rollback_to_phase BETWEEN 1 AND 7),
    -- When the projector wrote the row (transaction time): publish-to-row latency, freshness.
    projected_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One workflow's timeline.
CREATE INDEX workflow_phase_logs_workflow_idx ON workflow_phase_logs (workflow_id, "timestamp");
-- Time-window scans (last 24 hours, last 7 days).
CREATE INDEX workflow_phase_logs_timestamp_idx ON workflow_phase_logs ("timestamp");
-- Per-phase analytics, SLA and rollback statistics over a window.
CREATE INDEX workflow_phase_logs_phase_status_idx
    ON workflow_phase_logs (phase_number, status, "timestamp");
-- A user's workflows.
CREATE INDEX workflow_phase_logs_user_idx ON workflow_phase_logs (user_id, "timestamp");

-- Where each consumer stands on each partition, written in the same transaction as its
-- rows (exactly-once effect). Moved compare-and-set so a stale ("zombie") writer fails.
CREATE TABLE phasestream_consumer_positions (
    consumer     TEXT NOT NULL,
    topic        TEXT NOT NULL,
    "partition"  INTEGER NOT NULL CHECK ("partition" >= 0),
    next_offset  BIGINT NOT NULL CHECK (next_offset >= 0),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, "partition")
);
