/**
 * Who may call what: every operator function (src/ops/), the dashboard and the relay run one role
 * check first (src/ops/operator-role.ts). A login that holds only the database's application role
 * gets a coded refusal from each, naming the role needed, and nothing is read across tenants or
 * written: not a sweep record, a requeue, a limit, a relay registration or a migration.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  doctor,
  drainOnce,
  enqueue,
  listDeadEvents,
  listRateLimits,
  migrate,
  MigrationFailedError,
  removeRateLimit,
  requeueDeadEvents,
  runIdempotent,
  setRateLimit,
  startRelay,
  status,
  sweep,
  withTenant,
  WrongRoleError,
} from '../src/index.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { databaseUrlFor, quoteIdentifier } from './support/database-url.ts';
import { serveDashboard } from './support/dashboard-server.ts';
import { errorOf } from './support/error-of.ts';
import { QUIET_RELAY } from './support/relay-fixture.ts';
import { createTestDatabase } from './support/test-database.ts';

let fx: AppFixture;
let relayName: string;
let schemaOwner: string;
let deadId: string;

/** Everything an operator function could write, read past row-level security. */
async function written() {
  const { rows } = await fx.database.admin.query(`
    SELECT (SELECT json_agg(e ORDER BY e.id) FROM (SELECT id, status, attempts, next_attempt_at, locked_by FROM once.outbox_events) e) AS outbox,
           (SELECT json_agg(k ORDER BY k.key) FROM (SELECT tenant_id, key, status, expires_at FROM once.idempotency_keys) k) AS keys,
           (SELECT count(*)::int FROM once.dedupe_audit) AS audit_rows,
           (SELECT json_agg(l ORDER BY l.tenant_id, l.tool) FROM once.rate_limits l) AS limits,
           (SELECT count(*)::int FROM once.rate_limit_state) AS buckets,
           (SELECT count(*)::int FROM once.sweeps) AS sweeps,
           (SELECT count(*)::int FROM once.relays) AS relays,
           (SELECT count(*)::int FROM once.operator_actions) AS operator_actions,
           (SELECT json_agg(m ORDER BY m.version) FROM once.migrations m) AS migrations`);
  return rows[0];
}

beforeAll(async () => {
  fx = await createAppFixture(2);
  relayName = (await fx.database.roles())!.relay;
  const { rows } = await fx.database.admin.query<{ owner: string }>(
    "SELECT pg_catalog.pg_get_userbyid(nspowner) AS owner FROM pg_catalog.pg_namespace WHERE nspname = 'once'",
  );
  schemaOwner = rows[0]!.owner;
  // What each function would change: a dead event, an expired record and an old delivered event
  // (sweep), a rate limit and its bucket (limits remove).
  deadId = await withTenant(fx.app, 'tenant-a', async (tx) => (await enqueue(tx, { topic: 'orders.created', payload: { n: 1 } })).id);
  const deliveredId = await withTenant(fx.app, 'tenant-b', async (tx) => (await enqueue(tx, { topic: 'orders.created', payload: { n: 2 } })).id);
  await fx.database.admin.query(`UPDATE once.outbox_events SET status = 'dead', attempts = 25, last_error = 'HTTP 500' WHERE id = $1`, [deadId]);
  await fx.database.admin.query(`UPDATE once.outbox_events SET status = 'delivered', delivered_at = now() - interval '30 days' WHERE id = $1`, [deliveredId]);
  await setRateLimit(fx.database.adminUrl, { tenant: 'tenant-a', perSecond: 100, burst: 100 });
  await withTenant(fx.app, 'tenant-a', (tx) => runIdempotent(tx, 'expired-key', async () => 'ran'));
  await withTenant(fx.app, 'tenant-a', (tx) => runIdempotent(tx, 'expired-key', async () => 'ran'));
  await fx.database.admin.query(`UPDATE once.idempotency_keys SET expires_at = now() - interval '1 day' WHERE key = 'expired-key'`);
});
afterAll(async () => {
  await fx?.close();
});

