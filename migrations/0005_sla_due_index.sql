-- The overdue check asks, per owned partition and phase, for open phases started before a
-- cutoff (stream time - threshold - grace): an index in that order answers it with a
-- range scan, where the first index made it read every open phase on every check.
DROP INDEX IF EXISTS sla_open_phases_due_idx;
CREATE INDEX sla_open_phases_due_idx
    ON sla_open_phases (source_partition, phase_number, started_at)
    WHERE NOT overdue_reported;
