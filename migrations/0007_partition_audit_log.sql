-- workflow_phase_logs, range-partitioned by month on "timestamp", so it scales to hundreds
-- of millions of rows: time-window scans touch only their months, and retention drops a
-- whole month (DROP TABLE) instead of deleting rows.
--
-- A partitioned table's primary key must contain the partition key, so it becomes
-- (id, "timestamp"). Idempotency holds because a redelivered or replayed event carries the
-- same timestamp as the first delivery: the audit sink inserts ON CONFLICT (id, "timestamp").
--
-- Month bounds are UTC midnights, written with an explicit offset, so the session's
-- TimeZone never shifts a boundary. Partitions are named <parent>_pYYYYMM.

CREATE FUNCTION phasestream_log_partition_name(parent TEXT, month DATE) RETURNS TEXT
LANGUAGE sql IMMUTABLE AS $$
    SELECT parent || '_p' || to_char(month, 'YYYYMM')
$$;

-- A new partition's indexes get generated names (truncated past 63 characters): name each
-- after the parent index it belongs to instead, e.g. workflow_phase_logs_p202401_pkey.
CREATE FUNCTION phasestream_name_partition_indexes(part TEXT, parent TEXT) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    idx RECORD;
BEGIN
    FOR idx IN
        SELECT c.relname AS name,
               part || CASE WHEN left(pc.relname, length(parent)) = parent
                            THEN substr(pc.relname, length(parent) + 1)
                            ELSE '_' || pc.relname END AS wanted
        FROM pg_index AS i
        JOIN pg_class AS c ON c.oid = i.indexrelid
        JOIN pg_inherits AS h ON h.inhrelid = i.indexrelid
        JOIN pg_class AS pc ON pc.oid = h.inhparent
        WHERE i.indrelid = to_regclass(quote_ident(part))
    LOOP
        IF idx.wanted <> idx.name AND length(idx.wanted) <= 63
           AND to_regclass(quote_ident(idx.wanted)) IS NULL THEN
            EXECUTE format('ALTER INDEX %I RENAME TO %I', idx.name, idx.wanted);
        END IF;
    END LOOP;
END
$$;

-- Create the partition of `parent` holding `month` if it is missing; true if it created it.
-- Called per batch by the audit sink for the months the batch touches, so an event from a
-- month without a partition never fails its batch (and is never dead-lettered).
CREATE FUNCTION phasestream_ensure_log_partition(parent TEXT, month DATE) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
DECLARE
    first DATE := date_trunc('month', month)::date;
    part TEXT := phasestream_log_partition_name(parent, first);
BEGIN
    IF to_regclass(quote_ident(part)) IS NOT NULL THEN
        RETURN FALSE;
    END IF;
    -- Several audit workers can meet a new month at once: serialise the creators (only
    -- they take this lock) and look again, instead of failing on a duplicate name.
    PERFORM pg_advisory_xact_lock(1885889907, 7);
    IF to_regclass(quote_ident(part)) IS NOT NULL THEN
        RETURN FALSE;
    END IF;
    EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                   part, parent, first::text || ' 00:00:00+00',
                   (first + INTERVAL '1 month')::date::text || ' 00:00:00+00');
    PERFORM phasestream_name_partition_indexes(part, parent);
    RETURN TRUE;
END
$$;

-- The current month and `months_ahead` months after it; how many it created. Called here,
-- and by the audit sink at start and daily, so writes never wait on creating a partition.
CREATE FUNCTION phasestream_ensure_log_partitions(
    months_ahead INTEGER, parent TEXT DEFAULT 'workflow_phase_logs') RETURNS INTEGER
LANGUAGE plpgsql AS $$
DECLARE
    this_month DATE := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    created INTEGER := 0;
BEGIN
    FOR i IN 0..greatest(months_ahead, 0) LOOP
        IF phasestream_ensure_log_partition(
               parent, (this_month + make_interval(months => i))::date) THEN
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$;

-- Retention: drop every month partition whose newest possible row is older than
-- `retention_months` months (so no row younger than that is ever dropped); 0 keeps all.
-- Returns the names it dropped.
CREATE FUNCTION phasestream_drop_log_partitions(
    retention_months INTEGER, parent TEXT DEFAULT 'workflow_phase_logs') RETURNS SETOF TEXT
LANGUAGE plpgsql AS $$
DECLARE
    cutoff TIMESTAMPTZ := now() - make_interval(months => retention_months);
    part RECORD;
BEGIN
    IF retention_months <= 0 THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(1885889907, 7);  -- not while another worker creates one
    FOR part IN
        SELECT c.relname,
               to_date(right(c.relname, 6), 'YYYYMM') AS month
        FROM pg_inherits AS i
        JOIN pg_class AS c ON c.oid = i.inhrelid
        WHERE i.inhparent = to_regclass(quote_ident(parent))
          AND c.relname ~ '_p[0-9]{6}$'
          AND left(c.relname, length(parent) + 2) = parent || '_p'
        ORDER BY month
    LOOP
        IF ((part.month + INTERVAL '1 month')::timestamp AT TIME ZONE 'UTC') <= cutoff THEN
            EXECUTE format('DROP TABLE IF EXISTS %I', part.relname);
            RETURN NEXT part.relname;
        END IF;
    END LOOP;
END
$$;

