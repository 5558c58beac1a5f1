-- pg-once, installed in one file: the schema of 0001-0005 for a database that has none of it.
--
-- Why this file exists: 0001-0004 landed naming three cluster-wide roles (once_app, once_relay,
-- once_maintenance), so a login granted once_app for one database could read every other
-- database on the server migrated by pg-once, and 0004 could not run as a non-superuser owner.
-- Landed migrations never change; databases that applied them move to per-database roles with
-- 0005_per_database_roles.sql. A new database gets the same end state from this file alone, so
-- it never creates the cluster-wide roles at all. The rationale of each object is in the
-- numbered file that first introduced it (0001 tables and policies, 0002 rate limits, 0003 the
-- claim, 0004 sweeps); test/migrate-paths.test.ts checks that both paths end in the same catalog.
--
-- Variables (psql syntax: `psql -v app_role=... -v relay_role=... -v maintenance_role=...`, or
-- bound by `pg-once migrate`, which derives them from the database; see `pg-once roles`):
--   app_role          the application: its own tenant's rows only
--   relay_role        the relay and operators: every tenant's outbox events, no results
--   maintenance_role  NOLOGIN owner of the two SECURITY DEFINER functions (sweeps, counts)
-- Runs as the database owner: a superuser is not needed. The roles are created when the owner
-- has CREATEROLE, else they must exist (an administrator creates them with `pg-once roles --sql`).

SELECT set_config('once_migrate.app_role', :'app_role', true),
       set_config('once_migrate.relay_role', :'relay_role', true),
       set_config('once_migrate.maintenance_role', :'maintenance_role', true);

-- Group roles, NOLOGIN: users GRANT them to their login roles. A role named for this database
-- that already holds privileges in another database is refused by `pg-once migrate` before this
-- file runs (roles belong to one database). The exception handler makes a concurrent creator (a
-- second migrate of this database on another connection, waiting on the same role name) a no-op.
DO $$
DECLARE
  kind text;
  role_name text;
BEGIN
  FOREACH kind IN ARRAY ARRAY['app', 'relay', 'maintenance'] LOOP
    role_name := current_setting('once_migrate.' || kind || '_role');
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = role_name) THEN
      BEGIN
        EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
      EXCEPTION
        WHEN duplicate_object OR unique_violation THEN NULL;
        WHEN insufficient_privilege THEN
          RAISE EXCEPTION 'pg-once: role % does not exist and % may not create roles', role_name, current_user
            USING ERRCODE = 'ONC10',
                  HINT = 'Have an administrator run the SQL printed by `pg-once roles --sql`, or grant CREATEROLE to the database owner.';
      END;
    END IF;
  END LOOP;
  -- Handing the SECURITY DEFINER functions to the maintenance role (below) needs membership in
  -- it. A role created just above by a CREATEROLE owner can be granted; one an administrator
  -- created must already have been granted to this owner (`pg-once roles --sql` does).
  role_name := current_setting('once_migrate.maintenance_role');
  -- Granted whether or not pg_has_role says MEMBER: on Postgres 16+ the creator of a role holds
  -- ADMIN on it, which that check counts, but may SET ROLE to it only once granted membership.
  BEGIN
    EXECUTE format('GRANT %I TO %I', role_name, current_user);
  EXCEPTION WHEN insufficient_privilege THEN
    NULL; -- no ADMIN: an administrator's grant (`pg-once roles --sql`) must already be in place
  END;
  -- Only these roles (and the owner) may connect. Revoking PUBLIC's CONNECT is the operator's
  -- call (other logins may rely on it); `pg-once doctor` reports it.
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I, %I', current_database(),
                 current_setting('once_migrate.app_role'), current_setting('once_migrate.relay_role'));
END
$$;

CREATE SCHEMA IF NOT EXISTS once;
REVOKE ALL ON SCHEMA once FROM PUBLIC;

