-- The analysts' example queries. They run unchanged against the schema that
-- `phasestream migrate` creates; tests/integration/test_schema.py runs each one.

-- example: phase completion rates over the last 7 days
SELECT phase_number,
       COUNT(*) FILTER (WHERE status = 'completed') AS completed,
       COUNT(*) FILTER (WHERE status = 'failed') AS failed,
       ROUND(100.0 * COUNT(*) FILTER (WHERE status = 'completed')
             / NULLIF(COUNT(*) FILTER (WHERE status IN ('completed', 'failed')), 0), 2)
           AS completion_rate
FROM workflow_phase_logs
WHERE timestamp > NOW() - INTERVAL '7 days'
GROUP BY phase_number
ORDER BY phase_number;

-- example: SLA violations in the last 24 hours
SELECT workflow_id, phase_number, status, duration_ms, threshold_ms, excess_ms
FROM workflow_phase_sla_violations
WHERE timestamp > NOW() - INTERVAL '24 hours'
ORDER BY excess_ms DESC;

-- example: rollback statistics
SELECT phase_number, rollback_to_phase, COUNT(*) AS rollbacks
FROM workflow_phase_logs
WHERE rollback_triggered = TRUE
GROUP BY phase_number, rollback_to_phase
ORDER BY rollbacks DESC, phase_number;
