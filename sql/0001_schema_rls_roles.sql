-- pg-once schema: idempotency claims, the transactional outbox and the dedupe audit, each isolated
-- per tenant by row-level security. Applied by `pg-once migrate` (or by hand, in a transaction).
-- Append-only: never edit this file once released; add 0002_*.sql instead (checksums are checked).

CREATE SCHEMA IF NOT EXISTS once;

-- Group roles. NOLOGIN: users GRANT them to their own login roles. Roles are cluster-wide while
-- the advisory lock of `migrate` is per database, so two databases migrating at once can race on
-- CREATE ROLE; the exception handlers make the loser a no-op instead of a failed migration.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'once_app') THEN
    BEGIN
      CREATE ROLE once_app NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'once_relay') THEN
    BEGIN
      CREATE ROLE once_relay NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
  END IF;
END
$$;

-- The tenant of the current transaction, set by withTenant() with
-- set_config('once.tenant_id', id, true). Raises SQLSTATE ONC01 when none is set, so a query
-- without a tenant fails loudly instead of quietly returning nothing. After a transaction that set
-- it ends, the setting reads as '' (not NULL) on that connection, hence the NULLIF.
-- STABLE (not VOLATILE) so the planner may evaluate it once per scan, use it as an index
-- condition, and hoist the IS NOT NULL guard in the policies below into a one-time filter.
CREATE OR REPLACE FUNCTION once.current_tenant() RETURNS text
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

CREATE TABLE IF NOT EXISTS once.idempotency_keys (
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
CREATE INDEX IF NOT EXISTS idempotency_keys_expires_at ON once.idempotency_keys (expires_at);

CREATE TABLE IF NOT EXISTS once.outbox_events (
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
CREATE INDEX IF NOT EXISTS outbox_events_pending ON once.outbox_events (next_attempt_at, id)
  WHERE status = 'pending';
-- Per-key ordering: "is there an earlier pending event of this key?" For events that share an
-- ordering key, id order is commit order: enqueue serialises writers of one key.
CREATE INDEX IF NOT EXISTS outbox_events_pending_ordering ON once.outbox_events (tenant_id, ordering_key, id)
  WHERE status = 'pending' AND ordering_key IS NOT NULL;
-- Sweeps of delivered events past their retention.
CREATE INDEX IF NOT EXISTS outbox_events_delivered_at ON once.outbox_events (delivered_at)
  WHERE status = 'delivered';
-- Listing dead events.
CREATE INDEX IF NOT EXISTS outbox_events_dead ON once.outbox_events (id)
  WHERE status = 'dead';
-- No index on dedupe_id: nothing looks events up by it, and every index is paid by every
-- enqueue in the writer's transaction.

CREATE TABLE IF NOT EXISTS once.dedupe_audit (
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
CREATE INDEX IF NOT EXISTS dedupe_audit_at ON once.dedupe_audit (at);

-- Row-level security, FORCED so that the table owner is filtered too (only superusers and
-- BYPASSRLS roles escape it, and withTenant refuses those by default).
-- Policy shape: `once.current_tenant() IS NOT NULL AND tenant_id = once.current_tenant()`. The
-- first conjunct has no column reference, so the planner runs it once per query as a one-time
-- filter: with no tenant set, every query raises ONC01, even on an empty table. Without it, a
-- sequential scan of an empty table would never evaluate the policy and would quietly return
-- nothing.
-- Policies are per role (once_app, once_relay), not PUBLIC: permissive policies are OR-ed, and a
-- tenant policy evaluated for the relay (which has no tenant) would raise.
ALTER TABLE once.idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE once.idempotency_keys FORCE ROW LEVEL SECURITY;
ALTER TABLE once.outbox_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE once.outbox_events FORCE ROW LEVEL SECURITY;
ALTER TABLE once.dedupe_audit ENABLE ROW LEVEL SECURITY;
ALTER TABLE once.dedupe_audit FORCE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS tenant_isolation ON once.idempotency_keys;
CREATE POLICY tenant_isolation ON once.idempotency_keys TO once_app
  USING (once.current_tenant() IS NOT NULL AND tenant_id = once.current_tenant())
  WITH CHECK (tenant_id = once.current_tenant());

DROP POLICY IF EXISTS tenant_isolation ON once.outbox_events;
CREATE POLICY tenant_isolation ON once.outbox_events TO once_app
  USING (once.current_tenant() IS NOT NULL AND tenant_id = once.current_tenant())
  WITH CHECK (tenant_id = once.current_tenant());

DROP POLICY IF EXISTS relay_all_tenants ON once.outbox_events;
CREATE POLICY relay_all_tenants ON once.outbox_events TO once_relay
  USING (true) WITH CHECK (true);

DROP POLICY IF EXISTS tenant_isolation ON once.dedupe_audit;
CREATE POLICY tenant_isolation ON once.dedupe_audit TO once_app
  USING (once.current_tenant() IS NOT NULL AND tenant_id = once.current_tenant())
  WITH CHECK (tenant_id = once.current_tenant());

-- Privileges. The application role: claims (read, write, and delete its own records, e.g. to
-- release one), outbox and audit inserts, and reads of its own events and audit rows (RETURNING
-- needs SELECT). It cannot rewrite or delete outbox events or audit rows: those belong to the
-- relay and to sweeps. The relay role: every tenant's outbox events, and nothing of the
-- idempotency records (results can hold anything a tool returned).
REVOKE ALL ON SCHEMA once FROM PUBLIC;
GRANT USAGE ON SCHEMA once TO once_app, once_relay;
REVOKE ALL ON ALL TABLES IN SCHEMA once FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON once.idempotency_keys TO once_app;
GRANT SELECT, INSERT ON once.outbox_events TO once_app;
GRANT SELECT, INSERT ON once.dedupe_audit TO once_app;
GRANT SELECT, UPDATE ON once.outbox_events TO once_relay;
GRANT EXECUTE ON FUNCTION once.current_tenant() TO once_app, once_relay;