-- The roles this database's pg-once uses, by kind: what `migrate` binds into later files and
-- checks the policies against (policies can be altered; this is the record of what was meant).
CREATE TABLE once.roles (
  kind text PRIMARY KEY CHECK (kind IN ('app', 'relay', 'maintenance')),
  name text NOT NULL
);
INSERT INTO once.roles (kind, name) VALUES
  ('app', :'app_role'), ('relay', :'relay_role'), ('maintenance', :'maintenance_role');
REVOKE ALL ON once.roles FROM PUBLIC;
GRANT SELECT ON once.roles TO :"app_role", :"relay_role";

-- The tenant of the current transaction, set by withTenant() with
-- set_config('once.tenant_id', id, true). Raises SQLSTATE ONC01 when none is set, so a query
-- without a tenant fails loudly instead of quietly returning nothing. After a transaction that set
-- it ends, the setting reads as '' (not NULL) on that connection, hence the NULLIF.
-- STABLE (not VOLATILE) so the planner may evaluate it once per scan, use it as an index
-- condition, and hoist the IS NOT NULL guard in the policies below into a one-time filter.
CREATE FUNCTION once.current_tenant() RETURNS text
  LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
DECLARE
  tenant text := nullif(current_setting('once.tenant_id', true), '');
BEGIN
  IF tenant IS NULL THEN
    RAISE EXCEPTION 'pg-once: no tenant is set for this transaction'
      USING ERRCODE = 'ONC01',
            HINT = 'Run the query inside withTenant(db, tenantId, fn), which sets once.tenant_id for the transaction.';
  END IF;
  RETURN tenant;
END
$$;

CREATE TABLE once.idempotency_keys (
  tenant_id    text        NOT NULL DEFAULT once.current_tenant(),
  key          text        NOT NULL,
  -- '' rather than NULL: the version is part of the primary key, and NULLs never conflict.
  version      text        NOT NULL DEFAULT '',
  tool         text,
  -- sha256 of the RFC 8785 canonical JSON of the request; NULL when the caller gave none.
  fingerprint  bytea,
  status       text        NOT NULL DEFAULT 'in_progress'
               CHECK (status IN ('in_progress', 'completed', 'failed')),
  result       jsonb,
  error        jsonb,
  -- Lease of an in-progress claim committed before its effect (the leased, two-phase mode), and
  -- the token of its holder: a worker whose lease ran out and was taken over cannot store or
  -- renew with its old token (fencing).
  locked_until timestamptz,
  lease_token  text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  completed_at timestamptz,
  expires_at   timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, key, version)
);
-- Sweeps delete expired records of every tenant in bounded batches, oldest first.
CREATE INDEX idempotency_keys_expires_at ON once.idempotency_keys (expires_at);

CREATE TABLE once.outbox_events (
  tenant_id    text        NOT NULL DEFAULT once.current_tenant(),
  id           bigint      GENERATED ALWAYS AS IDENTITY,
  -- What the receiver dedupes on. Deliberately not unique: a record that expired and ran again
  -- derives the same dedupe id on purpose, and must not fail the business transaction for it.
  dedupe_id    text        NOT NULL,
  topic        text        NOT NULL,
  ordering_key text,
  payload      jsonb       NOT NULL,
  headers      jsonb       NOT NULL DEFAULT '{}'::jsonb,
  status       text        NOT NULL DEFAULT 'pending'
               CHECK (status IN ('pending', 'delivered', 'dead')),
  -- Delivery attempts started so far (counted when a relay claims the event, so an attempt that
  -- crashed the relay still counts towards max_attempts).
  attempts     integer     NOT NULL DEFAULT 0,
  last_error   text,
  -- A pending event is not claimed before this time. It doubles as the backoff after a failure
  -- AND as the lease of the relay delivering it: claiming sets it to now() + lease, renewed while
  -- the delivery runs. A relay that dies stops renewing and the event becomes claimable again when
  -- the lease runs out. One column for both keeps in-flight and backing-off events out of the
  -- relay's index range, so a backlog of retries costs an idle poll nothing.
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  -- The relay delivering the event (NULL when none): for diagnostics and for releasing its own.
  locked_by    text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  delivered_at timestamptz,
  PRIMARY KEY (tenant_id, id)
);
-- The relay's scan: pending events that are due, across tenants, oldest first. Partial, so
-- delivered events (the bulk of the table until swept) cost the relay nothing.
CREATE INDEX outbox_events_pending ON once.outbox_events (next_attempt_at, id)
  WHERE status = 'pending';
