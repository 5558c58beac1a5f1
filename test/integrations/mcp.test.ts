/**
 * pg-once/mcp through a real MCP client and server (the SDK's McpServer and Client over its
 * in-memory transport, which carries authInfo as an authenticating HTTP transport would), against
 * the real Postgres harness as a non-bypass application role.
 */
import { randomUUID } from 'node:crypto';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { callToolOnce, ERROR_META, IDEMPOTENCY_KEY_META, OUTCOME_META, withIdempotency } from '../../src/integrations/mcp.ts';
import { InvalidKeyError, InvalidOptionsError, runIdempotent, setRateLimit, withTenant } from '../../src/index.ts';
import { errorOf } from '../support/error-of.ts';
import { createAppFixture, type AppFixture } from '../support/app-fixture.ts';

let fx: AppFixture;
beforeAll(async () => {
  fx = await createAppFixture();
});
afterAll(async () => {
  await fx?.close();
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
let unique = 0;
const fresh = (label: string) => `${label}-${++unique}-${Date.now()}`;
const ordersFor = async (tenantId: string, orderKey: string) => (await fx.orders(tenantId)).filter((row) => row.key === orderKey);

type Executions = { charge: number; quote: number; refund: number; flaky: number };

/**
 * A shop's MCP service: `session` opens a session on a server instance of its own (as a
 * session-per-connection HTTP server does), all sessions sharing one database and one count of
 * how often each handler really ran.
 */
function shopService() {
  const executions: Executions = { charge: 0, quote: 0, refund: 0, flaky: 0 };
  return { executions, session: (clientId: string | undefined) => connect(buildServer(executions), clientId) };
}

function buildServer(executions: Executions) {
  const server = new McpServer({ name: 'shop', version: '1.0.0' });
  const tenantFrom = (extra: { authInfo?: AuthInfo }) => extra.authInfo?.clientId;

  server.registerTool(
    'charge_card',
    {
      description: 'Charge the card on file for an order',
      inputSchema: { orderKey: z.string(), amount: z.number().int(), delayMs: z.number().int().optional() },
      annotations: { destructiveHint: true, idempotentHint: false },
    },
    withIdempotency(
      async ({ orderKey, amount, delayMs }, _extra, tx) => {
        executions.charge += 1;
        await sql`INSERT INTO orders (key, amount) VALUES (${orderKey}, ${amount})`.execute(tx);
        if (delayMs) await sleep(delayMs);
        const receipt = { chargeId: `ch_${orderKey}`, amount, chargedAt: new Date().toISOString() };
        return { content: [{ type: 'text', text: JSON.stringify(receipt) }], structuredContent: receipt };
      },
      { db: fx.app, name: 'charge_card', tenantFrom },
    ),
  );

  server.registerTool(
    'quote_price',
    { description: 'Price an order (reads only)', inputSchema: { sku: z.string(), quantity: z.number().int() }, annotations: { readOnlyHint: true } },
    withIdempotency(
      async ({ sku, quantity }) => {
        executions.quote += 1;
        return { content: [{ type: 'text', text: `${sku} x${quantity}: ${quantity * 250} at ${Date.now()}` }] };
      },
      { db: fx.app, name: 'quote_price', tenantFrom, sideEffecting: false, contentKeyTtl: '2m' },
    ),
  );

  server.registerTool(
    'refund',
    { description: 'Refund an order; the model supplies requestId', inputSchema: { requestId: z.string(), orderKey: z.string(), amount: z.number().int() } },
    withIdempotency(
      async ({ orderKey, amount }, _extra, tx) => {
        executions.refund += 1;
        await sql`INSERT INTO orders (key, amount) VALUES (${orderKey}, ${-amount})`.execute(tx);
        return { content: [{ type: 'text', text: `refunded ${amount}` }] };
      },
      { db: fx.app, name: 'refund', tenantFrom, keyFrom: (_extra, args) => args.requestId },
    ),
  );

  server.registerTool(
    'flaky_charge',
    { description: 'Fails the first time with a tool error', inputSchema: { orderKey: z.string() } },
    withIdempotency(
      async ({ orderKey }, _extra, tx) => {
        executions.flaky += 1;
        await sql`INSERT INTO orders (key, amount) VALUES (${orderKey}, 1)`.execute(tx);
        if (executions.flaky === 1) return { isError: true, content: [{ type: 'text', text: 'upstream timed out' }] };
        return { content: [{ type: 'text', text: 'charged' }] };
      },
      { db: fx.app, name: 'flaky_charge', tenantFrom },
    ),
  );
  return server;
}

const open: Array<() => Promise<void>> = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((close) => close()));
});

