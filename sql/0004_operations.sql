-- Operations across tenants: TTL sweeps and status counts, run by the relay role.
--
-- The relay role never reads idempotency records: they hold what tools returned. The two things
-- it must do with them, deleting expired records and counting executions, go through SECURITY
-- DEFINER functions owned by a NOLOGIN role, once_maintenance, whose own policies and column
-- privileges allow exactly that: metadata, expired rows. Nothing logs in as once_maintenance.

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'once_maintenance') THEN
    BEGIN
      CREATE ROLE once_maintenance NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
  END IF;
END
$$;
-- The migrating role hands functions to once_maintenance below, which needs membership.
GRANT once_maintenance TO CURRENT_USER;

GRANT USAGE ON SCHEMA once TO once_maintenance;
GRANT SELECT (tenant_id, key, version, tool, status, locked_until, created_at, expires_at) ON once.idempotency_keys TO once_maintenance;
GRANT DELETE ON once.idempotency_keys TO once_maintenance;
-- FOR UPDATE SKIP LOCKED needs UPDATE privilege on a column, and the rows to pass an UPDATE
-- policy; WITH CHECK (false) keeps that from ever changing a row.
GRANT UPDATE (status) ON once.idempotency_keys TO once_maintenance;
DROP POLICY IF EXISTS maintenance_locks_expired ON once.idempotency_keys;
CREATE POLICY maintenance_locks_expired ON once.idempotency_keys FOR UPDATE TO once_maintenance
  USING (expires_at < now()) WITH CHECK (false);
DROP POLICY IF EXISTS maintenance_reads_metadata ON once.idempotency_keys;
CREATE POLICY maintenance_reads_metadata ON once.idempotency_keys FOR SELECT TO once_maintenance USING (true);
DROP POLICY IF EXISTS maintenance_sweeps_expired ON once.idempotency_keys;
CREATE POLICY maintenance_sweeps_expired ON once.idempotency_keys FOR DELETE TO once_maintenance USING (expires_at < now());

-- One sweep batch of expired records: never an in-progress one whose lease is live, never one a
-- running transaction holds (SKIP LOCKED: the sweep does not wait on claims, and claims do not
-- wait on it). Oldest first, on the expires_at index. Returns how many were deleted.
CREATE OR REPLACE FUNCTION once.sweep_idempotency_keys(p_batch integer) RETURNS integer
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
  WITH batch AS (
    SELECT tenant_id, key, version FROM once.idempotency_keys
     WHERE expires_at < now() AND (status <> 'in_progress' OR locked_until IS NULL OR locked_until < now())
     ORDER BY expires_at LIMIT p_batch FOR UPDATE SKIP LOCKED),
  deleted AS (
    DELETE FROM once.idempotency_keys k USING batch b
     WHERE k.tenant_id = b.tenant_id AND k.key = b.key AND k.version = b.version RETURNING 1)
  SELECT count(*)::integer FROM deleted
$$;

-- Executions (records created or taken over) per tenant and tool in the last p_window_ms.
CREATE OR REPLACE FUNCTION once.execution_counts(p_window_ms double precision)
  RETURNS TABLE (tenant_id text, tool text, executions integer)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
  SELECT k.tenant_id, coalesce(k.tool, ''), count(*)::integer FROM once.idempotency_keys k
   WHERE k.created_at >= now() - p_window_ms * interval '1 millisecond'
   GROUP BY 1, 2
$$;

ALTER FUNCTION once.sweep_idempotency_keys(integer) OWNER TO once_maintenance;
ALTER FUNCTION once.execution_counts(double precision) OWNER TO once_maintenance;
REVOKE ALL ON FUNCTION once.sweep_idempotency_keys(integer), once.execution_counts(double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION once.sweep_idempotency_keys(integer), once.execution_counts(double precision) TO once_relay;

-- Outbox: the relay reads and updates every event, and may delete settled ones (sweeps of
-- delivered events, explicit purges of dead ones), never a pending one.
DROP POLICY IF EXISTS relay_all_tenants ON once.outbox_events;
DROP POLICY IF EXISTS relay_reads ON once.outbox_events;
CREATE POLICY relay_reads ON once.outbox_events FOR SELECT TO once_relay USING (true);
DROP POLICY IF EXISTS relay_updates ON once.outbox_events;
CREATE POLICY relay_updates ON once.outbox_events FOR UPDATE TO once_relay USING (true) WITH CHECK (true);
DROP POLICY IF EXISTS relay_deletes_settled ON once.outbox_events;
CREATE POLICY relay_deletes_settled ON once.outbox_events FOR DELETE TO once_relay USING (status <> 'pending');
GRANT DELETE ON once.outbox_events TO once_relay;

-- Dedupe audit (keys, kinds, times, details such as fingerprints; never a result): read for
-- status, deleted past retention.
GRANT SELECT, DELETE ON once.dedupe_audit TO once_relay;
DROP POLICY IF EXISTS relay_reads ON once.dedupe_audit;
CREATE POLICY relay_reads ON once.dedupe_audit FOR SELECT TO once_relay USING (true);
DROP POLICY IF EXISTS relay_sweeps ON once.dedupe_audit;
CREATE POLICY relay_sweeps ON once.dedupe_audit FOR DELETE TO once_relay USING (true);
