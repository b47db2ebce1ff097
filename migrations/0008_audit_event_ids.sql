-- One row per event id ever recorded in workflow_phase_logs, with the timestamp it was
-- recorded under. The audit table's key is (id, "timestamp") because it is partitioned by
-- month, so Postgres cannot keep an event id unique across months by itself; this table
-- can (its key is the id alone), in one index probe per event, where probing every month's
-- index would cost one probe per month kept. The audit sink inserts here in the batch's
-- transaction and refuses (dead-letters) an event whose id is recorded with a different
-- payload. Retention deletes the ids of the months it drops.
CREATE TABLE workflow_phase_event_ids (
    id          UUID PRIMARY KEY,
    "timestamp" TIMESTAMPTZ NOT NULL
);

-- Rows recorded before this migration; an id already stored twice (possible before it)
-- keeps its earliest timestamp, the row a later conflict check compares against.
INSERT INTO workflow_phase_event_ids (id, "timestamp")
SELECT id, min("timestamp") FROM workflow_phase_logs GROUP BY id;
