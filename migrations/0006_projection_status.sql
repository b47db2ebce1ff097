-- Freshness: how current each projection is, per consumer and partition.
-- The projector stores, with every position move, the partition's highwater mark as it
-- last fetched it and the newest event time it applied; both are nullable because rows
-- written before this migration (and batches that fetched no highwater) have none.
ALTER TABLE phasestream_consumer_positions
    ADD COLUMN highwater     BIGINT CHECK (highwater >= 0),
    ADD COLUMN last_event_at TIMESTAMPTZ;

-- lag is as of updated_at (the last batch): a consumer that stopped keeps showing the lag
-- it last saw, so read it together with updated_at and event_age.
CREATE VIEW phasestream_projection_status AS
SELECT
    p.consumer,
    p.topic,
    p."partition",
    p.next_offset                                   AS stored_position,
    p.highwater,
    -- greatest() ignores nulls: without a highwater the lag is unknown, not 0.
    CASE WHEN p.highwater IS NOT NULL
         THEN greatest(p.highwater - p.next_offset, 0) END AS lag,
    p.last_event_at,
    now() - p.last_event_at                         AS event_age,
    p.updated_at
FROM phasestream_consumer_positions AS p;
