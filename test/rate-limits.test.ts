/**
 * Per-tenant rate limits on fresh executions: GCRA in Postgres, charged with the result in the
 * caller's transaction. Over the limit: RateLimitedError (429, retryable), fn does not run, an
 * audit row says so. Other tenants are unaffected; replays and rolled-back calls cost nothing.
 */
import { sql, type Transaction } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listRateLimits, RateLimitedError, removeRateLimit, runIdempotent, setRateLimit, withTenant } from '../src/index.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';

let fx: AppFixture;
beforeAll(async () => {
  fx = await createAppFixture(24);
});
afterAll(async () => {
  await fx?.close();
});

let n = 0;
function counted(key: string) {
  const handler = async (tx: Transaction<any>) => {
    handler.calls += 1;
    await sql`INSERT INTO orders (key, amount) VALUES (${key}, 1)`.execute(tx);
    return key;
  };
  handler.calls = 0;
  return handler;
}
const call = (tenant: string, key = `k-${++n}`, options: { tool?: string } = {}) =>
  withTenant(fx.app, tenant, (tx) => runIdempotent.detailed(tx, key, counted(key), options));

async function outcomes(promises: Promise<unknown>[]) {
  const settled = await Promise.allSettled(promises);
  return {
    ok: settled.filter((s) => s.status === 'fulfilled').length,
    limited: settled.filter((s) => s.status === 'rejected' && s.reason instanceof RateLimitedError).length,
    other: settled.filter((s) => s.status === 'rejected' && !(s.reason instanceof RateLimitedError)).map((s) => (s as PromiseRejectedResult).reason),
  };
}