-- Per-key ordering: "is there an earlier pending event of this key?" For events that share an
-- ordering key, id order is commit order: enqueue serialises writers of one key.
CREATE INDEX outbox_events_pending_ordering ON once.outbox_events (tenant_id, ordering_key, id)
  WHERE status = 'pending' AND ordering_key IS NOT NULL;
-- Sweeps of delivered events past their retention.
CREATE INDEX outbox_events_delivered_at ON once.outbox_events (delivered_at)
  WHERE status = 'delivered';
-- Listing dead events.
CREATE INDEX outbox_events_dead ON once.outbox_events (id)
  WHERE status = 'dead';
-- No index on dedupe_id: nothing looks events up by it, and every index is paid by every
-- enqueue in the writer's transaction.

CREATE TABLE once.dedupe_audit (
  tenant_id text        NOT NULL DEFAULT once.current_tenant(),
  id        bigint      GENERATED ALWAYS AS IDENTITY,
  key       text        NOT NULL,
  tool      text,
  kind      text        NOT NULL
            CHECK (kind IN ('replay', 'waited', 'key_reused', 'rate_limited', 'model_key_rejected')),
  at        timestamptz NOT NULL DEFAULT now(),
  detail    jsonb       NOT NULL DEFAULT '{}'::jsonb,
  PRIMARY KEY (tenant_id, id)
);
CREATE INDEX dedupe_audit_at ON once.dedupe_audit (at);

CREATE TABLE once.rate_limits (
  tenant_id  text NOT NULL,
  tool       text NOT NULL DEFAULT '',
  per_second double precision NOT NULL CHECK (per_second > 0),
  burst      integer NOT NULL CHECK (burst >= 1),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, tool)
);

CREATE TABLE once.rate_limit_state (
  tenant_id text NOT NULL DEFAULT once.current_tenant(),
  tool      text NOT NULL,
  tat       timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, tool)
);


-- Row-level security, FORCED on the tenant tables so that their owner is filtered too; ENABLED
-- only on the two operator tables of rate limits, which the owner manages (`pg-once limits`).
-- Policies per role, never PUBLIC (see 0001 for the shape and why).
ALTER TABLE once.idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE once.idempotency_keys FORCE ROW LEVEL SECURITY;
ALTER TABLE once.outbox_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE once.outbox_events FORCE ROW LEVEL SECURITY;
ALTER TABLE once.dedupe_audit ENABLE ROW LEVEL SECURITY;
ALTER TABLE once.dedupe_audit FORCE ROW LEVEL SECURITY;
ALTER TABLE once.rate_limits ENABLE ROW LEVEL SECURITY;
ALTER TABLE once.rate_limit_state ENABLE ROW LEVEL SECURITY;

-- The application: its tenant's rows.
CREATE POLICY tenant_isolation ON once.idempotency_keys TO :"app_role"
  USING (once.current_tenant() IS NOT NULL AND tenant_id = once.current_tenant())
  WITH CHECK (tenant_id = once.current_tenant());
CREATE POLICY tenant_isolation ON once.outbox_events TO :"app_role"
  USING (once.current_tenant() IS NOT NULL AND tenant_id = once.current_tenant())
  WITH CHECK (tenant_id = once.current_tenant());
CREATE POLICY tenant_isolation ON once.dedupe_audit TO :"app_role"
  USING (once.current_tenant() IS NOT NULL AND tenant_id = once.current_tenant())
  WITH CHECK (tenant_id = once.current_tenant());
