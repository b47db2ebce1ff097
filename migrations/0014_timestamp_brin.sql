-- The ("timestamp") btree of migration 0001 answered no report faster than the other
-- indexes do: on a month of log (3 M rows, bench/RESULTS.md "Issue 13, step 9") every
-- report took the same time or less without it, the counts and durations being served by
-- (phase_number, status, "timestamp") and migration 0013's index, and a window's month by
-- partition pruning. Writers paid for it on every row (about a tenth of the audit
-- projector's write rate). A BRIN index keeps a path for ad-hoc time-range queries at
-- almost no cost to writers: the log is appended roughly in event-time order, so each
-- range of pages spans a short stretch of time.
DROP INDEX workflow_phase_logs_timestamp_idx;
CREATE INDEX workflow_phase_logs_timestamp_idx ON workflow_phase_logs USING brin ("timestamp");

-- Name the month partitions' copies after the parent index, as migration 0007 does.
SELECT phasestream_name_partition_indexes(c.relname, 'workflow_phase_logs')
FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
WHERE i.inhparent = 'workflow_phase_logs'::regclass;
