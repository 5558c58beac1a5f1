-- The write path, server side (issue 18).
--
-- 1. once.current_tenant() becomes a LANGUAGE sql function the planner inlines into every
--    row-level-security policy, column default and statement that calls it: the tenant read from
--    the setting, as before, and the raise (ONC01) when none is set moved to once.tenant_missing(),
--    evaluated only then (COALESCE evaluates its second argument only when the first is NULL). A
--    plpgsql current_tenant() was one function call per use, each policy check of each statement.
--    once.tenant_missing() is STABLE, not IMMUTABLE: the planner folds immutable calls of constant
--    arguments while planning, which would raise for every query planned without a tenant, and a
--    volatile one would keep current_tenant() from being inlined into policies at all. A query
--    without a tenant still raises, on an empty table too: the policies' `once.current_tenant() IS
--    NOT NULL` is a one-time filter, evaluated before any row is read.
--
-- Variables: app_role, relay_role (psql: -v app_role=... -v relay_role=...), bound by `pg-once migrate`.

CREATE FUNCTION once.tenant_missing() RETURNS text
  LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
BEGIN
  RAISE EXCEPTION 'pg-once: no tenant is set for this transaction'
    USING ERRCODE = 'ONC01',
          HINT = 'Run the query inside withTenant(db, tenantId, fn), which sets once.tenant_id for the transaction.';
END
$$;

REVOKE ALL ON FUNCTION once.tenant_missing() FROM PUBLIC;
-- Whoever may call once.current_tenant() may call it: an inlined function's body runs with the
-- caller's rights, and the executor checks EXECUTE on every function of an expression it sets up.
GRANT EXECUTE ON FUNCTION once.tenant_missing() TO :"app_role", :"relay_role";

CREATE OR REPLACE FUNCTION once.current_tenant() RETURNS text
  LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  SELECT coalesce(nullif(current_setting('once.tenant_id', true), ''), once.tenant_missing())
$$;