CREATE POLICY tenant_reads_own_and_default ON once.rate_limits FOR SELECT TO :"app_role"
  USING (once.current_tenant() IS NOT NULL AND tenant_id IN (once.current_tenant(), '*'));
CREATE POLICY tenant_isolation ON once.rate_limit_state TO :"app_role"
  USING (once.current_tenant() IS NOT NULL AND tenant_id = once.current_tenant())
  WITH CHECK (tenant_id = once.current_tenant());

-- The relay: every event; deletes only settled ones. Audit rows: read, deleted past retention.
CREATE POLICY relay_reads ON once.outbox_events FOR SELECT TO :"relay_role" USING (true);
CREATE POLICY relay_updates ON once.outbox_events FOR UPDATE TO :"relay_role" USING (true) WITH CHECK (true);
CREATE POLICY relay_deletes_settled ON once.outbox_events FOR DELETE TO :"relay_role" USING (status <> 'pending');
CREATE POLICY relay_reads ON once.dedupe_audit FOR SELECT TO :"relay_role" USING (true);
CREATE POLICY relay_sweeps ON once.dedupe_audit FOR DELETE TO :"relay_role" USING (true);

-- The maintenance role: metadata of every record, expired ones deleted (see 0004).
CREATE POLICY maintenance_locks_expired ON once.idempotency_keys FOR UPDATE TO :"maintenance_role"
  USING (expires_at < now()) WITH CHECK (false);
CREATE POLICY maintenance_reads_metadata ON once.idempotency_keys FOR SELECT TO :"maintenance_role" USING (true);
CREATE POLICY maintenance_sweeps_expired ON once.idempotency_keys FOR DELETE TO :"maintenance_role" USING (expires_at < now());

-- The claim of runIdempotent (see 0003 for its design).
CREATE FUNCTION once.claim(
  p_key         text,
  p_version     text,
  p_tool        text,
  p_fingerprint bytea,
  p_ttl_ms      double precision,
  p_wait_ms     integer,
  -- Two-phase mode: commit the claim with a lease of this many milliseconds under this token.
  -- NULL for the in-transaction mode, whose claim is never visible before it completes.
  p_lease_ms    double precision DEFAULT NULL,
  p_lease_token text DEFAULT NULL,
  -- One row out, as OUT parameters rather than RETURNS TABLE: RETURN QUERY would build a
  -- tuplestore on every call, for a single row.
  OUT outcome      text,         -- claimed | replay | key_reused | in_progress | rate_limited
  OUT tenant_id    text,
  OUT status       text,
  -- The stored result as JSON text: SQL NULL when fn returned undefined, 'null' when it returned
  -- null (as jsonb, the driver would read both as null).
  OUT result       text,
  OUT error        jsonb,
  OUT waited       boolean,
  OUT locked_until timestamptz,
  -- rate_limited: when a token will be available. claimed under a limit: the bucket to charge
  -- when the result is stored (see src/idempotency/store-outcome.ts), and its GCRA parameters.
  OUT retry_after_ms     double precision,
  OUT limit_tool         text,
  OUT limit_emission_ms  double precision,
  OUT limit_tolerance_ms double precision
)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_tenant       text := once.current_tenant();  -- raises ONC01 before anything is written
  v_status       text;
  v_fingerprint  bytea;
  v_expired      boolean;
  v_lease_over   boolean;
  v_row_lease    timestamptz;
  v_row_tool     text;
  v_result       text;
  v_error        jsonb;
  v_claimed      boolean := false;
  v_found        boolean;
  v_lock_timeout text;
  v_started      timestamptz := clock_timestamp();
  v_expires_at   timestamptz := now() + p_ttl_ms * interval '1 millisecond';
  v_locked_until timestamptz := clock_timestamp() + p_lease_ms * interval '1 millisecond';
  v_per_second   double precision;
  v_burst        integer;
  v_tat          timestamptz;
  v_early_ms     double precision;
