import { sql, type Transaction } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  enqueue,
  IdempotencyInProgressError,
  IdempotencyKeyReusedError,
  InvalidKeyError,
  InvalidOptionsError,
  InvalidTenantError,
  isRecordedFailure,
  NotInTransactionError,
  ResultNotSerializableError,
  ResultTooLargeError,
  RlsBypassError,
  runIdempotent,
  StoredCallError,
  TenantMissingError,
  withTenant,
  type DedupeAuditEvent,
} from '../src/index.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { errorOf } from './support/error-of.ts';

let fx: AppFixture;
beforeAll(async () => {
  fx = await createAppFixture(34);
});
afterAll(async () => {
  await fx?.close();
});

let unique = 0;
/** A key no other test uses. */
const freshKey = (label: string) => `${label}-${++unique}-${Date.now()}`;

/** A handler that inserts one order and counts its executions. */
function orderHandler(key: string, amount = 100) {
  const handler = async (tx: Transaction<any>) => {
    handler.calls += 1;
    await sql`INSERT INTO orders (key, amount) VALUES (${key}, ${amount})`.execute(tx);
    return { orderId: `ord_${key}`, amount, at: new Date('2026-01-02T03:04:05.678Z') };
  };
  handler.calls = 0;
  return handler;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('runIdempotent: first call and replays', () => {
  it('executes once, stores the result, and replays it without running fn', async () => {
    const key = freshKey('basic');
    const handler = orderHandler(key);
    const first = await withTenant(fx.app, 'tenant-a', (tx) => runIdempotent.detailed(tx, key, handler, { tool: 'create_order' }));
    const second = await withTenant(fx.app, 'tenant-a', (tx) => runIdempotent.detailed(tx, key, handler, { tool: 'create_order' }));
    expect(handler.calls).toBe(1);
    expect(first.outcome).toBe('executed');
    expect(second.outcome).toBe('replayed');
    expect(second.value).toEqual(first.value);
    // The first call returns the JSON round-tripped value too: a Date is a string both times.
    expect(first.value.at).toBe('2026-01-02T03:04:05.678Z');
    expect(await fx.orders('tenant-a').then((rows) => rows.filter((r) => r.key === key))).toHaveLength(1);

    const [record] = await fx.rows<{ status: string; tool: string; result: unknown }>('idempotency_keys', `key = '${key}'`);
    expect(record).toMatchObject({ status: 'completed', tool: 'create_order', result: first.value });
    const audit = await fx.rows<{ kind: string; tool: string }>('dedupe_audit', `key = '${key}'`);
    expect(audit).toEqual([expect.objectContaining({ kind: 'replay', tool: 'create_order', tenant_id: 'tenant-a' })]);
  });

  it('returns deep-equal values of the same types on the first call and on replay', async () => {
    const values: unknown[] = [
      { nested: { deep: { list: [1, 'two', null, { three: 3 }] } }, when: new Date(0), flag: false },
      [1, 2.5, -0, 1e21, Number.MAX_SAFE_INTEGER, 'ünïcødé ✓ 😀'],
      null,
      0,
      42.125,
      'plain string',
      true,
      [],
      {},
      { skipped: undefined, kept: 1 },
    ];
    for (const value of values) {
      const key = freshKey('types');
      const fn = async () => value;
      const first = await withTenant(fx.app, 'tenant-a', (tx) => runIdempotent(tx, key, fn));
      const replay = await withTenant(fx.app, 'tenant-a', (tx) => runIdempotent(tx, key, fn));
      expect(replay).toStrictEqual(first);
      expect(first).toStrictEqual(JSON.parse(JSON.stringify(value)));
    }
  });

  it('returns undefined on every call when fn returns nothing', async () => {
    const key = freshKey('void');
    let calls = 0;
    const fn = async () => {
      calls += 1;
    };
    expect(await withTenant(fx.app, 't', (tx) => runIdempotent(tx, key, fn))).toBeUndefined();
    expect(await withTenant(fx.app, 't', (tx) => runIdempotent(tx, key, fn))).toBeUndefined();
    expect(calls).toBe(1);
  });

  it('runs fn once for 32 concurrent duplicates, all of which get deep-equal results', async () => {
    const key = freshKey('storm');
    const handler = orderHandler(key);
    const slow = async (tx: Transaction<any>) => {
      const result = await handler(tx);
      // Keep the first call open until a duplicate waits on it (its claim blocks on the key's
      // advisory lock): new connections take a few round trips before their first claim, which a
      // busy machine can stretch past any fixed sleep.
      await expect
        .poll(
          async () =>
            (
              await fx.database.admin.query(
                "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
              )
            ).rows[0].n,
          { timeout: 10_000, interval: 5 },
        )
        .toBeGreaterThan(0);
      return result;
    };
    // All 32 may wait (the pool has 34 connections); by default at most 4 of a pool's
    // connections wait, and the rest answer IDEMPOTENCY_IN_PROGRESS at once (bounded-waits.test.ts).
    const results = await Promise.all(
      Array.from({ length: 32 }, () => withTenant(fx.app, 'tenant-a', (tx) => runIdempotent.detailed(tx, key, slow, { maxWaiting: 32 }))),
    );
    expect(handler.calls).toBe(1);
    expect((await fx.orders('tenant-a')).filter((r) => r.key === key)).toHaveLength(1);
    expect(results.filter((r) => r.outcome === 'executed')).toHaveLength(1);
    for (const result of results) expect(result.value).toStrictEqual(results[0]!.value);
    expect(results.some((r) => r.waited)).toBe(true);
    const waited = await fx.rows('dedupe_audit', `key = '${key}' AND kind = 'waited'`);
    expect(waited.length).toBeGreaterThan(0);
  });

  it('executes a waiting duplicate when the first call rolls back', async () => {
    const key = freshKey('rollback-wait');
    const handler = orderHandler(key);
    const first = withTenant(fx.app, 'tenant-a', (tx) =>
      runIdempotent(tx, key, async (t) => {
        await handler(t);
        await sleep(200);
        throw new Error('first attempt fails');
      }),
    );
    await sleep(50);
    const second = withTenant(fx.app, 'tenant-a', (tx) => runIdempotent.detailed(tx, key, handler));
    await expect(first).rejects.toThrow('first attempt fails');
    const outcome = await second;
    // It waited for the first call, which left nothing behind, then executed; the wait is
    // reported too (the advisory lock of once.claim_key says it happened).
    expect(outcome).toMatchObject({ outcome: 'executed', waited: true });
    expect(await fx.rows('dedupe_audit', `key = '${key}' AND kind = 'waited'`)).toHaveLength(1);
    expect(handler.calls).toBe(2);
    expect((await fx.orders('tenant-a')).filter((r) => r.key === key)).toHaveLength(1);
  });

  it('gives up waiting after waitMs with a retryable IdempotencyInProgressError', async () => {
    const key = freshKey('in-progress');
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const first = withTenant(fx.app, 'tenant-a', (tx) =>
      runIdempotent(tx, key, async () => {
        await held;
        return 'first';
      }),
    );
    await sleep(50);
    const error = await errorOf(withTenant(fx.app, 'tenant-a', (tx) => runIdempotent(tx, key, async () => 'second', { waitMs: 200 })));
    expect(error).toBeInstanceOf(IdempotencyInProgressError);
    expect(error).toMatchObject({ code: 'IDEMPOTENCY_IN_PROGRESS', retryable: true, httpStatus: 409 });
    expect(error.retryAfterMs).toBeGreaterThan(0);
    release();
    expect(await first).toBe('first');
    // The retry the error invites replays the first call's result.
    expect(await withTenant(fx.app, 'tenant-a', (tx) => runIdempotent(tx, key, async () => 'second'))).toBe('first');
  });

  it('calls the logger hook for replays and waits', async () => {
    const key = freshKey('logger');
    const events: DedupeAuditEvent[] = [];
    const logger = (event: DedupeAuditEvent) => events.push(event);
    await withTenant(fx.app, 'tenant-a', (tx) => runIdempotent(tx, key, async () => 1, { logger, tool: 'send_email' }));
    expect(events).toEqual([]);
    await withTenant(fx.app, 'tenant-a', (tx) => runIdempotent(tx, key, async () => 1, { logger, tool: 'send_email' }));
    expect(events).toEqual([expect.objectContaining({ kind: 'replay', tenantId: 'tenant-a', key, tool: 'send_email' })]);
  });
});

describe('runIdempotent: tenants', () => {
  it("lets tenant B run its own fn with tenant A's key, and keeps their records apart", async () => {
    const key = freshKey('shared-key');
    const a = orderHandler(key, 1);
    const b = orderHandler(key, 2);
    const resultA = await withTenant(fx.app, 'tenant-a', (tx) => runIdempotent(tx, key, a));
    const resultB = await withTenant(fx.app, 'tenant-b', (tx) => runIdempotent(tx, key, b));
    expect(a.calls).toBe(1);
    expect(b.calls).toBe(1);
    expect(resultA.amount).toBe(1);
    expect(resultB.amount).toBe(2);

    // B can neither read nor alter A's record.
    const seen = await withTenant(fx.app, 'tenant-b', async (tx) => {
      const rows = await sql<{ tenant_id: string; result: any }>`SELECT tenant_id, result FROM once.idempotency_keys WHERE key = ${key}`.execute(tx);
      const updated = await sql`UPDATE once.idempotency_keys SET result = '"stolen"' WHERE key = ${key} AND tenant_id = 'tenant-a'`.execute(tx);
      const deleted = await sql`DELETE FROM once.idempotency_keys WHERE key = ${key} AND tenant_id = 'tenant-a'`.execute(tx);
      return { rows: rows.rows, updated: updated.numAffectedRows, deleted: deleted.numAffectedRows };
    });
    expect(seen.rows).toEqual([{ tenant_id: 'tenant-b', result: expect.objectContaining({ amount: 2 }) }]);
    expect(seen.updated).toBe(0n);
    expect(seen.deleted).toBe(0n);
    expect(await withTenant(fx.app, 'tenant-a', (tx) => runIdempotent(tx, key, a))).toEqual(resultA);
  });

  it('validates tenant ids before opening a transaction', async () => {
    // Lone surrogates too: the driver would turn 'ten\ud800' and 'ten\udc00' into the same text.
    for (const bad of ['', 'x'.repeat(129), 'tab\there', 'nul\u0000', 'ten\ud800', 'ten\udc00', 42 as never]) {
      const error = await errorOf(withTenant(fx.app, bad, async () => 'ran'));
      expect(error).toBeInstanceOf(InvalidTenantError);
      expect(error.code).toBe('INVALID_TENANT');
    }
    expect(await withTenant(fx.app, 'x'.repeat(128), async () => 'ok')).toBe('ok');
  });

  it('refuses a superuser connection by default, and allows it when asked', async () => {
    const superuser = fx.database.kysely(fx.database.adminUrl, { max: 2 });
    const error = await errorOf(withTenant(superuser, 'tenant-a', async () => 'ran'));
    expect(error).toBeInstanceOf(RlsBypassError);
    expect(error.code).toBe('RLS_BYPASS');
    // Cached per pool: refused again, now before any transaction.
    expect(await errorOf(withTenant(superuser, 'tenant-a', async () => 'ran'))).toBeInstanceOf(RlsBypassError);
    expect(await withTenant(superuser, 'tenant-a', async () => 'ran', { allowRlsBypass: true })).toBe('ran');
  });

  it('fails with TenantMissingError, writing nothing, in a transaction without a tenant', async () => {
    const key = freshKey('no-tenant');
    const handler = orderHandler(key);
    const error = await errorOf(fx.app.transaction().execute((tx) => runIdempotent(tx, key, handler)));
    expect(error).toBeInstanceOf(TenantMissingError);
    expect(error.code).toBe('TENANT_MISSING');
    expect(handler.calls).toBe(0);
    expect(await fx.rows('idempotency_keys', `key = '${key}'`)).toEqual([]);
  });

  it('refuses something that is not a transaction', async () => {
    const error = await errorOf(runIdempotent(fx.app as never, freshKey('no-tx'), async () => 1));
    expect(error).toBeInstanceOf(NotInTransactionError);
  });
});

describe('runIdempotent: requests and keys', () => {
  it('throws IdempotencyKeyReusedError (422) for the same key with a different request, running nothing', async () => {
    const key = freshKey('reuse');
    const handler = orderHandler(key);
    await withTenant(fx.app, 'tenant-a', (tx) => runIdempotent(tx, key, handler, { request: { amount: 100, currency: 'EUR' } }));
    const error = await errorOf(withTenant(fx.app, 'tenant-a', (tx) => runIdempotent(tx, key, handler, { request: { amount: 999, currency: 'EUR' } })));
    expect(error).toBeInstanceOf(IdempotencyKeyReusedError);
    expect(error).toMatchObject({ code: 'IDEMPOTENCY_KEY_REUSED', httpStatus: 422, retryable: false });
    expect(handler.calls).toBe(1);
    const audit = await fx.rows<{ kind: string }>('dedupe_audit', `key = '${key}'`);
    expect(audit.map((row) => row.kind)).toEqual(['key_reused']);
  });

  it('replays a request whose object keys come in another order', async () => {
    const key = freshKey('reorder');
    const handler = orderHandler(key);
    const first = await withTenant(fx.app, 'tenant-a', (tx) =>
      runIdempotent(tx, key, handler, { request: { to: 'a@example.com', body: { text: 'hi', lang: 'en' }, cc: [1, 2] } }),
    );
    const replay = await withTenant(fx.app, 'tenant-a', (tx) =>
      runIdempotent(tx, key, handler, { request: { cc: [1, 2], body: { lang: 'en', text: 'hi' }, to: 'a@example.com' } }),
    );
    expect(replay).toStrictEqual(first);
    expect(handler.calls).toBe(1);
  });

  it('rejects bad keys with a coded error before writing anything', async () => {
    for (const bad of ['', 'k'.repeat(256), 'line\nbreak', 'nul\u0000', 'del\u007f', 'k\ud800', 'k\udc00x', 7 as never]) {
      const handler = orderHandler('bad');
      const error = await errorOf(withTenant(fx.app, 'tenant-bad-keys', (tx) => runIdempotent(tx, bad, handler)));
      expect(error).toBeInstanceOf(InvalidKeyError);
      expect(error.code).toBe('INVALID_KEY');
      expect(handler.calls).toBe(0);
    }
    expect(await fx.rows('idempotency_keys', "tenant_id = 'tenant-bad-keys'")).toEqual([]);
    expect(await withTenant(fx.app, 'tenant-bad-keys', (tx) => runIdempotent(tx, 'k'.repeat(255), async () => 'ok'))).toBe('ok');
  });

  it('rejects bad options with the zod issues, before writing anything', async () => {
    const key = freshKey('bad-options');
    for (const options of [{ ttl: -5 }, { ttl: 'soon' }, { waitMs: 1.5 }, { maxResultBytes: 0 }, { unknown: true }, { version: 3 }]) {
      const error = await errorOf(withTenant(fx.app, 'tenant-a', (tx) => runIdempotent(tx, key, async () => 1, options as never)));
      expect(error).toBeInstanceOf(InvalidOptionsError);
      expect(error.issues.length).toBeGreaterThan(0);
    }
    expect(await fx.rows('idempotency_keys', `key = '${key}'`)).toEqual([]);
  });

  it('re-executes under a new version, and after the ttl has passed', async () => {
    const key = freshKey('version');
    const handler = orderHandler(key);
    await withTenant(fx.app, 'tenant-a', (tx) => runIdempotent(tx, key, handler, { version: 'v1' }));
    await withTenant(fx.app, 'tenant-a', (tx) => runIdempotent(tx, key, handler, { version: 'v1' }));
    expect(handler.calls).toBe(1);
    await withTenant(fx.app, 'tenant-a', (tx) => runIdempotent(tx, key, handler, { version: 'v2' }));
    expect(handler.calls).toBe(2);

    const expiring = freshKey('ttl');
    const second = orderHandler(expiring);
    await withTenant(fx.app, 'tenant-a', (tx) => runIdempotent(tx, expiring, second, { ttl: '200ms' }));
    await withTenant(fx.app, 'tenant-a', (tx) => runIdempotent(tx, expiring, second, { ttl: '200ms' }));
    expect(second.calls).toBe(1);
    await sleep(300);
    const again = await withTenant(fx.app, 'tenant-a', (tx) => runIdempotent.detailed(tx, expiring, second, { ttl: 200 }));
    expect(again.outcome).toBe('executed');
    expect(second.calls).toBe(2);
    // One record, taken over in place.
    expect(await fx.rows('idempotency_keys', `key = '${expiring}'`)).toHaveLength(1);
  });
});

describe('runIdempotent: failures leave nothing behind', () => {
  it('a throwing fn leaves no claim, no business row and no outbox event; a retry executes', async () => {
    const key = freshKey('throws');
    let attempt = 0;
    const fn = async (tx: Transaction<any>) => {
      attempt += 1;
      await sql`INSERT INTO orders (key, amount) VALUES (${key}, 1)`.execute(tx);
      await enqueue(tx, { topic: 'orders.created', payload: { key } });
      if (attempt === 1) throw new Error('card declined by a flaky network');
      return 'ok';
    };
    await expect(withTenant(fx.app, 'tenant-a', (tx) => runIdempotent(tx, key, fn))).rejects.toThrow('flaky network');
    expect(await fx.rows('idempotency_keys', `key = '${key}'`)).toEqual([]);
    expect((await fx.orders()).filter((r) => r.key === key)).toEqual([]);
    expect(await fx.rows('outbox_events', `payload->>'key' = '${key}'`)).toEqual([]);

    expect(await withTenant(fx.app, 'tenant-a', (tx) => runIdempotent(tx, key, fn))).toBe('ok');
    expect((await fx.orders()).filter((r) => r.key === key)).toHaveLength(1);
    expect(await fx.rows('outbox_events', `payload->>'key' = '${key}'`)).toHaveLength(1);
  });

  it('a caller that catches the error and commits still persists nothing', async () => {
    const key = freshKey('swallowed');
    const outcome = await fx.app
      .transaction()
      .execute(async (tx) => {
        await sql`SELECT set_config('once.tenant_id', 'tenant-a', true)`.execute(tx);
        try {
          await runIdempotent(tx, key, async (t) => {
            await sql`INSERT INTO orders (key, amount) VALUES (${key}, 1)`.execute(t);
            throw new Error('boom');
          });
        } catch {
          return 'swallowed';
        }
        return 'not reached';
      })
      .catch((error: unknown) => error);
    // COMMIT of the aborted transaction rolled back; either way nothing is stored.
    expect(outcome === 'swallowed' || outcome instanceof Error).toBe(true);
    expect(await fx.rows('idempotency_keys', `key = '${key}'`)).toEqual([]);
    expect((await fx.orders()).filter((r) => r.key === key)).toEqual([]);
  });

  it('stores a thrown non-object chosen by storeError, and keeps it stored', async () => {
    const key = freshKey('thrown-string');
    const thrown = await errorOf(
      withTenant(fx.app, 'tenant-a', (tx) =>
        runIdempotent(
          tx,
          key,
          async () => {
            throw 'card declined';
          },
          { storeError: () => true },
        ),
      ),
    );
    expect(thrown).toBe('card declined');
    const [record] = await fx.rows<{ status: string }>('idempotency_keys', `key = '${key}'`);
    expect(record?.status).toBe('failed');
    const replayed = await errorOf(withTenant(fx.app, 'tenant-a', (tx) => runIdempotent(tx, key, async () => 'ran again')));
    expect(replayed).toBeInstanceOf(StoredCallError);
    expect(replayed).toMatchObject({ message: 'card declined' });
  });

  it('replays the bytes of the first answer: object keys keep their order, numbers their spelling', async () => {
    const key = freshKey('bytes');
    const value = { zeta: 1, alpha: { z: [3, 2, 1], a: 'x' }, big: 1e21, longer_key: true, b: null };
    const first = await withTenant(fx.app, 'tenant-a', (tx) => runIdempotent(tx, key, async () => value));
    const replay = await withTenant(fx.app, 'tenant-a', (tx) => runIdempotent(tx, key, async () => null));
    expect(JSON.stringify(first)).toBe(JSON.stringify(value));
    expect(JSON.stringify(replay)).toBe(JSON.stringify(value));
    expect(replay).toStrictEqual(first);
  });

  it('stores a failure chosen by storeError and re-throws an equivalent error on every replay', async () => {
    const key = freshKey('stored-failure');
    class CardDeclinedError extends Error {
      code = 'card_declined';
      httpStatus = 402;
    }
    let calls = 0;
    const fn = async (tx: Transaction<any>) => {
      calls += 1;
      await sql`INSERT INTO orders (key, amount) VALUES (${key}, 1)`.execute(tx);
      const error = new CardDeclinedError('Your card was declined.');
      error.name = 'CardDeclinedError';
      throw error;
    };
    const storeError = (error: unknown) => error instanceof CardDeclinedError;
    const first = await errorOf(withTenant(fx.app, 'tenant-a', (tx) => runIdempotent(tx, key, fn, { storeError })));
    expect(first).toBeInstanceOf(CardDeclinedError);
    expect(isRecordedFailure(first)).toBe(true);
    for (let i = 0; i < 2; i += 1) {
      const replay = await errorOf(withTenant(fx.app, 'tenant-a', (tx) => runIdempotent(tx, key, fn, { storeError })));
      expect(replay).toBeInstanceOf(StoredCallError);
      expect(replay).toMatchObject({ name: 'CardDeclinedError', message: 'Your card was declined.', code: 'card_declined', httpStatus: 402 });
    }
    expect(calls).toBe(1);
    const [record] = await fx.rows<{ status: string }>('idempotency_keys', `key = '${key}'`);
    expect(record?.status).toBe('failed');
    // fn's own writes were undone: a failure stores the error, not half the work.
    expect((await fx.orders()).filter((r) => r.key === key)).toEqual([]);
  });

  it('refuses results JSON cannot hold, writing nothing', async () => {
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = cyclic;
    const bad: Array<[string, unknown]> = [
      ['bigint', { amount: 10n }],
      ['cycle', cyclic],
      ['function', { callback: () => 1 }],
      ['symbol', { tag: Symbol('x') }],
      ['map', new Map([[1, 2]])],
      ['nul', { text: 'a\u0000b' }],
      ['surrogate', { text: '\ud800' }],
    ];
    for (const [label, value] of bad) {
      const key = freshKey(`bad-result-${label}`);
      const error = await errorOf(
        withTenant(fx.app, 'tenant-a', (tx) =>
          runIdempotent(tx, key, async (t) => {
            await sql`INSERT INTO orders (key, amount) VALUES (${key}, 1)`.execute(t);
            return value;
          }),
        ),
      );
      expect(error, label).toBeInstanceOf(ResultNotSerializableError);
      expect(error.code).toBe('RESULT_NOT_SERIALIZABLE');
      expect(await fx.rows('idempotency_keys', `key = '${key}'`)).toEqual([]);
      expect((await fx.orders()).filter((r) => r.key === key)).toEqual([]);
    }
  });

  it('refuses results over maxResultBytes, writing nothing', async () => {
    const key = freshKey('too-large');
    const error = await errorOf(withTenant(fx.app, 'tenant-a', (tx) => runIdempotent(tx, key, async () => 'x'.repeat(2_000), { maxResultBytes: 1_000 })));
    expect(error).toBeInstanceOf(ResultTooLargeError);
    expect(error).toMatchObject({ code: 'RESULT_TOO_LARGE', maxBytes: 1_000 });
    expect(await fx.rows('idempotency_keys', `key = '${key}'`)).toEqual([]);
    const big = freshKey('default-limit');
    expect(await errorOf(withTenant(fx.app, 'tenant-a', (tx) => runIdempotent(tx, big, async () => 'x'.repeat(1_048_577))))).toBeInstanceOf(
      ResultTooLargeError,
    );
  });
});
