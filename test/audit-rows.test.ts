/**
 * Every audit row pg-once writes, exactly (kind, tool, detail), and every rate-limit charge, from
 * each place that writes one: once.claim_key (replay, wait, reused key, a claim over the limit,
 * an execution after a wait), withTenant after a refused duplicate, a two-phase call that lost the
 * race for the last token, keys.fromModel, and the charge with an in-transaction result. They are
 * written by once.record_audit and once.charge_rate_limit (sql/0015); the rows must be the ones
 * the statements they replaced wrote.
 */
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  fingerprint,
  IdempotencyInProgressError,
  keys,
  RateLimitedError,
  runIdempotent,
  runIdempotentExternal,
  setRateLimit,
  withTenant,
} from '../src/index.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { errorOf } from './support/error-of.ts';

let fx: AppFixture;
beforeAll(async () => {
  fx = await createAppFixture(8);
});
afterAll(async () => {
  await fx?.close();
});

interface AuditRow {
  tenant_id: string;
  key: string;
  tool: string | null;
  kind: string;
  detail: Record<string, unknown>;
}

async function auditOf(key: string): Promise<AuditRow[]> {
  const { rows } = await fx.database.admin.query<AuditRow>('SELECT tenant_id, key, tool, kind, detail FROM once.dedupe_audit WHERE key = $1 ORDER BY id', [
    key,
  ]);
  return rows;
}