BEGIN
  tenant_id := v_tenant;
  waited := false;
  FOR attempt IN 1..16 LOOP
    -- Look first: a replay (the row is committed) costs this one index probe and no write.
    SELECT k.status, k.fingerprint, k.expires_at <= now(),
           k.status = 'in_progress' AND k.locked_until IS NOT NULL AND k.locked_until <= clock_timestamp(),
           k.locked_until, k.tool, k.result::text, k.error
      INTO v_status, v_fingerprint, v_expired, v_lease_over, v_row_lease, v_row_tool, v_result, v_error
      FROM once.idempotency_keys k
     WHERE k.tenant_id = v_tenant AND k.key = p_key AND k.version = p_version;
    v_found := FOUND;  -- PERFORM below would overwrite FOUND

    IF NOT v_found OR v_expired OR v_lease_over THEN
      -- Only now may the call wait (for a claim in flight elsewhere), bounded by lock_timeout,
      -- set for these statements and restored right after.
      IF v_lock_timeout IS NULL THEN
        v_lock_timeout := current_setting('lock_timeout');
        PERFORM set_config('lock_timeout', greatest(p_wait_ms, 1) || 'ms', true);
      END IF;
      IF NOT v_found THEN
        -- Nothing committed: claim. A claim in flight elsewhere (invisible to the SELECT) makes
        -- this INSERT wait for that transaction to end; if it rolled back, the INSERT goes ahead
        -- (and the wait goes unreported: nothing says it happened).
        INSERT INTO once.idempotency_keys AS k (tenant_id, key, version, tool, fingerprint, status, expires_at, locked_until, lease_token)
        VALUES (v_tenant, p_key, p_version, p_tool, p_fingerprint, 'in_progress', v_expires_at, v_locked_until, p_lease_token)
        ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO NOTHING;
      ELSE
        -- Expired record, or an abandoned lease (two-phase mode): take it over. The WHERE repeats
        -- the condition so that, of two callers taking over at once, the second (re-checking the
        -- row after waiting for the first) updates nothing and loops to read the first's outcome.
        UPDATE once.idempotency_keys k
           SET tool = p_tool, fingerprint = p_fingerprint, status = 'in_progress', result = NULL,
               error = NULL, locked_until = v_locked_until, lease_token = p_lease_token, created_at = now(),
               completed_at = NULL, expires_at = v_expires_at
         WHERE k.tenant_id = v_tenant AND k.key = p_key AND k.version = p_version
           AND (k.expires_at <= now()
                OR (k.status = 'in_progress' AND k.locked_until IS NOT NULL AND k.locked_until <= clock_timestamp()));
      END IF;
      IF FOUND THEN
        v_claimed := true;
        EXIT;
      END IF;
      -- It met a claim the SELECT could not see (or a concurrent takeover): a concurrent
      -- duplicate, now settled, that we waited for. A new statement (a new snapshot) reads it.
      waited := true;
      CONTINUE;
    END IF;

    IF v_lock_timeout IS NOT NULL THEN
      PERFORM set_config('lock_timeout', v_lock_timeout, true);
    END IF;
    status := v_status;

    IF v_status = 'in_progress' THEN
      -- A committed claim with a live lease (two-phase mode): the caller decides how to wait.
      outcome := 'in_progress';
      locked_until := v_row_lease;
      RETURN;
    END IF;

    -- A live completed or failed record.
    IF v_fingerprint IS DISTINCT FROM p_fingerprint THEN
      INSERT INTO once.dedupe_audit (tenant_id, key, tool, kind, detail)
      VALUES (v_tenant, p_key, coalesce(p_tool, v_row_tool), 'key_reused',
              jsonb_build_object('version', p_version,
                                 'stored_fingerprint', encode(v_fingerprint, 'hex'),
                                 'request_fingerprint', encode(p_fingerprint, 'hex')));
      outcome := 'key_reused';
      RETURN;
    END IF;
    INSERT INTO once.dedupe_audit (tenant_id, key, tool, kind, detail)
    VALUES (v_tenant, p_key, coalesce(p_tool, v_row_tool), CASE WHEN waited THEN 'waited' ELSE 'replay' END,
            jsonb_build_object('version', p_version, 'status', v_status, 'outcome', 'replayed',
                               'waited_ms', round(extract(epoch FROM clock_timestamp() - v_started) * 1000)));
    outcome := 'replay';
    result := v_result;
    error := v_error;
    RETURN;
  END LOOP;

  IF NOT v_claimed THEN
    -- 16 rounds of losing races: only a pathological storm of takeovers and deletions gets here.
    RAISE EXCEPTION 'pg-once: could not claim key % after repeated concurrent changes', p_key
      USING ERRCODE = 'ONC02';
  END IF;

  PERFORM set_config('lock_timeout', v_lock_timeout, true);
  status := 'in_progress';

  -- Rate limit, on fresh executions only. The most specific configuration row wins. GCRA: with
  -- emission interval T = 1/per_second and tolerance (burst - 1) * T, a call is allowed when the
  -- bucket's theoretical arrival time (tat) is at most `tolerance` ahead of now. Checked here
  -- without a lock, so that tenants' calls never queue on their bucket while fn runs; the charge
  -- (tat += T) happens with the result, conditionally, and a call that lost a race for the last
  -- token fails there (src/idempotency/store-outcome.ts).
  SELECT l.tool, l.per_second, l.burst INTO limit_tool, v_per_second, v_burst
    FROM once.rate_limits l
   WHERE l.tenant_id IN (v_tenant, '*') AND l.tool IN (coalesce(p_tool, ''), '')
   ORDER BY (l.tenant_id = '*'), (l.tool = '')
   LIMIT 1;
  IF FOUND THEN
    limit_emission_ms := 1000.0 / v_per_second;
    limit_tolerance_ms := (v_burst - 1) * limit_emission_ms;
    SELECT s.tat INTO v_tat FROM once.rate_limit_state s WHERE s.tenant_id = v_tenant AND s.tool = limit_tool;
    v_early_ms := extract(epoch FROM greatest(coalesce(v_tat, clock_timestamp()), clock_timestamp()) - clock_timestamp()) * 1000
                  - limit_tolerance_ms;
    IF v_early_ms > 0 THEN
      -- Over the limit: undo the claim (fn will not run), keep the audit row.
      DELETE FROM once.idempotency_keys k WHERE k.tenant_id = v_tenant AND k.key = p_key AND k.version = p_version;
      INSERT INTO once.dedupe_audit (tenant_id, key, tool, kind, detail)
      VALUES (v_tenant, p_key, p_tool, 'rate_limited',
              jsonb_build_object('version', p_version, 'limit_tool', limit_tool, 'per_second', v_per_second,
                                 'burst', v_burst, 'retry_after_ms', ceil(v_early_ms)));
      outcome := 'rate_limited';
      retry_after_ms := ceil(v_early_ms);
      RETURN;
    END IF;
  END IF;

  IF waited THEN
    -- Waited for a concurrent takeover that rolled back: this call executes, and the wait is
    -- still worth an audit row.
    INSERT INTO once.dedupe_audit (tenant_id, key, tool, kind, detail)
    VALUES (v_tenant, p_key, p_tool, 'waited',
            jsonb_build_object('version', p_version, 'outcome', 'executed',
                               'waited_ms', round(extract(epoch FROM clock_timestamp() - v_started) * 1000)));
  END IF;
  outcome := 'claimed';