describe('a login holding only the application role', () => {
  it('is refused by every operator function with WRONG_ROLE naming the role needed, and nothing is written', async () => {
    const before = await written();
    const sinks = { '>': async () => {} };
    // Called one at a time: a refusal may not be left unawaited while another runs.
    const refusals: [string, () => Promise<unknown>, string][] = [
      ['sweep', () => sweep(fx.appUrl), relayName],
      ['status', () => status(fx.appUrl), relayName],
      ['listDeadEvents', () => listDeadEvents(fx.appUrl), relayName],
      ['requeueDeadEvents all', () => requeueDeadEvents(fx.appUrl, 'all'), relayName],
      ['requeueDeadEvents id', () => requeueDeadEvents(fx.appUrl, [deadId]), relayName],
      ['setRateLimit', () => setRateLimit(fx.appUrl, { tenant: 'tenant-a', perSecond: 1, burst: 1 }), schemaOwner],
      ['removeRateLimit', () => removeRateLimit(fx.appUrl, { tenant: 'tenant-a' }), schemaOwner],
      ['listRateLimits', () => listRateLimits(fx.appUrl), schemaOwner],
      ['drainOnce', () => drainOnce({ connectionString: fx.appUrl, sinks, logger: QUIET_RELAY.logger }), relayName],
      ['startRelay', () => startRelay({ connectionString: fx.appUrl, sinks, ...QUIET_RELAY }), relayName],
    ];
    for (const [name, call, neededRole] of refusals) {
      const refused = await errorOf(call());
      expect(refused, name).toBeInstanceOf(WrongRoleError);
      expect(refused, name).toMatchObject({ code: 'WRONG_ROLE', neededRole });
    }
    expect(await written()).toEqual(before);
  });

  it('is refused by migrate with MIGRATION_FAILED (its code since 0.1), the WRONG_ROLE as its cause, and nothing applied', async () => {
    const before = await written();
    for (const target of [fx.appUrl, await fx.database.createLoginRole('relay')]) {
      const refused = await errorOf(migrate(target));
      expect(refused).toBeInstanceOf(MigrationFailedError);
      expect(refused).toMatchObject({ code: 'MIGRATION_FAILED' });
      expect(refused.message).toContain(`owner of schema once (${schemaOwner}`);
      expect(refused.cause).toBeInstanceOf(WrongRoleError);
      expect(refused.cause).toMatchObject({ code: 'WRONG_ROLE', neededRole: schemaOwner });
    }
    expect(await written()).toEqual(before);
  });

  it('is refused by the dashboard with WRONG_ROLE', async () => {
    const token = 'operator-role-test-token-0123456789';
    const dashboard = await serveDashboard({ database: fx.appUrl, tokens: [token] });
    try {
      const page = await fetch(`${dashboard.url}/dead`, { headers: { authorization: `Bearer ${token}` } });
      expect(page.status).toBe(500);
      expect(await page.text()).toContain('WRONG_ROLE');
    } finally {
      await dashboard.close();
    }
  });

  it('may run doctor, which any login may run (what it cannot see is reported as unknown)', async () => {
    const before = await written();
    const report = await doctor(fx.appUrl);
    expect(report.login).toBe(new URL(fx.appUrl).username);
    expect(report.findings.length).toBeGreaterThan(0);
    expect(await written()).toEqual(before);
  });
});

it('migrate refuses, with MIGRATION_FAILED naming the database owner, a login that may not create a schema in a new database', async () => {
  const empty = await createTestDatabase({ empty: true });
  const user = `once_nocreate_${randomBytes(4).toString('hex')}`;
  const password = randomBytes(12).toString('hex');
  await empty.admin.query(`CREATE ROLE ${quoteIdentifier(user)} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD '${password}'`);
  try {
    const { rows } = await empty.admin.query<{ owner: string }>(
      'SELECT pg_catalog.pg_get_userbyid(datdba) AS owner FROM pg_catalog.pg_database WHERE datname = current_database()',
    );
    const refused = await errorOf(migrate(databaseUrlFor(empty.adminUrl, empty.name, { user, password })));
    expect(refused).toMatchObject({ code: 'MIGRATION_FAILED' });
    expect(refused.cause).toMatchObject({ code: 'WRONG_ROLE', neededRole: rows[0]!.owner });
    const schema = await empty.admin.query("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'once'");
    expect(schema.rows).toEqual([]);
  } finally {
    await empty.drop();
    // Roles are cluster-wide: dropped with the database, or a shared server collects them.
    const server = new pg.Client({ connectionString: inject('adminUrl') });
    await server.connect();
    try {
      await server.query(`DROP ROLE IF EXISTS ${quoteIdentifier(user)}`);
    } finally {
      await server.end();
    }
  }
});
