-- Least privilege (docs/security.md): the consumers run as a writer role that may read and
-- write rows but not change the schema, yet the audit sink must create next month's
-- partition and drop the months past retention. These two functions do that as their
-- owner (the owner role, after `phasestream db roles`), with a fixed search_path (this
-- schema, then pg_temp last, so a caller's temporary table cannot stand in for ours).
-- `phasestream db roles` grants them to the writer; nobody else may call them, nor the
-- replay's table swap (owner only), nor the index renamer they use.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION phasestream_ensure_log_partition(TEXT, DATE) '
                   'SECURITY DEFINER SET search_path = %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION phasestream_drop_log_partitions(INTEGER, TEXT) '
                   'SECURITY DEFINER SET search_path = %I, pg_temp', current_schema());
END
$$;

REVOKE EXECUTE ON FUNCTION
    phasestream_ensure_log_partition(TEXT, DATE),
    phasestream_drop_log_partitions(INTEGER, TEXT),
    phasestream_swap_table(TEXT, TEXT),
    phasestream_name_partition_indexes(TEXT, TEXT)
FROM PUBLIC;
