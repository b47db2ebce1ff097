-- Every SLA violation the monitor ever decided, by its deterministic id. The monitor puts a
-- violation in its outbox only when this insert is new, in the same transaction, so a
-- monitor re-reading events it had judged before (its positions reset, its group
-- replayed) decides the same ids again and publishes none of them twice. One row per
-- violation, like workflow_phase_sla_violation_events.
CREATE TABLE sla_violations_decided (
    violation_id UUID PRIMARY KEY,
    decided_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

INSERT INTO sla_violations_decided (violation_id)
SELECT violation_id FROM workflow_phase_sla_violation_events
UNION
SELECT violation_id FROM sla_violation_outbox
ON CONFLICT DO NOTHING;
