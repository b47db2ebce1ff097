-- Time series (/api/timeseries, report timeseries) of finished executions read their
-- durations: violations (duration over the threshold) and p95_duration. The older
-- (phase_number, status, "timestamp") index answers the counts by status from the index
-- alone, but not those, which read every finished row of the window from the table.
-- This index carries the duration, phase and user of finished rows only (about half the
-- log), so a day of 1-minute buckets of them is an index-only scan too, at half the cost
-- to writers of indexing every row. bench/timeseries.py measures both sides.
CREATE INDEX workflow_phase_logs_finished_time_idx
    ON workflow_phase_logs ("timestamp") INCLUDE (status, phase_number, duration_ms, user_id)
    WHERE status IN ('completed', 'failed');

-- Name the month partitions' copies after the parent index, as migration 0007 does.
SELECT phasestream_name_partition_indexes(c.relname, 'workflow_phase_logs')
FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
WHERE i.inhparent = 'workflow_phase_logs'::regclass;
