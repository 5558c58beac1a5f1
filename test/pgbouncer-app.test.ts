/**
 * The application's path through PgBouncer in transaction mode (PgBouncer 1.18 here: no
 * protocol-level prepared statements), against a PgBouncer of this file's own with two server
 * connections per login (one for `solo`): withTenant + runIdempotent under 32 concurrent
 * duplicates, enqueue, receiveOnce, the two-phase mode, and tenant isolation while many clients
 * share one server connection. The tenant is a transaction-local setting (set_config(..., true)),
 * so it cannot follow a server connection to the next client; the first test shows that a
 * session-level setting would, so the isolation tests could see a leak if there were one. Statement
 * mode cannot work (a transaction holds several statements): withTenant says which mode to use.
 *
 * Without PgBouncer the suite is skipped, unless CI or ONCE_REQUIRE_SERVICES is set.
 */
import { type Kysely, sql, type Transaction } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enqueue, PoolerSettingError, receiveOnce, runIdempotent, runIdempotentExternal, SQLSTATE_TENANT_MISSING, withTenant } from '../src/index.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { errorOf } from './support/error-of.ts';
import { type Pgbouncer, pgbouncerAvailable, pgbouncerRequired, requirePgbouncer, startPgbouncer } from './support/pgbouncer.ts';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
let n = 0;
const freshKey = (label: string) => `${label}-${++n}-${Date.now()}`;

function orderHandler(key: string) {
  const handler = async (tx: Transaction<any>) => {
    handler.calls += 1;
    await sql`INSERT INTO orders (key, amount) VALUES (${key}, 100)`.execute(tx);
    return { orderId: `ord_${key}`, amount: 100 };
  };
  handler.calls = 0;
  return handler;
}

