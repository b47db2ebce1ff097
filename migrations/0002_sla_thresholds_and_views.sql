-- SLA thresholds per phase, in a table so operators change them without a deploy.
CREATE TABLE workflow_phase_sla_thresholds (
    phase_number INTEGER PRIMARY KEY CHECK (phase_number BETWEEN 1 AND 7),
    threshold_ms INTEGER NOT NULL CHECK (threshold_ms > 0),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

INSERT INTO workflow_phase_sla_thresholds (phase_number, threshold_ms) VALUES
    (1, 30000), (2, 60000), (3, 120000), (4, 90000), (5, 10000), (6, 15000), (7, 60000);

-- Per phase: counts by status, rates, and the duration distribution of finished executions.
-- completion_rate and failure_rate are shares of finished executions (completed + failed);
-- rollback_rate is rolled-back executions per started execution. Rates are percentages.
CREATE VIEW workflow_phase_analytics AS
SELECT
    l.phase_number,
    count(*) FILTER (WHERE l.status = 'started')     AS started_count,
    count(*) FILTER (WHERE l.status = 'completed')   AS completed_count,
    count(*) FILTER (WHERE l.status = 'failed')      AS failed_count,
    count(*) FILTER (WHERE l.status = 'rolled_back') AS rolled_back_count,
    round(100.0 * count(*) FILTER (WHERE l.status = 'completed')
          / nullif(count(*) FILTER (WHERE l.status IN ('completed', 'failed')), 0), 2)
        AS completion_rate,
    round(100.0 * count(*) FILTER (WHERE l.status = 'failed')
          / nullif(count(*) FILTER (WHERE l.status IN ('completed', 'failed')), 0), 2)
        AS failure_rate,
    round(100.0 * count(*) FILTER (WHERE l.status = 'rolled_back')
          / nullif(count(*) FILTER (WHERE l.status = 'started'), 0), 2)
        AS rollback_rate,
    round(avg(l.duration_ms) FILTER (WHERE l.status IN ('completed', 'failed')), 1)
        AS avg_duration_ms,
    percentile_cont(0.50) WITHIN GROUP (ORDER BY l.duration_ms)
        FILTER (WHERE l.status IN ('completed', 'failed')) AS p50_duration_ms,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY l.duration_ms)
        FILTER (WHERE l.status IN ('completed', 'failed')) AS p95_duration_ms,
    percentile_cont(0.99) WITHIN GROUP (ORDER BY l.duration_ms)
        FILTER (WHERE l.status IN ('completed', 'failed')) AS p99_duration_ms,
    t.threshold_ms AS sla_threshold_ms
FROM workflow_phase_logs AS l
LEFT JOIN workflow_phase_sla_thresholds AS t USING (phase_number)
GROUP BY l.phase_number, t.threshold_ms;

-- Finished phase executions whose duration exceeded the phase's threshold.
CREATE VIEW workflow_phase_sla_violations AS
SELECT
    l.id AS event_id,
    l.workflow_id,
    l.user_id,
    l.phase_number,
    l.status,
    l."timestamp",
    l.duration_ms,
    t.threshold_ms,
    l.duration_ms - t.threshold_ms AS excess_ms
FROM workflow_phase_logs AS l
JOIN workflow_phase_sla_thresholds AS t USING (phase_number)
WHERE l.status IN ('completed', 'failed')
  AND l.duration_ms > t.threshold_ms;
