/**
 * The claim side's statements after the claim (src/idempotency/sql/) each touch one record, the
 * call's own: each must be planned as a probe of the primary key, whatever the table holds. The
 * store under a rate limit charges the bucket (once.charge_rate_limit, sql/0015) as a filter of
 * that probe, so it runs once, for the one row, and only a charged call's record is stored.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { RELEASE_LEASE_TEXT, RENEW_LEASE_TEXT, STORE_LEASED_TEXT } from '../src/idempotency/sql/lease-statements.ts';
import { STORE_FAILURE_TEXT, STORE_RESULT_CHARGED_TEXT, STORE_RESULT_TEXT } from '../src/idempotency/sql/store-outcome.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { testPool } from './support/test-database.ts';

let fx: AppFixture;
beforeAll(async () => {
  fx = await createAppFixture(2);
});
afterAll(async () => {
  await fx?.close();
});

const RECORDS = 5_000;

/** Every node of a JSON plan, depth first. */
function nodesOf(plan: Record<string, unknown>): Record<string, unknown>[] {
  const children = (plan.Plans as Record<string, unknown>[] | undefined) ?? [];
  return [plan, ...children.flatMap(nodesOf)];
}

it('plans every statement after the claim as a primary-key probe of the call’s record', async () => {
  await fx.database.admin.query(
    `INSERT INTO once.idempotency_keys (tenant_id, key, version, status, expires_at)
     SELECT 'tenant-' || (i % 10), 'plan-' || i, '', 'completed', now() + interval '1 day' FROM generate_series(1, $1::int) i`,
    [RECORDS],
  );
  await fx.database.admin.query('ANALYZE once.idempotency_keys');
  const record = ['tenant-1', 'plan-1', ''];
  const statements: [string, string, unknown[]][] = [
    ['store result', STORE_RESULT_TEXT, [...record, '{}']],
    ['store result, charged', STORE_RESULT_CHARGED_TEXT, [...record, '{}', '', 100, 0]],
    ['store failure', STORE_FAILURE_TEXT, [...record, '{}']],
    ['renew lease', RENEW_LEASE_TEXT, [...record, 'token', 1_000]],
    ['store leased', STORE_LEASED_TEXT, [...record, 'token', 'completed', '{}', null]],
    ['release lease', RELEASE_LEASE_TEXT, [...record, 'token']],
  ];
  // As the app role, under row-level security and the tenant, as the statements run; EXPLAIN alone writes nothing.
  const pool = testPool({ connectionString: fx.appUrl, max: 1 });
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query("SELECT set_config('once.tenant_id', 'tenant-1', true)");
    for (const [name, text, values] of statements) {
      const { rows } = await client.query<{ 'QUERY PLAN': [{ Plan: Record<string, unknown> }] }>(`EXPLAIN (FORMAT JSON) ${text}`, values);
      const nodes = nodesOf(rows[0]!['QUERY PLAN'][0].Plan);
      const scans = nodes.filter((node) => node['Relation Name'] === 'idempotency_keys' && node['Node Type'] !== 'ModifyTable');
      expect(scans.length, name).toBe(1);
      expect({ name, type: scans[0]!['Node Type'], index: scans[0]!['Index Name'] }).toEqual({ name, type: 'Index Scan', index: 'idempotency_keys_pkey' });
      if (text === STORE_RESULT_CHARGED_TEXT) expect(String(scans[0]!.Filter)).toContain('charge_rate_limit');
    }
    await client.query('ROLLBACK');
  } finally {
    client.release();
    await pool.end();
  }
  // Nothing was charged or changed by EXPLAIN.
  const { rows } = await fx.database.admin.query<{ n: number }>('SELECT count(*)::int AS n FROM once.rate_limit_state');
  expect(rows[0]!.n).toBe(0);
});
