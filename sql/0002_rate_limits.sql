-- Per-tenant rate limits on fresh executions (replays are free), kept in Postgres and charged in
-- the same transaction as the call, so a rolled-back call consumes nothing.
--
-- rate_limits: the configuration. tenant_id '*' is the default for tenants without a row of their
-- own; tool '' means "all tools". The most specific row wins: (tenant, tool), (tenant, ''),
-- ('*', tool), ('*', ''). No row at all: unlimited.
-- rate_limit_state: one GCRA "theoretical arrival time" per limited (tenant, tool) bucket.
--
-- RLS is ENABLED but not FORCED here: these are operator tables, managed by the schema owner
-- (`pg-once limits`), while the application role sees only its own tenant's rows and the default.
CREATE TABLE IF NOT EXISTS once.rate_limits (
  tenant_id  text NOT NULL,
  tool       text NOT NULL DEFAULT '',
  per_second double precision NOT NULL CHECK (per_second > 0),
  burst      integer NOT NULL CHECK (burst >= 1),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, tool)
);

CREATE TABLE IF NOT EXISTS once.rate_limit_state (
  tenant_id text NOT NULL DEFAULT once.current_tenant(),
  tool      text NOT NULL,
  tat       timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, tool)
);

ALTER TABLE once.rate_limits ENABLE ROW LEVEL SECURITY;
ALTER TABLE once.rate_limit_state ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS tenant_reads_own_and_default ON once.rate_limits;
CREATE POLICY tenant_reads_own_and_default ON once.rate_limits FOR SELECT TO once_app
  USING (once.current_tenant() IS NOT NULL AND tenant_id IN (once.current_tenant(), '*'));

DROP POLICY IF EXISTS tenant_isolation ON once.rate_limit_state;
CREATE POLICY tenant_isolation ON once.rate_limit_state TO once_app
  USING (once.current_tenant() IS NOT NULL AND tenant_id = once.current_tenant())
  WITH CHECK (tenant_id = once.current_tenant());

REVOKE ALL ON once.rate_limits, once.rate_limit_state FROM PUBLIC;
GRANT SELECT ON once.rate_limits TO once_app;
GRANT SELECT, INSERT, UPDATE ON once.rate_limit_state TO once_app;
