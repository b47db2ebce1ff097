-- SLA monitor state. Written in the same transaction as the monitor's consumer positions,
-- so a restart (even kill -9) resumes with exactly the state its position implies.

-- Phase executions that started and have not ended. One per (workflow, phase): a new start
-- of the same phase (a retry) replaces the previous one.
CREATE TABLE sla_open_phases (
    workflow_id       VARCHAR(255) NOT NULL,
    phase_number      INTEGER NOT NULL CHECK (phase_number BETWEEN 1 AND 7),
    started_event_id  UUID NOT NULL,
    user_id           UUID NOT NULL,
    started_at        TIMESTAMPTZ NOT NULL,
    -- The phase-event partition it came from: overdue checks run per owned partition.
    source_partition  INTEGER NOT NULL,
    overdue_reported  BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (workflow_id, phase_number)
);
CREATE INDEX sla_open_phases_due_idx ON sla_open_phases (source_partition, started_at)
    WHERE NOT overdue_reported;

-- Ends that arrived before their start (out of order); judged when the start arrives.
CREATE TABLE sla_early_terminals (
    workflow_id      VARCHAR(255) NOT NULL,
    phase_number     INTEGER NOT NULL,
    event_id         UUID NOT NULL,
    user_id          UUID NOT NULL,
    status           VARCHAR(50) NOT NULL,
    event_timestamp  TIMESTAMPTZ NOT NULL,
    duration_ms      INTEGER,
    received_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, phase_number)
);

-- Violations decided but not yet on workflow.sla-violations (transactional outbox): the
-- relay publishes and then deletes them; a violation's id is deterministic, so a re-send
-- after a crash is a duplicate that the projection ignores.
CREATE TABLE sla_violation_outbox (
    violation_id  UUID PRIMARY KEY,
    workflow_id   VARCHAR(255) NOT NULL,
    payload       BYTEA NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

-- The projection of workflow.sla-violations (exactly once: positions beside the rows).
CREATE TABLE workflow_phase_sla_violation_events (
    violation_id      UUID PRIMARY KEY,
    kind              VARCHAR(20) NOT NULL
                      CHECK (kind IN ('late_completed', 'late_failed', 'overdue')),
    workflow_id       VARCHAR(255) NOT NULL,
    user_id           UUID NOT NULL,
    phase_number      INTEGER NOT NULL CHECK (phase_number BETWEEN 1 AND 7),
    started_event_id  UUID NOT NULL,
    started_at        TIMESTAMPTZ NOT NULL,
    detected_at       TIMESTAMPTZ NOT NULL,
    elapsed_ms        BIGINT NOT NULL,
    threshold_ms      INTEGER NOT NULL,
    projected_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX workflow_phase_sla_violation_events_detected_idx
    ON workflow_phase_sla_violation_events (detected_at);
CREATE INDEX workflow_phase_sla_violation_events_phase_idx
    ON workflow_phase_sla_violation_events (workflow_id, phase_number, started_at);

-- The seed's metrics table: one row per phase transition (id = the event's event_id).
CREATE TABLE metrics_data (
    id             UUID PRIMARY KEY,
    metric_name    TEXT NOT NULL,
    metric_type    TEXT NOT NULL CHECK (metric_type IN ('counter', 'gauge', 'histogram')),
    value          DOUBLE PRECISION NOT NULL,
    labels         JSONB NOT NULL,
    error_message  TEXT,
    metadata       JSONB,
    recorded_at    TIMESTAMPTZ NOT NULL,
    projected_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX metrics_data_name_idx ON metrics_data (metric_name, recorded_at);

-- Now both kinds of violation: finished executions over their threshold (from the audit
-- log), and phases reported overdue that have still not finished (from the violations).
CREATE OR REPLACE VIEW workflow_phase_sla_violations AS
SELECT
    l.id AS event_id,
    l.workflow_id,
    l.user_id,
    l.phase_number,
    l.status,
    l."timestamp",
    l.duration_ms,
    t.threshold_ms,
    l.duration_ms - t.threshold_ms AS excess_ms,
    'late_' || l.status AS kind
FROM workflow_phase_logs AS l
JOIN workflow_phase_sla_thresholds AS t USING (phase_number)
WHERE l.status IN ('completed', 'failed')
  AND l.duration_ms > t.threshold_ms
UNION ALL
SELECT
    v.started_event_id,
    v.workflow_id,
    v.user_id,
    v.phase_number,
    'started'::varchar(50),
    v.started_at,
    (extract(epoch FROM now() - v.started_at) * 1000)::integer,
    v.threshold_ms,
    (extract(epoch FROM now() - v.started_at) * 1000)::integer - v.threshold_ms,
    'overdue'
FROM workflow_phase_sla_violation_events AS v
WHERE v.kind = 'overdue'
  AND NOT EXISTS (
      SELECT 1 FROM workflow_phase_logs AS e
      WHERE e.workflow_id = v.workflow_id
        AND e.phase_number = v.phase_number
        AND e.status IN ('completed', 'failed')
        AND e."timestamp" >= v.started_at);
