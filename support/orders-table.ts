/**
 * The business table of tests and benchmarks: `orders`, under the same per-tenant row-level
 * security as pg-once's own tables, the way a user's schema would be. `appRole` is the
 * database's application role (MigrateResult.roles.app, or `pg-once roles`).
 */
export const ordersTableSql = (appRole: string) => `
  CREATE TABLE public.orders (
    tenant_id text NOT NULL DEFAULT once.current_tenant(),
    id        bigint GENERATED ALWAYS AS IDENTITY,
    key       text NOT NULL,
    amount    integer NOT NULL,
    PRIMARY KEY (tenant_id, id)
  );
  ALTER TABLE public.orders ENABLE ROW LEVEL SECURITY;
  ALTER TABLE public.orders FORCE ROW LEVEL SECURITY;
  CREATE POLICY tenant_isolation ON public.orders TO "${appRole}"
    USING (tenant_id = once.current_tenant()) WITH CHECK (tenant_id = once.current_tenant());
  GRANT SELECT, INSERT, UPDATE, DELETE ON public.orders TO "${appRole}";`;
