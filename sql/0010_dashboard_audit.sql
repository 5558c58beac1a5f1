-- What the operator dashboard (`pg-once dashboard`, `pg-once/dashboard`) needs and the relay
-- role could not do before.
--
-- 1. once.operator_actions: one row per dead event an operator requeued or discarded, saying who
--    (the dashboard's authenticated actor, and the database login it ran as), when, and what the
--    event was. Written in the same statement as the change itself (a CTE over its RETURNING),
--    so an action without its audit row cannot commit. Append-only for the relay role: it may
--    insert and read, never update or delete (an operator cannot erase what they did through the
--    dashboard's login). Holds event ids and tenant ids but no payloads, so it is bookkeeping
--    like once.sweeps: no row-level security; only the relay role reaches it. Sweeps leave it
--    alone: it grows by human actions only.
-- 2. Two SECURITY DEFINER functions for the idempotency page. The relay role reads no record of
--    once.idempotency_keys (results are the tenants' data); these answer metadata only, with the
--    rights of the maintenance role, which holds SELECT on exactly the metadata columns:
--    - once.key_states(tenant, key): a key's versions with status, tool, lease and times;
--    - once.execution_series(since, bucket, tenant, tool): executions (records created or taken
--      over) per time bucket, tenant and tool. With a tenant it reads that tenant's keys through
--      the primary key; without one it reads every key created since `since`, like
--      once.execution_counts does for `pg-once status` (no index on created_at: every claim
--      would pay for one, to speed up a chart).
--
-- Variables: relay_role, maintenance_role (psql: -v relay_role=...), bound by `pg-once migrate`.

CREATE TABLE once.operator_actions (
  id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at        timestamptz NOT NULL DEFAULT now(),
  -- Who, as the dashboard authenticated them (a token's fingerprint, a user name).
  actor     text        NOT NULL,
  -- The database login that ran the statement.
  db_role   text        NOT NULL DEFAULT current_user,
  action    text        NOT NULL CHECK (action IN ('requeue', 'discard')),
  tenant_id text        NOT NULL,
  event_id  bigint      NOT NULL,
  -- What the event was when acted on: topic, dedupe id, attempts, last error; the client address.
  detail    jsonb       NOT NULL DEFAULT '{}'::jsonb
);
-- An event's history on its detail page; the newest actions on the dead-events page.
CREATE INDEX operator_actions_event ON once.operator_actions (tenant_id, event_id);
CREATE INDEX operator_actions_at ON once.operator_actions (at);

REVOKE ALL ON once.operator_actions FROM PUBLIC;
GRANT SELECT, INSERT ON once.operator_actions TO :"relay_role";

CREATE FUNCTION once.key_states(p_tenant text, p_key text)
  RETURNS TABLE (version text, tool text, status text, locked_until timestamptz, created_at timestamptz, expires_at timestamptz)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
  SELECT k.version, k.tool, k.status, k.locked_until, k.created_at, k.expires_at
    FROM once.idempotency_keys k
   WHERE k.tenant_id = p_tenant AND k.key = p_key
   ORDER BY k.version
   LIMIT 100
$$;

CREATE FUNCTION once.execution_series(p_since timestamptz, p_bucket_seconds integer, p_tenant text, p_tool text)
  RETURNS TABLE (bucket timestamptz, executions integer)
  LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  -- Two statements, not one with "p_tenant IS NULL OR ...": a plan cached for that OR could not
  -- use the primary key for one tenant's keys.
  IF p_tenant IS NULL THEN
    RETURN QUERY
      SELECT to_timestamp(floor(extract(epoch FROM k.created_at) / p_bucket_seconds) * p_bucket_seconds), count(*)::integer
        FROM once.idempotency_keys k
       WHERE k.created_at >= p_since AND (p_tool IS NULL OR coalesce(k.tool, '') = p_tool)
       GROUP BY 1 ORDER BY 1;
  ELSE
    RETURN QUERY
      SELECT to_timestamp(floor(extract(epoch FROM k.created_at) / p_bucket_seconds) * p_bucket_seconds), count(*)::integer
        FROM once.idempotency_keys k
       WHERE k.tenant_id = p_tenant AND k.created_at >= p_since AND (p_tool IS NULL OR coalesce(k.tool, '') = p_tool)
       GROUP BY 1 ORDER BY 1;
  END IF;
END
$$;

-- As in sql/baseline: handing a function to the maintenance role needs it to hold CREATE on the
-- schema, held only for these statements.
GRANT CREATE ON SCHEMA once TO :"maintenance_role";
ALTER FUNCTION once.key_states(text, text) OWNER TO :"maintenance_role";
ALTER FUNCTION once.execution_series(timestamptz, integer, text, text) OWNER TO :"maintenance_role";
REVOKE CREATE ON SCHEMA once FROM :"maintenance_role";
REVOKE ALL ON FUNCTION once.key_states(text, text), once.execution_series(timestamptz, integer, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION once.key_states(text, text), once.execution_series(timestamptz, integer, text, text) TO :"relay_role";
