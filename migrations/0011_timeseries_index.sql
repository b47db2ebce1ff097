-- Time series (/api/timeseries, report timeseries) count one status over a window, or take
-- the durations of finished executions: an index led by status and time, carrying the
-- phase and the duration, answers a day of 1-minute buckets from the index alone (an
-- index-only scan of that day's rows), where ("timestamp") alone reads every row of the
-- day from the table to test its status. bench/timeseries.py measures both.
CREATE INDEX workflow_phase_logs_status_time_idx
    ON workflow_phase_logs (status, "timestamp") INCLUDE (phase_number, duration_ms, user_id);

-- Name the month partitions' copies after the parent index, as migration 0007 does.
SELECT phasestream_name_partition_indexes(c.relname, 'workflow_phase_logs')
FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
WHERE i.inhparent = 'workflow_phase_logs'::regclass;
