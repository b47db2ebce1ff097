-- The rollback commander's state, written with its consumer positions in one transaction.

-- What it remembers of each workflow: for the loop cap and the retry attempts.
CREATE TABLE rollback_workflow_state (
    workflow_id  VARCHAR(255) PRIMARY KEY,
    rollbacks    INTEGER NOT NULL DEFAULT 0,
    retries      INTEGER NOT NULL DEFAULT 0,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Every command ever decided (the ledger): a replay finds its id here and issues nothing.
CREATE TABLE rollback_commands (
    command_id         UUID PRIMARY KEY,
    kind               VARCHAR(20) NOT NULL
                       CHECK (kind IN ('rollback', 'retry', 'gave_up', 'loop_stopped')),
    workflow_id        VARCHAR(255) NOT NULL,
    user_id            UUID NOT NULL,
    failed_event_id    UUID NOT NULL,
    failed_phase       INTEGER NOT NULL,
    rollback_to_phase  INTEGER NOT NULL,
    attempt            INTEGER NOT NULL DEFAULT 0,
    reason             TEXT,
    decided_at         TIMESTAMPTZ NOT NULL,
    -- When a retry is due; null for the other kinds, which are issued at once.
    due_at             TIMESTAMPTZ,
    issued_at          TIMESTAMPTZ
);
CREATE INDEX rollback_commands_workflow_idx ON rollback_commands (workflow_id, decided_at);
CREATE INDEX rollback_commands_due_idx ON rollback_commands (due_at) WHERE issued_at IS NULL;

-- Messages decided in a transaction, waiting for the relay (transactional outbox).
CREATE TABLE phasestream_outbox (
    id          UUID PRIMARY KEY,
    topic       TEXT NOT NULL,
    key         BYTEA,
    payload     BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX phasestream_outbox_created_idx ON phasestream_outbox (created_at);