/** Connects a client to `server` as the principal `clientId` (or unauthenticated). */
async function connect(server: McpServer, clientId: string | undefined) {
  const [clientTransport, serverTransport] = InMemoryTransport.createLinkedPair();
  if (clientId !== undefined) {
    // What a bearer-auth middleware does on HTTP: every request reaches the server with authInfo.
    const authInfo: AuthInfo = { token: `token-${clientId}`, clientId, scopes: ['orders:write'] };
    const send = clientTransport.send.bind(clientTransport);
    clientTransport.send = (message, options) => send(message, { ...options, authInfo });
  }
  const client = new Client({ name: 'agent-host', version: '1.0.0' });
  await Promise.all([server.connect(serverTransport), client.connect(clientTransport)]);
  open.push(async () => {
    await client.close();
  });
  return client;
}

const textOf = (result: object) => (result as { content: { text: string }[] }).content[0]!.text;
const metaOf = (result: object) => ((result as { _meta?: unknown })._meta ?? {}) as Record<string, any>;

describe('withIdempotency + callToolOnce (MCP)', () => {
  it('a call retried with the same key runs once; the retry gets the stored result', async () => {
    const { session, executions } = shopService();
    const client = await session('tenant-mcp');
    const key = randomUUID();
    const orderKey = fresh('retry');
    const params = { name: 'charge_card', arguments: { orderKey, amount: 1_500 } };

    const first = await callToolOnce(client, params, { key });
    const retry = await callToolOnce(client, params, { key });

    expect(executions.charge).toBe(1);
    expect(await ordersFor('tenant-mcp', orderKey)).toHaveLength(1);
    expect(first.isError).toBeFalsy();
    expect(metaOf(first)[OUTCOME_META]).toBe('executed');
    expect(metaOf(retry)[OUTCOME_META]).toBe('replayed');
    expect(retry.content).toEqual(first.content);
    expect(retry.structuredContent).toEqual(first.structuredContent);
    const records = await fx.rows<{ key: string; tool: string; status: string }>('idempotency_keys', `key = 'mcp:${key}'`);
    expect(records).toEqual([expect.objectContaining({ tenant_id: 'tenant-mcp', tool: 'charge_card', status: 'completed' })]);
  });

  it('an agent host resumed after a restart (new connection, new request ids) gets the stored result', async () => {
    const { session, executions } = shopService();
    const key = randomUUID(); // stored with the run before the first attempt
    const orderKey = fresh('resume');
    const params = { name: 'charge_card', arguments: { orderKey, amount: 75 } };

    const before = await callToolOnce(await session('tenant-mcp'), params, { key });
    const restarted = await session('tenant-mcp');
    await restarted.listTools(); // a fresh host discovers tools first, so its request ids differ too
    const after = await callToolOnce(restarted, params, { key });

    expect(executions.charge).toBe(1);
    expect(await ordersFor('tenant-mcp', orderKey)).toHaveLength(1);
    expect(after.structuredContent).toEqual(before.structuredContent);
    expect(metaOf(after)[OUTCOME_META]).toBe('replayed');
  });

  it('a request that timed out is retried under the same key; the retry waits for the first: one charge', async () => {
    const { session, executions } = shopService();
    const client = await session('tenant-mcp');
    const orderKey = fresh('timeout');
    const params = { name: 'charge_card', arguments: { orderKey, amount: 20, delayMs: 600 } };

    // Plain callTool gives up after the timeout, although the server goes on and charges.
    await expect(client.callTool({ ...params, _meta: { [IDEMPOTENCY_KEY_META]: randomUUID() } }, undefined, { timeout: 100 })).rejects.toMatchObject({
      code: -32_001,
    });
    const key = randomUUID();
    const otherOrder = fresh('timeout-retried');
    const result = await callToolOnce(
      client,
      { name: 'charge_card', arguments: { orderKey: otherOrder, amount: 20, delayMs: 600 } },
      {
        key,
        retries: 5,
        request: { timeout: 400 },
      },
    );

    expect(result.isError).toBeFalsy();
    expect(result.structuredContent).toMatchObject({ chargeId: `ch_${otherOrder}`, amount: 20 });
    // A later attempt under the same key did reach the server, and replayed instead of charging.
    const audit = await fx.rows<{ detail: { outcome: string } }>('dedupe_audit', `key = 'mcp:${key}'`);
    expect(audit.filter((row) => row.detail.outcome === 'replayed').length).toBeGreaterThanOrEqual(1);
    expect(await ordersFor('tenant-mcp', otherOrder)).toHaveLength(1);
    // The abandoned plain request still charges, in the background: the duplicate pg-once prevents.
    await vi.waitFor(async () => expect(await ordersFor('tenant-mcp', orderKey)).toHaveLength(1), { timeout: 10_000, interval: 50 });
    expect(executions.charge).toBe(2);
  });

  it('parallel duplicates with one key: one charge, every caller gets the same result', async () => {
    const { session, executions } = shopService();
    const client = await session('tenant-mcp');
    const key = randomUUID();
    const orderKey = fresh('parallel');
    const params = { name: 'charge_card', arguments: { orderKey, amount: 640, delayMs: 150 } };

    const results = await Promise.all(Array.from({ length: 6 }, () => callToolOnce(client, params, { key })));

    expect(executions.charge).toBe(1);
    expect(await ordersFor('tenant-mcp', orderKey)).toHaveLength(1);
    expect(results.map((result) => metaOf(result)[OUTCOME_META]).sort()).toEqual(['executed', 'replayed', 'replayed', 'replayed', 'replayed', 'replayed']);
    for (const result of results) expect(result.structuredContent).toEqual(results[0]!.structuredContent);
  });

  it('a side-effecting tool called without a key is refused with an error result, and nothing is written', async () => {
    const { session, executions } = shopService();
    const client = await session('tenant-nokey');
    const orderKey = fresh('nokey');

    const result = await client.callTool({ name: 'charge_card', arguments: { orderKey, amount: 10 } });

    expect(result.isError).toBe(true);
    expect(metaOf(result)[ERROR_META]).toEqual({ code: 'INVALID_KEY', retryable: false, httpStatus: 400 });
    expect(textOf(result)).toContain(IDEMPOTENCY_KEY_META);
    expect(executions.charge).toBe(0);
    expect(await fx.orders('tenant-nokey')).toEqual([]);
    expect(await fx.rows('idempotency_keys', `tenant_id = 'tenant-nokey'`)).toEqual([]);

    for (const badKey of [42, '', 'tab\there']) {
      const refused = await client.callTool({ name: 'charge_card', arguments: { orderKey, amount: 10 }, _meta: { [IDEMPOTENCY_KEY_META]: badKey } });
      expect(metaOf(refused)[ERROR_META]).toMatchObject({ code: 'INVALID_KEY' });
    }
    expect(executions.charge).toBe(0);
  });

  it('a read-only tool without a key falls back to a content key kept for contentKeyTtl', async () => {
    const { session, executions } = shopService();
    const client = await session('tenant-quote');
    const params = { name: 'quote_price', arguments: { sku: fresh('sku'), quantity: 3 } };

    const first = await client.callTool(params);
    const second = await client.callTool(params);
    const other = await client.callTool({ name: 'quote_price', arguments: { ...params.arguments, quantity: 4 } });

    expect(executions.quote).toBe(2);
    expect(second.content).toEqual(first.content);
    expect(other.content).not.toEqual(first.content);
    const records = await fx.rows<{ key: string; created_at: Date; expires_at: Date }>('idempotency_keys', `tenant_id = 'tenant-quote'`);
    expect(records).toHaveLength(2);
    for (const record of records) {
      expect(record.key).toMatch(/^mcp:content:quote_price:[0-9a-f]{32}$/);
      expect(record.expires_at.getTime() - record.created_at.getTime()).toBe(2 * 60 * 1_000);
    }
  });

  it('keys are scoped by the authenticated principal; an unauthenticated call is refused', async () => {
    const { session, executions } = shopService();
    const key = randomUUID();
    const orderKey = fresh('principals');
    const params = { name: 'charge_card', arguments: { orderKey, amount: 5 } };

    const alice = await callToolOnce(await session('tenant-alice'), params, { key });
    const bob = await callToolOnce(await session('tenant-bob'), params, { key });
    const anonymous = await callToolOnce(await session(undefined), params, { key });

    expect(metaOf(alice)[OUTCOME_META]).toBe('executed');
    expect(metaOf(bob)[OUTCOME_META]).toBe('executed');
    expect(executions.charge).toBe(2);
    expect(await ordersFor('tenant-alice', orderKey)).toHaveLength(1);
    expect(await ordersFor('tenant-bob', orderKey)).toHaveLength(1);
    expect(anonymous.isError).toBe(true);
    expect(metaOf(anonymous)[ERROR_META]).toMatchObject({ code: 'INVALID_TENANT' });
  });

  it('the same key with other arguments, or sent to another tool, is refused and runs nothing', async () => {
    const { session, executions } = shopService();
    const client = await session('tenant-mcp');
    const key = randomUUID();
    const orderKey = fresh('reuse');

    await callToolOnce(client, { name: 'charge_card', arguments: { orderKey, amount: 100 } }, { key });
    const otherArguments = await callToolOnce(client, { name: 'charge_card', arguments: { orderKey, amount: 999 } }, { key });
    const otherTool = await callToolOnce(client, { name: 'flaky_charge', arguments: { orderKey } }, { key });

    for (const result of [otherArguments, otherTool]) {
      expect(result.isError).toBe(true);
      expect(metaOf(result)[ERROR_META]).toEqual({ code: 'IDEMPOTENCY_KEY_REUSED', retryable: false, httpStatus: 422 });
    }
    expect(executions.charge).toBe(1);
    expect(executions.flaky).toBe(0);
    expect(await ordersFor('tenant-mcp', orderKey)).toEqual([expect.objectContaining({ amount: 100 })]);
  });

  it('keyFrom reads the key from an argument', async () => {
    const { session, executions } = shopService();
    const client = await session('tenant-mcp');
    const requestId = randomUUID();
    const orderKey = fresh('refund');
    const params = { name: 'refund', arguments: { requestId, orderKey, amount: 30 } };

    await client.callTool(params);
    const again = await client.callTool(params);

    expect(executions.refund).toBe(1);
    expect(metaOf(again)[OUTCOME_META]).toBe('replayed');
    expect(await ordersFor('tenant-mcp', orderKey)).toEqual([expect.objectContaining({ amount: -30 })]);
    expect(await fx.rows('idempotency_keys', `key = 'mcp:${requestId}'`)).toHaveLength(1);
  });

  it('an error result is not stored by default: its writes roll back and the retry runs afresh', async () => {
    const { session, executions } = shopService();
    const client = await session('tenant-mcp');
    const key = randomUUID();
    const orderKey = fresh('flaky');
    const params = { name: 'flaky_charge', arguments: { orderKey } };

    const failed = await callToolOnce(client, params, { key });
    expect(failed.isError).toBe(true);
    expect(textOf(failed)).toBe('upstream timed out');
    expect(await ordersFor('tenant-mcp', orderKey)).toEqual([]);
    expect(await fx.rows('idempotency_keys', `key = 'mcp:${key}'`)).toEqual([]);

    const retried = await callToolOnce(client, params, { key });
    const replayed = await callToolOnce(client, params, { key });
    expect(textOf(retried)).toBe('charged');
    expect(metaOf(replayed)[OUTCOME_META]).toBe('replayed');
    expect(executions.flaky).toBe(2);
    expect(await ordersFor('tenant-mcp', orderKey)).toHaveLength(1);
  });

  it("a key in the mcp: namespace cannot be claimed outside the adapter: the client's call still runs", async () => {
    const { session, executions } = shopService();
    const client = await session('tenant-mcp-ns');
    const key = randomUUID();
    const orderKey = fresh('namespace');

    // A model-written key copied into some other tool's runIdempotent, aimed at this client's call.
    const error = await errorOf(withTenant(fx.app, 'tenant-mcp-ns', (tx) => runIdempotent(tx, `mcp:${key}`, async () => 'pre-empted')));
    expect(error).toBeInstanceOf(InvalidKeyError);
    expect(await fx.rows('idempotency_keys', `key = 'mcp:${key}'`)).toEqual([]);

    const result = await callToolOnce(client, { name: 'charge_card', arguments: { orderKey, amount: 5 } }, { key });
    expect(result.isError).toBeFalsy();
    expect(metaOf(result)[OUTCOME_META]).toBe('executed');
    expect(executions.charge).toBe(1);
    // Client keys may look like any namespace: behind `mcp:` they are only MCP keys.
    const inboxLooking = await callToolOnce(client, { name: 'charge_card', arguments: { orderKey: fresh('ns2'), amount: 5 } }, { key: `inbox:${key}` });
    expect(inboxLooking.isError).toBeFalsy();
    expect(await fx.rows('idempotency_keys', `key = 'mcp:inbox:${key}'`)).toHaveLength(1);
  });

  it("a rate-limited call is an error result carrying the limiter's retryAfterMs", async () => {
    const tenant = fresh('tenant-mcp-limited');
    await setRateLimit(fx.database.adminUrl, { tenant, perSecond: 0.01, burst: 1 });
    const { session, executions } = shopService();
    const client = await session(tenant);

    const first = await callToolOnce(client, { name: 'charge_card', arguments: { orderKey: fresh('limited-1'), amount: 1 } }, { key: randomUUID() });
    const limited = await callToolOnce(client, { name: 'charge_card', arguments: { orderKey: fresh('limited-2'), amount: 1 } }, { key: randomUUID() });

    expect(first.isError).toBeFalsy();
    expect(limited.isError).toBe(true);
    expect(metaOf(limited)[ERROR_META]).toEqual({ code: 'RATE_LIMITED', retryable: true, httpStatus: 429, retryAfterMs: expect.any(Number) });
    // One token per 100 s: the next one is tens of seconds away, not a default guess.
    expect(metaOf(limited)[ERROR_META].retryAfterMs).toBeGreaterThan(10_000);
    expect(executions.charge).toBe(1);
  });

  it('refuses bad options at registration and a bad key before sending', async () => {
    const handler = async () => ({ content: [] });
    expect(() => withIdempotency(handler, { db: fx.app, name: 'x', tenantFrom: 'tenant' as never })).toThrow(InvalidOptionsError);
    expect(() => withIdempotency(handler, { db: fx.app, name: 'x', tenantFrom: () => 't', onMissingKey: 'guess' as never })).toThrow(InvalidOptionsError);
    expect(() => withIdempotency(handler, { db: fx.app, name: 'x', tenantFrom: () => 't', contentKeyTtl: '-1m' })).toThrow(InvalidOptionsError);
    const { session, executions } = shopService();
    const client = await session('tenant-mcp');
    await expect(callToolOnce(client, { name: 'charge_card', arguments: {} }, { key: '' })).rejects.toBeInstanceOf(InvalidKeyError);
    await expect(callToolOnce(client, { name: 'charge_card', arguments: {} }, { key: 'k'.repeat(252) })).rejects.toBeInstanceOf(InvalidKeyError);
    expect(executions.charge).toBe(0);
  });
});