-- Put `replacement` in the place of `live`, in the caller's transaction: used here and by
-- `phasestream replay`. Postgres binds a view to a table's oid, not its name, so a rename
-- would leave the views reading the retired table: their text is taken before the rename
-- and re-applied after it (CREATE OR REPLACE keeps their grants and the views built on
-- them). The retired table is dropped without CASCADE, so anything else still depending on
-- it (a foreign key, a materialized view) makes the swap fail rather than vanish. The new
-- table's indexes take the names of the live indexes with the same definition, and its
-- month partitions the live naming pattern, so later migrations and the partition
-- functions find them by name.
CREATE FUNCTION phasestream_swap_table(live TEXT, replacement TEXT) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    live_oid OID := to_regclass(quote_ident(live));
    new_oid OID := to_regclass(quote_ident(replacement));
    retired TEXT := left(live, 50) || '_retired';
    view_names TEXT[];
    view_defs TEXT[];
    index_names JSONB;
    target TEXT;
    rec RECORD;
BEGIN
    IF live_oid IS NULL OR new_oid IS NULL THEN
        RAISE EXCEPTION 'swap % with %: both tables must exist', live, replacement;
    END IF;
    SELECT coalesce(array_agg(v.view), '{}'), coalesce(array_agg(v.def), '{}')
    INTO view_names, view_defs
    FROM (SELECT DISTINCT r.ev_class::regclass::text AS view,
                 pg_get_viewdef(r.ev_class) AS def
          FROM pg_depend AS d
          JOIN pg_rewrite AS r ON r.oid = d.objid
          JOIN pg_class AS c ON c.oid = r.ev_class
          WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
            AND d.refobjid = live_oid AND r.ev_class <> live_oid AND c.relkind = 'v') AS v;
    SELECT coalesce(jsonb_object_agg(s.key, s.name), '{}') INTO index_names
    FROM (SELECT DISTINCT ON (key) c.relname AS name,
                 i.indisunique::text || substring(pg_get_indexdef(i.indexrelid) FROM ' USING .*$')
                     AS key
          FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
          WHERE i.indrelid = live_oid ORDER BY key, name) AS s;

    EXECUTE format('ALTER TABLE %I RENAME TO %I', live, retired);
    EXECUTE format('ALTER TABLE %I RENAME TO %I', replacement, live);
    FOR i IN 1..coalesce(array_length(view_names, 1), 0) LOOP
        EXECUTE format('CREATE OR REPLACE VIEW %s AS %s', view_names[i], view_defs[i]);
    END LOOP;
    EXECUTE format('DROP TABLE %I', retired);

    FOR rec IN
        SELECT c.relname AS name,
               i.indisunique::text || substring(pg_get_indexdef(i.indexrelid) FROM ' USING .*$')
                   AS key
        FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
        WHERE i.indrelid = new_oid
    LOOP
        target := index_names ->> rec.key;
        IF target IS NOT NULL AND target <> rec.name
           AND to_regclass(quote_ident(target)) IS NULL THEN
            EXECUTE format('ALTER INDEX %I RENAME TO %I', rec.name, target);
        END IF;
    END LOOP;
    FOR rec IN
        SELECT c.relname AS name
        FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
        WHERE i.inhparent = new_oid
          AND left(c.relname, length(replacement) + 2) = replacement || '_p'
    LOOP
        target := live || substr(rec.name, length(replacement) + 1);
        EXECUTE format('ALTER TABLE %I RENAME TO %I', rec.name, target);
        PERFORM phasestream_name_partition_indexes(target, live);
    END LOOP;
END
$$;

-- The migration itself: build the partitioned table beside the old one, copy the rows,
-- swap. One transaction (the runner's), so a failure leaves the old table as it was.
-- On a very large table this holds the old table's lock for the whole copy: see
-- docs/operations.md for doing it in a maintenance window.
CREATE TABLE workflow_phase_logs_partitioned
    (LIKE workflow_phase_logs INCLUDING ALL EXCLUDING INDEXES)
    PARTITION BY RANGE ("timestamp");
-- The old key's name is freed so the new key takes it at once (index names are global).
ALTER INDEX workflow_phase_logs_pkey RENAME TO workflow_phase_logs_unpartitioned_pkey;
ALTER TABLE workflow_phase_logs_partitioned
    ADD CONSTRAINT workflow_phase_logs_pkey PRIMARY KEY (id, "timestamp");
CREATE INDEX ON workflow_phase_logs_partitioned (workflow_id, "timestamp");
CREATE INDEX ON workflow_phase_logs_partitioned ("timestamp");
CREATE INDEX ON workflow_phase_logs_partitioned (phase_number, status, "timestamp");
CREATE INDEX ON workflow_phase_logs_partitioned (user_id, "timestamp");

-- Only the months that hold rows (sparse history makes no empty partitions).
SELECT phasestream_ensure_log_partition('workflow_phase_logs_partitioned', m)
FROM (SELECT DISTINCT date_trunc('month', "timestamp" AT TIME ZONE 'UTC')::date AS m
      FROM workflow_phase_logs) AS months;

INSERT INTO workflow_phase_logs_partitioned SELECT * FROM workflow_phase_logs;

SELECT phasestream_swap_table('workflow_phase_logs', 'workflow_phase_logs_partitioned');

SELECT phasestream_ensure_log_partitions(3);