/** Until another connection of the test's database waits on a lock (a row, or the key's advisory lock). */
async function untilSomeoneWaitsOnALock(): Promise<void> {
  for (;;) {
    const { rows } = await fx.database.admin.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
    );
    if (rows[0]!.n > 0) return;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

function call<T>(tenant: string, key: string, fn: () => Promise<T>, options: Parameters<typeof runIdempotent>[3] = {}) {
  return withTenant(fx.app, tenant, (tx) => runIdempotent.detailed(tx, key, fn, options));
}

/** A first call that holds its claim until `release` is called. */
function heldCall(tenant: string, key: string, outcome: 'commit' | 'fail', options: Parameters<typeof runIdempotent>[3] = {}) {
  let release!: () => void;
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  let claimed!: () => void;
  const running = new Promise<void>((resolve) => {
    claimed = resolve;
  });
  const done = call(
    tenant,
    key,
    async () => {
      claimed();
      await released;
      if (outcome === 'fail') throw new Error('first call failed');
      return 'first';
    },
    options,
  ).catch((error: unknown) => error);
  return { running, release, done };
}

/** The waited_ms of a row, which depends on timing: checked as a whole number, then left out. */
function withoutWait(row: AuditRow): AuditRow {
  const { waited_ms: waitedMs, ...detail } = row.detail;
  expect(Number.isInteger(waitedMs) && (waitedMs as number) >= 0).toBe(true);
  return { ...row, detail };
}

describe('audit rows', () => {
  it('a replay: one row, nothing for the fresh call', async () => {
    await call('audit-t', 'replayed', async () => 1, { tool: 'tool_a', version: 'v1' });
    expect(await auditOf('replayed')).toEqual([]);
    await call('audit-t', 'replayed', async () => 2, { tool: 'tool_a', version: 'v1' });
    const rows = await auditOf('replayed');
    expect(rows.map(withoutWait)).toEqual([
      { tenant_id: 'audit-t', key: 'replayed', tool: 'tool_a', kind: 'replay', detail: { version: 'v1', status: 'completed', outcome: 'replayed' } },
    ]);
  });

  it('a replay without a tool names the stored call’s tool', async () => {
    await call('audit-t', 'tool-of-record', async () => 1, { tool: 'stored_tool' });
    await call('audit-t', 'tool-of-record', async () => 2);
    expect((await auditOf('tool-of-record')).map((row) => [row.kind, row.tool])).toEqual([['replay', 'stored_tool']]);
  });

  it('a reused key: both fingerprints', async () => {
    await call('audit-t', 'reused', async () => 1, { request: { a: 1 }, tool: 'tool_r' });
    const error = await errorOf(call('audit-t', 'reused', async () => 2, { request: { a: 2 } }));
    expect(error.code).toBe('IDEMPOTENCY_KEY_REUSED');
    expect(await auditOf('reused')).toEqual([
      {
        tenant_id: 'audit-t',
        key: 'reused',
        tool: 'tool_r',
        kind: 'key_reused',
        detail: { version: '', stored_fingerprint: fingerprint({ a: 1 }).toString('hex'), request_fingerprint: fingerprint({ a: 2 }).toString('hex') },
      },
    ]);
  });

  it('a duplicate that waited and replayed; one that waited and executed after the first rolled back', async () => {
    const first = heldCall('audit-w', 'waited-replay', 'commit');
    await first.running;
    const duplicate = call('audit-w', 'waited-replay', async () => 'second', { tool: 'tool_w' });
    await untilSomeoneWaitsOnALock();
    first.release();
    expect(await duplicate).toMatchObject({ outcome: 'replayed', waited: true, value: 'first' });
    expect((await auditOf('waited-replay')).map(withoutWait)).toEqual([
      { tenant_id: 'audit-w', key: 'waited-replay', tool: 'tool_w', kind: 'waited', detail: { version: '', status: 'completed', outcome: 'replayed' } },
    ]);

    const failing = heldCall('audit-w', 'waited-execute', 'fail');
    await failing.running;
    const taker = call('audit-w', 'waited-execute', async () => 'second', { tool: 'tool_w' });
    await untilSomeoneWaitsOnALock();
    failing.release();
    expect(await taker).toMatchObject({ outcome: 'executed', waited: true, value: 'second' });
    expect((await auditOf('waited-execute')).map(withoutWait)).toEqual([
      { tenant_id: 'audit-w', key: 'waited-execute', tool: 'tool_w', kind: 'waited', detail: { version: '', outcome: 'executed' } },
    ]);
  });

  it('a duplicate refused at once (IDEMPOTENCY_IN_PROGRESS): a row of its own after the rollback', async () => {
    const first = heldCall('audit-p', 'refused', 'commit', { version: 'v2' });
    await first.running;
    const duplicate = call('audit-p', 'refused', async () => 'second', { tool: 'tool_p', version: 'v2', waitMs: 0 }).catch((error: unknown) => error);
    const error = await duplicate;
    first.release();
    await first.done;
    expect(error).toBeInstanceOf(IdempotencyInProgressError);
    expect(await auditOf('refused')).toEqual([
      { tenant_id: 'audit-p', key: 'refused', tool: 'tool_p', kind: 'in_progress', detail: { version: 'v2', retry_after_ms: 100 } },
    ]);
  });

  it('a key the model wrote, refused: the fallback, under the transaction’s tenant', async () => {
    const key = await withTenant(fx.app, 'audit-m', (tx) => keys.fromModel('abc', { fallback: 'model-fallback', tx, tool: 'tool_m' }));
    expect(key).toBe('model-fallback');
    const rows = await auditOf('model-fallback');
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      tenant_id: 'audit-m',
      tool: 'tool_m',
      kind: 'model_key_rejected',
      detail: { candidate: 'abc', fallback: 'model-fallback' },
    });
    expect(Object.keys(rows[0]!.detail).sort()).toEqual(['candidate', 'fallback', 'reason']);
  });
});