describe.skipIf(!pgbouncerAvailable && !pgbouncerRequired)('the application path through PgBouncer (pool_mode = transaction)', () => {
  let fx: AppFixture;
  let bouncer: Pgbouncer;
  /** pool_mode = statement. */
  let statementMode: Pgbouncer;
  /** Kysely through PgBouncer: many clients, two server connections. */
  let app: Kysely<any>;
  /** Kysely through PgBouncer: ten clients, ONE server connection. */
  let solo: Kysely<any>;
  /** Two plain clients of `solo`, to look at the one server connection between transactions. */
  let first: pg.Client;
  let second: pg.Client;

  beforeAll(async () => {
    requirePgbouncer();
    fx = await createAppFixture();
    bouncer = await startPgbouncer({ databases: { app: fx.appUrl, solo: fx.appUrl }, poolSize: 2, aliasPoolSizes: { solo: 1 } });
    statementMode = await startPgbouncer({ databases: { app: fx.appUrl }, poolMode: 'statement' });
    app = fx.database.kysely(bouncer.url('app'), { max: 34 });
    solo = fx.database.kysely(bouncer.url('solo'), { max: 10 });
    first = new pg.Client({ connectionString: bouncer.url('solo') });
    second = new pg.Client({ connectionString: bouncer.url('solo') });
    for (const client of [first, second]) {
      client.on('error', () => {});
      await client.connect();
    }
  });
  afterAll(async () => {
    await Promise.all([first?.end().catch(() => {}), second?.end().catch(() => {})]);
    await fx?.close();
    await Promise.all([bouncer?.stop(), statementMode?.stop()]);
  });

  /** The one server connection's backend and its tenant setting, as a client outside any transaction sees them. */
  async function between(client: pg.Client): Promise<{ pid: number; tenant: string | null }> {
    const { rows } = await client.query<{ pid: number; tenant: string | null }>(
      `SELECT pg_backend_pid() AS pid, current_setting('once.tenant_id', true) AS tenant`,
    );
    return rows[0]!;
  }

  it('shares one server connection between clients, so a session-level setting would leak (the control)', async () => {
    await first.query(`SELECT set_config('once.tenant_id', 'leaked-tenant', false)`);
    const seen = await between(second);
    await second.query('RESET once.tenant_id');
    expect(seen.tenant).toBe('leaked-tenant');
    expect((await between(first)).pid).toBe(seen.pid);
  });

  it('leaves no tenant on the shared server connection after withTenant', async () => {
    // Twice: the first call on an instance also checks the role, the later ones only set the tenant.
    for (const tenantId of ['tenant-a', 'tenant-b']) {
      const pid = await withTenant(solo, tenantId, async (tx) => {
        await enqueue(tx, { topic: 'iso.event', payload: { tenantId } });
        const { rows } = await sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`.execute(tx);
        return rows[0]!.pid;
      });
      const seen = await between(second);
      expect(seen.pid).toBe(pid);
      expect(seen.tenant ?? '').toBe('');
    }
    // Outside withTenant, the application role reads nothing of any tenant: it is refused.
    const error = await errorOf(second.query('SELECT count(*) FROM once.outbox_events'));
    expect((error as { code?: string }).code).toBe(SQLSTATE_TENANT_MISSING);
  });

  it('keeps interleaved tenants apart on one server connection', async () => {
    const tenants = ['iso-a', 'iso-b', 'iso-c'];
    const calls = Array.from({ length: 60 }, (_, index) => tenants[index % tenants.length]!);
    const seen = await Promise.all(
      calls.map((tenantId, index) =>
        withTenant(solo, tenantId, (tx) =>
          runIdempotent(tx, `iso-${index}`, async (inner) => {
            await enqueue(inner, { topic: 'iso.event', payload: { index } });
            const { rows } = await sql<{ tenants: string[]; setting: string; pid: number }>`
              SELECT array(SELECT DISTINCT tenant_id FROM once.outbox_events) AS tenants,
                     current_setting('once.tenant_id') AS setting, pg_backend_pid() AS pid`.execute(inner);
            return rows[0]!;
          }),
        ),
      ),
    );
    calls.forEach((tenantId, index) => {
      expect(seen[index]!.setting).toBe(tenantId);
      expect(seen[index]!.tenants).toStrictEqual([tenantId]);
    });
    expect(new Set(seen.map((row) => row.pid)).size).toBe(1);
    const stored = await fx.rows<{ tenant_id: string }>('outbox_events', `topic = 'iso.event' AND tenant_id LIKE 'iso-%'`);
    for (const tenantId of tenants) expect(stored.filter((row) => row.tenant_id === tenantId)).toHaveLength(20);
    expect((await between(second)).tenant ?? '').toBe('');
  });

  it('runs fn once for 32 concurrent duplicates, all of which get deep-equal results', async () => {
    const key = freshKey('storm');
    const handler = orderHandler(key);
    const slow = async (tx: Transaction<any>) => {
      const result = await handler(tx);
      await sleep(150); // keep the first call open while the duplicates arrive
      return result;
    };
    const results = await Promise.all(
      Array.from({ length: 32 }, () => withTenant(app, 'tenant-a', (tx) => runIdempotent.detailed(tx, key, slow, { maxWaiting: 32 }))),
    );
    expect(handler.calls).toBe(1);
    expect((await fx.orders('tenant-a')).filter((row) => row.key === key)).toHaveLength(1);
    expect(results.filter((result) => result.outcome === 'executed')).toHaveLength(1);
    for (const result of results) expect(result.value).toStrictEqual(results[0]!.value);
  });

  it('enqueues in the caller transaction: committed with it, gone with its rollback', async () => {
    const key = freshKey('enqueue');
    const enqueued = await withTenant(app, 'tenant-e', (tx) =>
      runIdempotent(tx, key, (inner) => enqueue(inner, { topic: 'orders.created', payload: { key } })),
    );
    const again = await withTenant(app, 'tenant-e', (tx) => runIdempotent(tx, key, (inner) => enqueue(inner, { topic: 'orders.created', payload: { key } })));
    expect(again).toStrictEqual(enqueued);
    const rolledBack = await errorOf(
      withTenant(app, 'tenant-e', async (tx) => {
        await enqueue(tx, { topic: 'orders.rolled-back', payload: {} });
        throw new Error('roll back');
      }),
    );
    expect((rolledBack as Error).message).toBe('roll back');
    const rows = await fx.rows<{ id: string; topic: string }>('outbox_events', `tenant_id = 'tenant-e'`);
    expect(rows.map((row) => [String(row.id), row.topic])).toStrictEqual([[enqueued.id, 'orders.created']]);
  });

  it('receives a message once (receiveOnce)', async () => {
    const messageId = freshKey('msg');
    let runs = 0;
    const receive = () =>
      receiveOnce(app, { messageId, tenant: 'tenant-r' }, async () => {
        runs += 1;
        return { handled: messageId };
      });
    const results = await Promise.all([receive(), receive(), receive()]);
    expect(await receive()).toStrictEqual({ handled: messageId });
    expect(runs).toBe(1);
    for (const result of results) expect(result).toStrictEqual({ handled: messageId });
  });

  it('runs the two-phase mode (runIdempotentExternal) once, with one downstream key, for concurrent duplicates', async () => {
    const key = freshKey('external');
    const keysSeen: string[] = [];
    const charge = async ({ idempotencyKey }: { idempotencyKey: string }) => {
      keysSeen.push(idempotencyKey);
      await sleep(100); // the duplicates arrive while the effect runs, outside any transaction
      return { chargeId: `ch_${key}` };
    };
    const outcomes = await Promise.all(
      Array.from({ length: 8 }, () => runIdempotentExternal.detailed(app, 'tenant-x', key, charge, { tool: 'charge_card', waitMs: 10_000 })),
    );
    expect(keysSeen).toHaveLength(1);
    expect(outcomes.filter((outcome) => outcome.outcome === 'executed')).toHaveLength(1);
    for (const outcome of outcomes) expect(outcome.value).toStrictEqual({ chargeId: `ch_${key}` });
    const [record] = await fx.rows<{ status: string }>('idempotency_keys', `key = '${key}'`);
    expect(record?.status).toBe('completed');
  });

  it('refuses statement mode with a coded error naming the pool modes that work', async () => {
    const db = fx.database.kysely(statementMode.url('app'), { max: 1 });
    const error = await errorOf(withTenant(db, 'tenant-a', (tx) => runIdempotent(tx, freshKey('statement'), async () => 1)));
    expect(error).toBeInstanceOf(PoolerSettingError);
    expect(error).toMatchObject({ code: 'POOLER_SETTING_REQUIRED' });
    expect(error.message).toContain('pool_mode = transaction or session');
  });
});
