/**
 * pg-once/testing's duplicateStorm, used as a user would: on the demo's three tools
 * (examples/demo/tools.ts), called the way the demo's tool server calls them (withTenant around
 * runIdempotent, keyed by toolCallKey), as a login that is neither superuser nor BYPASSRLS; and
 * on handlers that are not idempotent, to show the storm catches each of them.
 */
import { randomUUID } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { businessSchema } from '../examples/demo/business-schema.ts';
import { toolCallKey, type ToolCall, WAIT_MS } from '../examples/demo/tool-server.ts';
import { runTool } from '../examples/demo/tools.ts';
import { runIdempotent, withTenant } from '../src/index.ts';
import { type DuplicateStormOptions, DuplicateStormError, duplicateStorm, type StormCopy } from '../src/testing.ts';
import { errorOf } from './support/error-of.ts';
import { createTestDatabase, type TestDatabase } from './support/test-database.ts';

const TENANT = 'storm-tenant';

let database: TestDatabase;
let app: Kysely<any>;
let relayUrl: string;
beforeAll(async () => {
  database = await createTestDatabase();
  await database.admin.query(businessSchema((await database.roles())!.app));
  // Room for the burst (8 at once), the timeout retries (2) and the held first call.
  app = database.kysely(await database.createLoginRole('app'), { max: 16 });
  relayUrl = await database.createLoginRole('relay');
});
afterAll(async () => {
  await database?.drop();
});

/**
 * The demo's tool server path (handleToolCall, which answers a 409 as a reply instead of
 * throwing it), with the storm's hook where the demo has its `work` hook. Its short WAIT_MS makes
 * duplicates of the held call answer 409, which the storm's client retries.
 */
const demoTool = (call: ToolCall) => (copy: StormCopy) =>
  withTenant(app, call.tenantId, (tx) =>
    runIdempotent(tx, toolCallKey(call), (t) => runTool(t, call, { runId: call.runId, work: () => copy.inside(t) }), {
      request: call.args,
      tool: call.tool,
      waitMs: WAIT_MS,
    }),
  );