describe('rate-limit charges and their rows', () => {
  /** The bucket's theoretical arrival time, in epoch milliseconds (read as superuser). */
  async function tatOf(tenant: string, tool: string): Promise<number | undefined> {
    const { rows } = await fx.database.admin.query<{ tat: number }>(
      'SELECT extract(epoch FROM tat)::float8 * 1000 AS tat FROM once.rate_limit_state WHERE tenant_id = $1 AND tool = $2',
      [tenant, tool],
    );
    return rows[0]?.tat;
  }

  /**
   * Makes the bucket full behind the claim's back: the claim's check (no lock) still sees it
   * empty, and the charge, blocked on this transaction's row lock, finds it full once it commits.
   */
  async function fillWhileCharging(tenant: string, race: () => Promise<unknown>): Promise<unknown> {
    await fx.database.admin.query(`INSERT INTO once.rate_limit_state (tenant_id, tool, tat) VALUES ($1, '', now() - interval '1 hour')`, [tenant]);
    const filler: pg.PoolClient = await fx.database.admin.connect();
    try {
      await filler.query('BEGIN');
      await filler.query(`UPDATE once.rate_limit_state SET tat = now() + interval '1 hour' WHERE tenant_id = $1`, [tenant]);
      const raced = race().catch((error: unknown) => error);
      await untilSomeoneWaitsOnALock();
      await filler.query('COMMIT');
      return await raced;
    } finally {
      filler.release();
    }
  }

  it('a claim over the limit: its row, and nothing charged', async () => {
    await setRateLimit(fx.database.adminUrl, { tenant: 'audit-l', perSecond: 0.01, burst: 1 });
    await call('audit-l', 'limit-1', async () => 1, { tool: 'tool_l' });
    const charged = await tatOf('audit-l', '');
    expect(charged).toBeGreaterThan(Date.now());
    const error = await errorOf(call('audit-l', 'limit-2', async () => 2, { tool: 'tool_l', version: 'v3' }));
    expect(error).toBeInstanceOf(RateLimitedError);
    expect(await tatOf('audit-l', '')).toBe(charged);
    const rows = await auditOf('limit-2');
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      tenant_id: 'audit-l',
      tool: 'tool_l',
      kind: 'rate_limited',
      detail: { version: 'v3', limit_tool: '', per_second: 0.01, burst: 1 },
    });
    expect(rows[0]!.detail.retry_after_ms).toBe((error as RateLimitedError).retryAfterMs);
  });

  it('each charge moves the bucket one emission interval, up to the burst', async () => {
    await setRateLimit(fx.database.adminUrl, { tenant: 'audit-g', tool: 'tool_g', perSecond: 0.5, burst: 3 });
    const before = Date.now();
    for (let i = 0; i < 3; i += 1) await call('audit-g', `charge-${i}`, async () => i, { tool: 'tool_g' });
    const tat = (await tatOf('audit-g', 'tool_g'))!;
    // Three charges of 2 s each from (about) now.
    expect(tat - before).toBeGreaterThanOrEqual(6_000);
    expect(tat - Date.now()).toBeLessThanOrEqual(6_000);
    expect(await errorOf(call('audit-g', 'charge-3', async () => 3, { tool: 'tool_g' }))).toBeInstanceOf(RateLimitedError);
  });

  it('an in-transaction call that lost the race for the last token: RateLimitedError, nothing stored, nothing charged', async () => {
    await setRateLimit(fx.database.adminUrl, { tenant: 'audit-r', perSecond: 0.01, burst: 1 });
    let runs = 0;
    const error = await fillWhileCharging('audit-r', () =>
      call('audit-r', 'lost-race', async () => {
        runs += 1;
        return 'effect';
      }),
    );
    expect(error).toBeInstanceOf(RateLimitedError);
    expect(runs).toBe(1);
    expect(await fx.rows('idempotency_keys', `key = 'lost-race'`)).toEqual([]);
    // The call's transaction rolled back: no row of its own.
    expect(await auditOf('lost-race')).toEqual([]);
  });

  it('a two-phase call that lost the race for the last token: the claim undone, its row written, fn not run', async () => {
    await setRateLimit(fx.database.adminUrl, { tenant: 'audit-x', perSecond: 0.01, burst: 1 });
    let runs = 0;
    const error = await fillWhileCharging('audit-x', () =>
      runIdempotentExternal(
        fx.app,
        'audit-x',
        'lost-race-external',
        async () => {
          runs += 1;
        },
        { tool: 'tool_x', version: 'v4' },
      ),
    );
    expect(error).toBeInstanceOf(RateLimitedError);
    expect(runs).toBe(0);
    expect(await fx.rows('idempotency_keys', `key = 'lost-race-external'`)).toEqual([]);
    expect(await auditOf('lost-race-external')).toEqual([
      { tenant_id: 'audit-x', key: 'lost-race-external', tool: 'tool_x', kind: 'rate_limited', detail: { version: 'v4', limit_tool: '' } },
    ]);
  });
});