END
$$;

-- Called by runIdempotent when the handler failed with an error that is not stored: it aborts
-- the transaction, so that even a caller who catches the error and commits cannot persist the
-- claim or the handler's partial writes (COMMIT of an aborted transaction is a ROLLBACK). Inside
-- a caller's savepoint, ROLLBACK TO SAVEPOINT still recovers, as it should.
CREATE FUNCTION once.abort_call(p_reason text) RETURNS void
  LANGUAGE plpgsql
AS $$
BEGIN
  RAISE EXCEPTION 'pg-once: the idempotent call failed, so its transaction cannot commit: %', p_reason
    USING ERRCODE = 'ONC03';
END
$$;

-- Operations across tenants through SECURITY DEFINER functions owned by the maintenance role
-- (see 0004): the relay role never reads idempotency records.
-- One sweep batch of expired records: never an in-progress one whose lease is live, never one a
-- running transaction holds (SKIP LOCKED: the sweep does not wait on claims, and claims do not
-- wait on it). Oldest first, on the expires_at index. Returns how many were deleted.
CREATE FUNCTION once.sweep_idempotency_keys(p_batch integer) RETURNS integer
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
CREATE FUNCTION once.execution_counts(p_window_ms double precision)
  RETURNS TABLE (tenant_id text, tool text, executions integer)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
  SELECT k.tenant_id, coalesce(k.tool, ''), count(*)::integer FROM once.idempotency_keys k
   WHERE k.created_at >= now() - p_window_ms * interval '1 millisecond'
   GROUP BY 1, 2
