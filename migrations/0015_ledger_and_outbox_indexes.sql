-- The rollback commander asks, for every batch holding failed events, which of them the
-- ledger decided before (a redelivery decides nothing again). Without an index on the
-- failed event's id that question read the whole ledger, which only grows: the cost of a
-- batch rose with every command ever decided.
CREATE INDEX rollback_commands_failed_event_idx ON rollback_commands (failed_event_id);

-- The relay claims the SLA monitor's outbox oldest first, as it does phasestream_outbox
-- (whose index migration 0004 made). Without one, each claim sorted the whole outbox:
-- draining a backlog left by a broker outage cost the square of its length.
CREATE INDEX sla_violation_outbox_created_idx ON sla_violation_outbox (created_at);