describe('callToolOnce backoff and cancellation (MCP)', () => {
  /**
   * A server whose `hold` tool keeps its claim (and its transaction) open until `release()`, and a
   * first call of `key` already running in it (`running`), so that `second`'s calls of the same
   * `params` and `key` meet a call in progress.
   */
  async function heldCall(label: string, toolOptions: { waitMs?: number } = {}) {
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const executions = { count: 0 };
    // One server instance per session, as a session-per-connection server has; one gate for all.
    const build = () => {
      const server = new McpServer({ name: 'hold', version: '1.0.0' });
      server.registerTool(
        'hold',
        { inputSchema: { orderKey: z.string() } },
        withIdempotency(
          async ({ orderKey }, _extra, tx) => {
            executions.count += 1;
            await sql`INSERT INTO orders (key, amount) VALUES (${orderKey}, 1)`.execute(tx);
            await held;
            return { content: [{ type: 'text', text: 'held and done' }] };
          },
          { db: fx.app, name: 'hold', tenantFrom: (extra) => extra.authInfo?.clientId, ...toolOptions },
        ),
      );
      return server;
    };
    // A failing test must not leave the held call (and its transaction) open.
    open.push(async () => release());
    const [first, second] = [await connect(build(), 'tenant-mcp-hold'), await connect(build(), 'tenant-mcp-hold')];
    const key = randomUUID();
    const params = { name: 'hold', arguments: { orderKey: fresh(label) } };
    const running = callToolOnce(first, params, { key, retries: 0 });
    await vi.waitFor(() => expect(executions.count).toBe(1));
    return { second, executions, release, key, params, running };
  }
  const lockWaiters = async () => {
    const { rows } = await fx.database.admin.query(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
    );
    return rows[0].n as number;
  };

  it("pauses before each retry by the backoff policy (at least the server's retryAfterMs), attempt numbers from 1", async () => {
    const { second, executions, release, key, params, running } = await heldCall('backoff', { waitMs: 100 });
    const backoff = vi.fn((attempt: number) => 10 * attempt);

    const result = await callToolOnce(second, params, { key, retries: 2, backoff });

    expect(backoff.mock.calls).toEqual([[1], [2]]);
    expect(result.isError).toBe(true);
    expect(metaOf(result)[ERROR_META]).toMatchObject({ code: 'IDEMPOTENCY_IN_PROGRESS', retryable: true, retryAfterMs: expect.any(Number) });
    release();
    expect((await running).isError).toBeFalsy();
    expect(executions.count).toBe(1);
  });

  it('an abort during a pause ends callToolOnce at once, without another attempt', async () => {
    const { second, executions, release, key, params, running } = await heldCall('abort', { waitMs: 100 });
    const controller = new AbortController();
    const backoff = vi.fn(() => {
      setTimeout(() => controller.abort(new Error('the agent run was cancelled')), 20);
      return 600_000;
    });

    await expect(callToolOnce(second, params, { key, retries: 3, backoff, request: { signal: controller.signal } })).rejects.toThrow(
      'the agent run was cancelled',
    );
    expect(backoff).toHaveBeenCalledTimes(1);
    release();
    await running;
    expect(executions.count).toBe(1);
  });

  it('a cancelled (timed-out) request stops waiting on the server while the first call still runs', async () => {
    const { second, executions, release, key, params, running } = await heldCall('cancel');

    // The duplicate waits on the server (default waitMs: 10 s) until the client's timeout cancels it.
    const duplicate = second.callTool({ ...params, _meta: { [IDEMPOTENCY_KEY_META]: key } }, undefined, { timeout: 1_000 });
    await vi.waitFor(async () => expect(await lockWaiters()).toBe(1), { timeout: 900, interval: 20 });
    await expect(duplicate).rejects.toMatchObject({ code: -32_001 });
    // Cancelled: its wait ends (within a slice) although the first call holds the key for longer.
    await vi.waitFor(async () => expect(await lockWaiters()).toBe(0), { timeout: 3_000, interval: 50 });
    expect(executions.count).toBe(1);
    release();
    expect((await running).isError).toBeFalsy();
  });
});