$$;


-- Handing a function to a role needs that role to hold CREATE on the schema (superusers skip the
-- check, which is how 0004 slipped through); held only for these two statements.
GRANT CREATE ON SCHEMA once TO :"maintenance_role";
ALTER FUNCTION once.sweep_idempotency_keys(integer) OWNER TO :"maintenance_role";
ALTER FUNCTION once.execution_counts(double precision) OWNER TO :"maintenance_role";
REVOKE CREATE ON SCHEMA once FROM :"maintenance_role";

-- Privileges. Functions are created executable by PUBLIC; nothing of pg-once is left to PUBLIC.
REVOKE ALL ON ALL TABLES IN SCHEMA once FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA once FROM PUBLIC;
GRANT USAGE ON SCHEMA once TO :"app_role", :"relay_role", :"maintenance_role";

-- The application: claims (read, write, delete its own records), outbox and audit inserts, reads
-- of its own events and audit rows (RETURNING needs SELECT), rate-limit lookups and charges.
GRANT SELECT, INSERT, UPDATE, DELETE ON once.idempotency_keys TO :"app_role";
GRANT SELECT, INSERT ON once.outbox_events TO :"app_role";
GRANT SELECT, INSERT ON once.dedupe_audit TO :"app_role";
GRANT SELECT ON once.rate_limits TO :"app_role";
GRANT SELECT, INSERT, UPDATE ON once.rate_limit_state TO :"app_role";
GRANT EXECUTE ON FUNCTION once.current_tenant() TO :"app_role", :"relay_role";
GRANT EXECUTE ON FUNCTION once.claim(text, text, text, bytea, double precision, integer, double precision, text) TO :"app_role";
GRANT EXECUTE ON FUNCTION once.abort_call(text) TO :"app_role";

-- The relay: every tenant's events and audit rows, never a result.
GRANT SELECT, UPDATE, DELETE ON once.outbox_events TO :"relay_role";
GRANT SELECT, DELETE ON once.dedupe_audit TO :"relay_role";
GRANT EXECUTE ON FUNCTION once.sweep_idempotency_keys(integer), once.execution_counts(double precision) TO :"relay_role";

-- The maintenance role: metadata columns, deletes of expired rows (FOR UPDATE SKIP LOCKED needs
-- UPDATE on a column; its policy's WITH CHECK (false) keeps rows from ever changing).
GRANT SELECT (tenant_id, key, version, tool, status, locked_until, created_at, expires_at) ON once.idempotency_keys TO :"maintenance_role";
GRANT DELETE ON once.idempotency_keys TO :"maintenance_role";
GRANT UPDATE (status) ON once.idempotency_keys TO :"maintenance_role";
