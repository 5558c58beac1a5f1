/**
 * status() and `pg-once status --json` report what the rows say: per tenant and tool, calls,
 * executions, replays, waits, key reuses, rate-limited calls; the outbox backlog; table sizes.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { sql } from 'kysely';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { enqueue, runIdempotent, setRateLimit, status, withTenant } from '../src/index.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';

let fx: AppFixture;
let relayUrl: string;
beforeAll(async () => {
  fx = await createAppFixture(8);
  relayUrl = await fx.database.createLoginRole('relay');
});
afterAll(async () => {
  await fx?.close();
});

/** Resolves once a backend of this database waits for a lock (the duplicate, on the first call's key). */
async function lockWaiter(): Promise<void> {
  for (const started = Date.now(); Date.now() - started < 30_000; ) {
    const { rows } = await fx.database.admin.query<{ waiting: number }>(
      'SELECT count(*)::int AS waiting FROM pg_locks l JOIN pg_database d ON d.oid = l.database WHERE NOT l.granted AND d.datname = current_database()',
    );
    if ((rows[0]?.waiting ?? 0) > 0) return;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error('the duplicate never waited for a lock');
}

const call = (tenant: string, key: string, options: { tool?: string; request?: unknown } = {}, fn = async () => key) =>
  withTenant(fx.app, tenant, (tx) => runIdempotent(tx, key, fn, options)).catch((error: unknown) => error);

it('counts what happened, per tenant and tool, and the outbox', async () => {
  // alpha/send_email: 3 executions, 2 replays, 1 key reuse.
  for (const key of ['e1', 'e2', 'e3']) await call('alpha', key, { tool: 'send_email', request: { key } });
  await call('alpha', 'e1', { tool: 'send_email', request: { key: 'e1' } });
  await call('alpha', 'e1', { tool: 'send_email', request: { key: 'e1' } });
  await call('alpha', 'e2', { tool: 'send_email', request: { key: 'other' } });
  // alpha/charge_card: 1 execution, 1 waited replay.
  // No sleeps: the duplicate starts once the first call is inside fn, and the first is released
  // once the duplicate is waiting on a lock (a fixed delay let the first finish under load, and
  // the duplicate counted as a replay instead of a wait).
  let release!: () => void;
  let entered!: () => void;
  const inside = new Promise<void>((resolve) => (entered = resolve));
  const first = call('alpha', 'c1', { tool: 'charge_card' }, async () => {
    entered();
    await new Promise<void>((resolve) => (release = resolve));
    return 'charged';
  });
  await inside;
  const duplicate = call('alpha', 'c1', { tool: 'charge_card' });
  await lockWaiter();
  release();
  await Promise.all([first, duplicate]);
  // beta: limited to 1, then 2 rate-limited calls.
  await setRateLimit(fx.database.adminUrl, { tenant: 'beta', perSecond: 0.01, burst: 1 });
  for (const key of ['b1', 'b2', 'b3']) await call('beta', key);
  // Outbox: 2 pending, 1 delivered, 1 dead.
  await withTenant(fx.app, 'alpha', async (tx) => {
    for (const topic of ['p1', 'p2', 'd1', 'x1']) await enqueue(tx, { topic, payload: null });
  });
  await fx.database.admin.query(`UPDATE once.outbox_events SET status = 'delivered', delivered_at = now() WHERE topic = 'd1';
                                 UPDATE once.outbox_events SET status = 'dead' WHERE topic = 'x1'`);

  const result = await status(relayUrl, { window: '1h' });
  const row = (tenantId: string, tool: string) => result.tenants.find((t) => t.tenantId === tenantId && t.tool === tool);
  expect(row('alpha', 'send_email')).toEqual({
    tenantId: 'alpha',
    tool: 'send_email',
    calls: 6,
    executions: 3,
    replays: 2,
    waits: 0,
    keyReuses: 1,
    rateLimited: 0,
    inProgress: 0,
  });
  expect(row('alpha', 'charge_card')).toEqual({
    tenantId: 'alpha',
    tool: 'charge_card',
    calls: 2,
    executions: 1,
    replays: 0,
    waits: 1,
    keyReuses: 0,
    rateLimited: 0,
    inProgress: 0,
  });
  expect(row('beta', '')).toEqual({ tenantId: 'beta', tool: '', calls: 3, executions: 1, replays: 0, waits: 0, keyReuses: 0, rateLimited: 2, inProgress: 0 });
  expect(result.outbox).toMatchObject({ pending: 2, dead: 1, deliveredInWindow: 1 });
  expect(result.outbox.oldestPendingAgeMs).toBeGreaterThanOrEqual(0);
  expect(result.tables.map((t) => t.table)).toEqual(expect.arrayContaining(['idempotency_keys', 'outbox_events', 'dedupe_audit']));
  expect(result.sweep.nextRunAt!.getTime()).toBeGreaterThan(Date.now());

  // The CLI prints the same numbers as JSON, and a readable table otherwise.
  const run = promisify(execFile);
  const { stdout } = await run(process.execPath, ['src/cli.ts', 'status', '--json', '--database-url', relayUrl]);
  const printed = JSON.parse(stdout);
  expect(printed.tenants).toEqual(result.tenants);
  expect(printed.outbox.pending).toBe(2);
  const text = await run(process.execPath, ['src/cli.ts', 'status', '--database-url', relayUrl]);
  expect(text.stdout).toMatch(/alpha\s+send_email\s+6\s+3\s+2\s+0\s+1\s+0/);
  expect(text.stdout).toContain('Outbox: 2 pending');
});

it('counts the rows of small tables exactly, where the estimate said 0 before the first ANALYZE', async () => {
  await withTenant(fx.app, 'gamma', async (tx) => {
    for (let i = 0; i < 150; i += 1) await enqueue(tx, { topic: 'count.me', payload: { i } });
  });
  const { rows: exactCount } = await fx.database.admin.query<{ n: number }>('SELECT count(*)::int AS n FROM once.outbox_events');
  const result = await status(relayUrl);
  const outbox = result.tables.find((t) => t.table === 'outbox_events')!;
  expect(outbox).toMatchObject({ rows: exactCount[0]!.n, rowsExact: true });
  // The relay role may not read idempotency records: their count stays an estimate.
  expect(result.tables.find((t) => t.table === 'idempotency_keys')).toMatchObject({ rowsExact: false });
  const run = promisify(execFile);
  const { stdout } = await run(process.execPath, ['src/cli.ts', 'status', '--database-url', relayUrl]);
  expect(stdout).toMatch(new RegExp(`outbox_events\\s+\\d+ kB\\s+${exactCount[0]!.n}\\b`));
  expect(stdout).toMatch(/idempotency_keys\s+\d+ kB\s+~\d+ \(est\.\)/);
});

it('refuses the application role, which would see a single tenant', async () => {
  await expect(status(fx.appUrl)).rejects.toMatchObject({ code: 'WRONG_ROLE' });
});

it('counts 409s: a duplicate refused with IDEMPOTENCY_IN_PROGRESS leaves an audit row, and nothing of its transaction', async () => {
  let release!: () => void;
  let running!: () => void;
  const started = new Promise<void>((resolve) => (running = resolve));
  const first = call('gamma', 'slow-1', { tool: 'book_flight' }, async () => {
    running();
    await new Promise<void>((resolve) => (release = resolve));
    return 'booked';
  });
  await started;
  // Two duplicates that will not wait; each wrote a business row before its call.
  const refused = await Promise.all(
    [1, 2].map((n) =>
      withTenant(fx.app, 'gamma', async (tx) => {
        await sql`INSERT INTO public.orders (key, amount) VALUES (${`before-409-${n}`}, ${n})`.execute(tx);
        return runIdempotent(tx, 'slow-1', async () => 'never', { tool: 'book_flight', waitMs: 0 });
      }).catch((error: unknown) => error),
    ),
  );
  release();
  expect(await first).toBe('booked');
  for (const error of refused) expect(error).toMatchObject({ code: 'IDEMPOTENCY_IN_PROGRESS' });
  // The refusal is retryable: its transaction rolled back, so a retry cannot write its rows twice.
  expect((await fx.orders('gamma')).map((order) => order.key)).toEqual([]);
  const audit = await fx.rows<{ tenant_id: string; key: string; tool: string; detail: { version: string; retry_after_ms: number } }>(
    'dedupe_audit',
    "kind = 'in_progress'",
  );
  expect(audit).toHaveLength(2);
  for (const row of audit) {
    expect(row).toMatchObject({ tenant_id: 'gamma', key: 'slow-1', tool: 'book_flight', detail: { version: '' } });
    expect(row.detail.retry_after_ms).toBeGreaterThan(0);
  }
  const result = await status(relayUrl, { window: '1h' });
  expect(result.tenants.find((t) => t.tenantId === 'gamma' && t.tool === 'book_flight')).toEqual({
    tenantId: 'gamma',
    tool: 'book_flight',
    calls: 3,
    executions: 1,
    replays: 0,
    waits: 0,
    keyReuses: 0,
    rateLimited: 0,
    inProgress: 2,
  });
});
