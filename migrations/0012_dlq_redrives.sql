-- Every dead letter `phasestream dlq redrive` sent back to the phase-events topic, by its
-- place in the dead-letter topic, so that redriving the same letters again sends none of
-- them twice. The event id is the one sent (after a fix, perhaps not the original's).
CREATE TABLE dlq_redrives (
    dlq_topic     TEXT        NOT NULL,
    dlq_partition INTEGER     NOT NULL,
    dlq_offset    BIGINT      NOT NULL,
    event_id      UUID        NOT NULL,
    redriven_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (dlq_topic, dlq_partition, dlq_offset)
);
