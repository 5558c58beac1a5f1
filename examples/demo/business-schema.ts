/**
 * The agent back end's own tables, under the same per-tenant row-level security as pg-once's:
 * `tenant_id` first in every key, filled from the transaction's tenant, and a policy that lets
 * the application role see and write one tenant's rows: the one withTenant set. `appRole` is the
 * database's application role, which migrate names (MigrateResult.roles.app, `pg-once roles`).
 *
 * Deliberately no unique constraint on "one charge per order" or "one receipt per order": the
 * demo counts rows to show that pg-once alone prevents the duplicates. (A real schema would add
 * them as a second line of defence, and then a duplicate would surface as an error instead.)
 */
export const businessSchema = (appRole: string) => `
CREATE TABLE public.orders (
  tenant_id    text NOT NULL DEFAULT once.current_tenant(),
  id           integer GENERATED ALWAYS AS IDENTITY,
  run_id       text NOT NULL,
  customer     text NOT NULL,
  items        jsonb NOT NULL,
  amount_cents integer NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id)
);
CREATE TABLE public.charges (
  tenant_id    text NOT NULL DEFAULT once.current_tenant(),
  id           integer GENERATED ALWAYS AS IDENTITY,
  order_id     integer NOT NULL,
  amount_cents integer NOT NULL,
  card_token   text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, order_id) REFERENCES public.orders (tenant_id, id)
);
CREATE TABLE public.emails (
  tenant_id    text NOT NULL DEFAULT once.current_tenant(),
  id           integer GENERATED ALWAYS AS IDENTITY,
  order_id     integer NOT NULL,
  recipient    text NOT NULL,
  template     text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, order_id) REFERENCES public.orders (tenant_id, id)
);
DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['orders', 'charges', 'emails'] LOOP
    EXECUTE format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE public.%I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY tenant_isolation ON public.%I TO ${appRole}
                      USING (tenant_id = once.current_tenant()) WITH CHECK (tenant_id = once.current_tenant())', t);
    EXECUTE format('GRANT SELECT, INSERT ON public.%I TO ${appRole}', t);
  END LOOP;
END $$;
`;