/** Rows of a business table and outbox events of a topic, for one run (read as superuser). */
async function stored(table: 'orders' | 'charges' | 'emails', where: string, values: unknown[], topic: string): Promise<{ rows: number; events: number }> {
  const rows = await database.admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM public.${table} WHERE ${where}`, values);
  const events = await database.admin.query<{ n: number }>('SELECT count(*)::int AS n FROM once.outbox_events WHERE tenant_id = $1 AND topic = $2', [
    TENANT,
    topic,
  ]);
  return { rows: rows.rows[0]!.n, events: events.rows[0]!.n };
}

/** Sessions of this database the server ended by pg_terminate_backend (pg_stat_database, PostgreSQL 14+). */
async function sessionsKilled(): Promise<number> {
  await database.admin.query('SELECT pg_stat_clear_snapshot()');
  const { rows } = await database.admin.query<{ n: number }>('SELECT sessions_killed::int AS n FROM pg_stat_database WHERE datname = current_database()');
  return rows[0]!.n;
}

async function createOrder(runId: string): Promise<number> {
  const call: ToolCall = {
    tenantId: TENANT,
    runId,
    tool: 'create_order',
    args: { customer: 'ada@example.com', items: [{ sku: 'book', quantity: 1, priceCents: 1_500 }] },
  };
  const result = await withTenant(app, TENANT, (tx) => runIdempotent(tx, toolCallKey(call), (t) => runTool(t, call, { runId, work: async () => {} })));
  return (result as { orderId: number }).orderId;
}

describe("duplicateStorm on the demo's tools", () => {
  it('create_order: a copy killed mid-call (throw), 8 concurrent copies, 2 retries after a timeout, a late one: one order, one answer', async () => {
    const runId = `run-${randomUUID()}`;
    const call: ToolCall = {
      tenantId: TENANT,
      runId,
      tool: 'create_order',
      args: { customer: 'ada@example.com', items: [{ sku: 'pen', quantity: 3, priceCents: 250 }] },
    };
    const report = await duplicateStorm(demoTool(call), {
      copies: 8,
      countEffects: async () => (await database.admin.query('SELECT 1 FROM public.orders WHERE run_id = $1', [runId])).rowCount!,
    });
    expect(report.failures).toEqual([]);
    expect(report.copies).toEqual({ kill: 1, concurrent: 8, timeoutRetry: 2, late: 1 });
    expect(report.outcomes).toMatchObject({ executed: 1, killed: 1, failed: 0 });
    // Every copy but the killed one and the one that executed replayed the stored answer.
    expect(report.outcomes.replayed).toBe(12 - 2);
    expect(report.distinctResults).toEqual([{ orderId: expect.any(Number), amountCents: 750 }]);
    expect(report.effects).toBe(1);
    const orderId = (report.distinctResults[0] as { orderId: number }).orderId;
    expect(await stored('orders', 'run_id = $1', [runId], 'orders.created')).toMatchObject({ rows: 1 });
    const events = await database.admin.query("SELECT 1 FROM once.outbox_events WHERE payload->>'orderId' = $1 AND topic = 'orders.created'", [
      String(orderId),
    ]);
    expect(events.rowCount).toBe(1);
  });

  it("charge_card: the killed copy's backend is terminated from an admin connection mid-transaction; one charge, one payment event", async () => {
    const runId = `run-${randomUUID()}`;
    const orderId = await createOrder(runId);
    const call: ToolCall = { tenantId: TENANT, runId, tool: 'charge_card', args: { orderId, amountCents: 1_500, cardToken: 'tok_visa' } };
    const chargeEvents = async () =>
      (await database.admin.query("SELECT 1 FROM once.outbox_events WHERE topic = 'payments.charge' AND payload->>'orderId' = $1", [String(orderId)])).rowCount;
    const report = await duplicateStorm(demoTool(call), {
      kill: { terminate: database.adminUrl },
      copies: 6,
      countEffects: async () => (await stored('charges', 'order_id = $1', [orderId], 'payments.charge')).rows,
      checkEffects: async () => (await chargeEvents()) === 1,
    });
    expect(report.outcomes).toMatchObject({ executed: 1, killed: 1, failed: 0 });
    expect(report.distinctResults).toEqual([{ chargeId: expect.any(Number), orderId, amountCents: 1_500, status: 'requested' }]);
    expect(report.effects).toBe(1);
    expect(await chargeEvents()).toBe(1);
  });

  it('send_email: two terminated copies in a row, 12 copies 4 at a time: one email, one answer', async () => {
    const runId = `run-${randomUUID()}`;
    const orderId = await createOrder(runId);
    const call: ToolCall = { tenantId: TENANT, runId, tool: 'send_email', args: { orderId, to: 'ada@example.com', template: 'receipt' } };
    const killedBefore = await sessionsKilled();
    const report = await duplicateStorm(demoTool(call), {
      kills: 2,
      kill: { terminate: database.adminUrl },
      copies: 12,
      concurrency: 4,
      countEffects: async () => (await stored('emails', 'order_id = $1', [orderId], 'emails.send')).rows,
    });
    expect(report.copies).toEqual({ kill: 2, concurrent: 12, timeoutRetry: 2, late: 1 });
    expect(report.outcomes).toMatchObject({ executed: 1, killed: 2, failed: 0 });
    expect(report.calls).toBe(report.outcomes.executed + report.outcomes.replayed + report.outcomes.busy + report.outcomes.killed);
    expect(report.distinctResults).toEqual([{ emailId: expect.any(Number), status: 'queued' }]);
    // Really terminated: the server counts both sessions as killed by an operator.
    expect((await sessionsKilled()) - killedBefore).toBe(2);
  });
});

describe('duplicateStorm catches handlers that are not idempotent', () => {
  it('an email row written in the transaction but outside runIdempotent: every replay writes it again', async () => {
    const runId = `run-${randomUUID()}`;
    const orderId = await createOrder(runId);
    const broken = (copy: StormCopy) =>
      withTenant(app, TENANT, async (tx) => {
        await sql`INSERT INTO emails (order_id, recipient, template) VALUES (${orderId}, 'ada@example.com', 'receipt')`.execute(tx);
        return runIdempotent(tx, `broken-outside:${runId}`, async (t) => {
          await copy.inside(t);
          return { queued: true };
        });
      });
    const failed = await errorOf(
      duplicateStorm(broken, { copies: 4, countEffects: async () => (await stored('emails', 'order_id = $1', [orderId], 'emails.send')).rows }),
    );
    expect(failed).toBeInstanceOf(DuplicateStormError);
    const { report } = failed as DuplicateStormError;
    // 4 concurrent copies (1 execution, 3 replays) + 2 timeout retries + the late copy each
    // committed a row; the killed copy's rolled back with it.
    expect(report.effects).toBe(7);
    expect(report.failures).toEqual(['one effect: countEffects() returned 7, expected 1']);
    expect((failed as Error).message).toContain('duplicate storm failed: one effect: countEffects() returned 7, expected 1');
    expect((failed as Error).message).toMatch(/calls \d+: executed 1, replayed 6, busy \d+, killed 1, failed 0/);
  });

  it('an effect committed on its own connection inside fn: only the kill mid-call shows it (two emails)', async () => {
    const runId = `run-${randomUUID()}`;
    const orderId = await createOrder(runId);
    // "Sends" the email through another transaction that commits at once: the claim's rollback
    // cannot take it back, so a call killed after it leaves an email nobody got an answer for.
    const broken = (copy: StormCopy) =>
      withTenant(app, TENANT, (tx) =>
        runIdempotent(tx, `broken-side-channel:${runId}`, async (t) => {
          await withTenant(app, TENANT, (other) =>
            sql`INSERT INTO emails (order_id, recipient, template) VALUES (${orderId}, 'ada@example.com', 'receipt')`.execute(other),
          );
          await copy.inside(t);
          return { queued: true };
        }),
      );
    const countEffects = async () => (await stored('emails', 'order_id = $1', [orderId], 'emails.send')).rows;
    const failed = await errorOf(duplicateStorm(broken, { kill: { terminate: database.adminUrl }, countEffects }));
    expect(failed).toBeInstanceOf(DuplicateStormError);
    expect((failed as DuplicateStormError).report).toMatchObject({
      effects: 2,
      failures: ['one effect: countEffects() returned 2, expected 1'],
      outcomes: { executed: 1, killed: 1, failed: 0 },
    });
  });

  it('no idempotency at all: every copy executes, and the answers differ', async () => {
    const runId = `run-${randomUUID()}`;
    const orderId = await createOrder(runId);
    const broken = (copy: StormCopy) =>
      withTenant(app, TENANT, async (tx) => {
        const { rows } = await sql<{
          id: number;
        }>`INSERT INTO emails (order_id, recipient, template) VALUES (${orderId}, 'ada@example.com', 'receipt') RETURNING id`.execute(tx);
        await copy.inside(tx);
        return { emailId: rows[0]!.id };
      });
    const failed = await errorOf(
      duplicateStorm(broken, { copies: 3, timeouts: 1, countEffects: async () => (await stored('emails', 'order_id = $1', [orderId], 'emails.send')).rows }),
    );
    expect(failed).toBeInstanceOf(DuplicateStormError);
    const { report } = failed as DuplicateStormError;
    // 3 concurrent + 1 timeout retry + 1 late, each committing its own row; the killed one did not.
    expect(report.effects).toBe(5);
    expect(report.distinctResults).toHaveLength(5);
    expect(report.outcomes).toMatchObject({ executed: 5, replayed: 0, killed: 1 });
    expect(report.failures).toEqual([
      'one effect: countEffects() returned 5, expected 1',
      'equal answers: the copies got 5 different results',
      'one execution: 5 answered copies ran fn (reached copy.inside()), expected 1',
    ]);
  });
});

describe('duplicateStorm refuses what it cannot do, with INVALID_OPTIONS', () => {
  it('needs countEffects or checkEffects, and refuses unknown options', async () => {
    await expect(duplicateStorm(async () => 1, {})).rejects.toMatchObject({
      code: 'INVALID_OPTIONS',
      issues: [expect.objectContaining({ path: ['countEffects'] })],
    });
    await expect(duplicateStorm(async () => 1, { countEffects: () => 1, copys: 3 } as DuplicateStormOptions)).rejects.toMatchObject({
      code: 'INVALID_OPTIONS',
      issues: [expect.objectContaining({ path: ['copys'] })],
    });
  });

  it('a kill needs copy.inside() in the handler; without kills and timeouts a handler without it still gets the other checks', async () => {
    let calls = 0;
    const noHook = async () => {
      calls += 1;
      return { same: true };
    };
    await expect(duplicateStorm(noHook, { countEffects: () => 1 })).rejects.toMatchObject({
      code: 'INVALID_OPTIONS',
      issues: [expect.objectContaining({ path: ['kills'] })],
    });
    const report = await duplicateStorm(noHook, { kills: 0, timeouts: 0, copies: 3, countEffects: () => 1 });
    expect(report.outcomes).toMatchObject({ executed: 0, replayed: 4 });
    // The refused storm stopped after its first copy, the kill that could not be.
    expect(calls).toBe(1 + 4);
  });

  it('a terminating login that may not signal the backend is named, not mistaken for a kill', async () => {
    const runId = `run-${randomUUID()}`;
    const call: ToolCall = {
      tenantId: TENANT,
      runId,
      tool: 'create_order',
      args: { customer: 'bob@example.com', items: [{ sku: 'ink', quantity: 1, priceCents: 99 }] },
    };
    const refused = await errorOf(duplicateStorm(demoTool(call), { kill: { terminate: relayUrl }, countEffects: () => 1 }));
    expect(refused).toMatchObject({ code: 'INVALID_OPTIONS', issues: [expect.objectContaining({ path: ['kill', 'terminate'] })] });
  });
});
