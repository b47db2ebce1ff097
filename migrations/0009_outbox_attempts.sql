-- What an outbox relay was about to send, written (and committed) before it sends. A relay
-- that stops between the broker's acknowledgement and forgetting the item leaves its row
-- here; the next relay to claim the item reads the partition from `from_offset` to its
-- end, looking for the item's id in a header, and sends it only if it is not there. So a
-- crash never puts an item on its topic twice. Rows go with their items.
CREATE TABLE phasestream_outbox_attempts (
    outbox       TEXT NOT NULL,     -- the outbox table the item is in
    id           UUID NOT NULL,
    topic        TEXT NOT NULL,
    "partition"  INTEGER NOT NULL CHECK ("partition" >= 0),
    from_offset  BIGINT NOT NULL CHECK (from_offset >= 0),
    attempted_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (outbox, id)
);
