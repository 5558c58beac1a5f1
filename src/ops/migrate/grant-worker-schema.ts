/**
 * The relay runs graphile-worker (its cron schedules sweeps) as the database's relay role, not as
 * the owner of graphile-worker's schema. graphile-worker's schema is created by its own
 * migrations, after ours, so its grants come here; re-granting on every migrate also covers
 * tables a newer graphile-worker adds. Under the migration lock: concurrent GRANTs on the same
 * objects fail with "tuple concurrently updated".
 */
import { MigrationFailedError } from '../../errors.ts';
import { quoteIdentifier } from '../../internal/bind-variables.ts';
import type { Session } from '../../internal/session.ts';

const grants = (relay: string) => `
  GRANT USAGE ON SCHEMA graphile_worker TO ${relay};
  GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA graphile_worker TO ${relay};
  GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA graphile_worker TO ${relay};
  GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA graphile_worker TO ${relay};
  -- graphile-worker enables row-level security on its private tables without policies (only
  -- their owner gets in), so the relay's role gets a policy of its own on each.
  DO $$
  DECLARE t record;
  BEGIN
    FOR t IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'graphile_worker' AND c.relkind = 'r' AND c.relrowsecurity LOOP
      IF NOT EXISTS (SELECT 1 FROM pg_policies
                      WHERE schemaname = 'graphile_worker' AND tablename = t.relname AND policyname = 'once_relay_worker') THEN
        EXECUTE format('CREATE POLICY once_relay_worker ON graphile_worker.%I TO ${relay} USING (true) WITH CHECK (true)', t.relname);
      END IF;
    END LOOP;
  END
  $$`;

export async function grantWorkerSchema(session: Session, lockKey: number, relayRole: string): Promise<void> {
  await session.query('BEGIN');
  try {
    await session.query('SELECT pg_advisory_xact_lock($1)', [lockKey]);
    await session.query(grants(quoteIdentifier(relayRole)));
    await session.query('COMMIT');
  } catch (error) {
    await session.query('ROLLBACK').catch(() => {});
    throw new MigrationFailedError(`pg-once: granting the relay role graphile-worker's schema failed: ${(error as Error).message}`, { cause: error });
  }
}