describe('rate limits', () => {
  it('stops tenant A past its burst with RateLimitedError, fn not run, while tenant B is unaffected', async () => {
    await setRateLimit(fx.database.adminUrl, { tenant: 'limited-a', perSecond: 0.1, burst: 3 });
    for (let i = 0; i < 3; i += 1) expect((await call('limited-a')).outcome).toBe('executed');
    const key = `over-${++n}`;
    const handler = counted(key);
    const error = await withTenant(fx.app, 'limited-a', (tx) => runIdempotent(tx, key, handler)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RateLimitedError);
    expect(error).toMatchObject({ code: 'RATE_LIMITED', httpStatus: 429, retryable: true });
    expect((error as RateLimitedError).retryAfterMs).toBeGreaterThan(5_000); // one token per 10 s
    expect(handler.calls).toBe(0);
    expect(await fx.rows('idempotency_keys', `key = '${key}'`)).toEqual([]);
    expect(await fx.rows('dedupe_audit', `key = '${key}' AND kind = 'rate_limited'`)).toHaveLength(1);

    // Tenant B has no limit of its own and there is no default: unlimited.
    const b = await outcomes(Array.from({ length: 20 }, () => call('unlimited-b')));
    expect(b).toEqual({ ok: 20, limited: 0, other: [] });
  });

  it('enforces the burst exactly under concurrency', async () => {
    await setRateLimit(fx.database.adminUrl, { tenant: 'limited-c', perSecond: 0.01, burst: 4 });
    const result = await outcomes(Array.from({ length: 16 }, () => call('limited-c')));
    expect(result).toEqual({ ok: 4, limited: 12, other: [] });
    expect((await fx.orders('limited-c')).length).toBe(4);
  });

  it('does not charge replays or rolled-back calls', async () => {
    await setRateLimit(fx.database.adminUrl, { tenant: 'limited-d', perSecond: 0.01, burst: 2 });
    // Two calls that fail and roll back consume nothing.
    for (let i = 0; i < 2; i += 1) {
      await expect(
        withTenant(fx.app, 'limited-d', (tx) =>
          runIdempotent(tx, `fails-${i}`, async () => {
            throw new Error('downstream said no');
          }),
        ),
      ).rejects.toThrow('downstream said no');
    }
    const first = await call('limited-d', 'replayed-key');
    await call('limited-d');
    // The bucket is empty now, yet replays of an executed key keep working.
    for (let i = 0; i < 5; i += 1) expect(await call('limited-d', 'replayed-key')).toMatchObject({ outcome: 'replayed', value: first.value });
    await expect(call('limited-d')).rejects.toBeInstanceOf(RateLimitedError);
  });

  it('applies the default to tenants without a limit, and the most specific limit wins', async () => {
    await setRateLimit(fx.database.adminUrl, { tenant: '*', perSecond: 0.01, burst: 1 });
    await setRateLimit(fx.database.adminUrl, { tenant: 'limited-e', tool: 'send_email', perSecond: 0.01, burst: 2 });
    try {
      await call('fresh-tenant');
      await expect(call('fresh-tenant')).rejects.toBeInstanceOf(RateLimitedError);
      // limited-e: its send_email limit (burst 2) applies to send_email; other tools fall to the default.
      await call('limited-e', undefined, { tool: 'send_email' });
      await call('limited-e', undefined, { tool: 'send_email' });
      await expect(call('limited-e', undefined, { tool: 'send_email' })).rejects.toBeInstanceOf(RateLimitedError);
      await call('limited-e', undefined, { tool: 'charge_card' });
      await expect(call('limited-e', undefined, { tool: 'charge_card' })).rejects.toBeInstanceOf(RateLimitedError);
    } finally {
      expect(await removeRateLimit(fx.database.adminUrl, { tenant: '*' })).toBe(true);
    }
    await call('fresh-tenant'); // unlimited again
  });

  it('refills at the configured rate', async () => {
    await setRateLimit(fx.database.adminUrl, { tenant: 'limited-f', perSecond: 20, burst: 1 });
    await call('limited-f');
    const error = (await call('limited-f').catch((e: unknown) => e)) as RateLimitedError;
    expect(error).toBeInstanceOf(RateLimitedError);
    await new Promise((resolve) => setTimeout(resolve, error.retryAfterMs + 20));
    expect((await call('limited-f')).outcome).toBe('executed');
  });

  it('lists, updates and removes limits; rejects bad ones', async () => {
    await setRateLimit(fx.database.adminUrl, { tenant: 'listed', perSecond: 5, burst: 10 });
    await setRateLimit(fx.database.adminUrl, { tenant: 'listed', perSecond: 7, burst: 10 });
    const listed = (await listRateLimits(fx.database.adminUrl)).find((l) => l.tenant === 'listed');
    expect(listed).toMatchObject({ tool: '', perSecond: 7, burst: 10 });
    expect(await removeRateLimit(fx.database.adminUrl, { tenant: 'listed' })).toBe(true);
    expect(await removeRateLimit(fx.database.adminUrl, { tenant: 'listed' })).toBe(false);
    for (const bad of [
      { tenant: 't', perSecond: 0, burst: 1 },
      { tenant: 't', perSecond: 1, burst: 0 },
      { tenant: '', perSecond: 1, burst: 1 },
    ]) {
      await expect(setRateLimit(fx.database.adminUrl, bad)).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
    }
  });

  it('removing a limit removes its buckets: a limit set again starts full', async () => {
    const bucketRows = async (tenant: string) => (await fx.database.admin.query('SELECT tool FROM once.rate_limit_state WHERE tenant_id = $1', [tenant])).rows;
    await setRateLimit(fx.database.adminUrl, { tenant: 'bucket-t', perSecond: 0.01, burst: 1 });
    await call('bucket-t');
    await expect(call('bucket-t')).rejects.toBeInstanceOf(RateLimitedError);
    expect(await removeRateLimit(fx.database.adminUrl, { tenant: 'bucket-t' })).toBe(true);
    expect(await bucketRows('bucket-t')).toEqual([]);
    await setRateLimit(fx.database.adminUrl, { tenant: 'bucket-t', perSecond: 0.01, burst: 1 });
    expect((await call('bucket-t')).outcome).toBe('executed');
    expect(await removeRateLimit(fx.database.adminUrl, { tenant: 'bucket-t' })).toBe(true);

    // The default's buckets are those of tenants without a limit of their own.
    await setRateLimit(fx.database.adminUrl, { tenant: '*', perSecond: 0.01, burst: 5 });
    await setRateLimit(fx.database.adminUrl, { tenant: 'bucket-own', perSecond: 0.01, burst: 5 });
    await call('bucket-default');
    await call('bucket-own');
    expect(await removeRateLimit(fx.database.adminUrl, { tenant: '*' })).toBe(true);
    expect(await bucketRows('bucket-default')).toEqual([]);
    expect(await bucketRows('bucket-own')).toEqual([{ tool: '' }]);
    expect(await removeRateLimit(fx.database.adminUrl, { tenant: 'bucket-own' })).toBe(true);
  });

  it("the application role cannot read other tenants' limits or change any", async () => {
    await setRateLimit(fx.database.adminUrl, { tenant: 'secret-tenant', perSecond: 1, burst: 1 });
    const seen = await withTenant(fx.app, 'limited-a', (tx) => sql<{ tenant_id: string }>`SELECT tenant_id FROM once.rate_limits`.execute(tx));
    expect(seen.rows.map((r) => r.tenant_id)).not.toContain('secret-tenant');
    await expect(withTenant(fx.app, 'limited-a', (tx) => sql`UPDATE once.rate_limits SET burst = 1000`.execute(tx))).rejects.toMatchObject({ code: '42501' });
  });
});
