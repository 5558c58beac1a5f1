/**
 * Sweeps remove exactly what is due (expired records, old delivered events, old audit rows) and
 * nothing else; they run as the relay role, skip rows a transaction holds, and a swept key runs
 * again. The relay schedules them on graphile-worker's cron.
 */

import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { enqueue, InvalidOptionsError, runIdempotent, startRelay, sweep, WrongRoleError, withTenant } from '../src/index.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';

let fx: AppFixture;
let relayUrl: string;

beforeAll(async () => {
  fx = await createAppFixture(4);
  relayUrl = await fx.database.createLoginRole('relay');
});
afterAll(async () => {
  await fx?.close();
});
beforeEach(async () => {
  await fx.database.admin.query('DELETE FROM once.idempotency_keys; DELETE FROM once.outbox_events; DELETE FROM once.dedupe_audit');
});

const call = (tenant: string, key: string, value: unknown = key) => withTenant(fx.app, tenant, (tx) => runIdempotent.detailed(tx, key, async () => value));

/** Ages rows as the superuser (sweeps judge by time; tests should not wait days). */
const age = (text: string, values: unknown[] = []) => fx.database.admin.query(text, values);

async function keysLeft(): Promise<string[]> {
  const { rows } = await age('SELECT key FROM once.idempotency_keys ORDER BY key');
  return rows.map((row) => row.key);
}

describe('sweep', () => {
  it('a sweep racing the takeover of an expired key does not make the call report a wait', async () => {
    await call('t', 'raced', 'old value');
    await age("UPDATE once.idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = 'raced'");
    // The sweep's batch deletes the expired record and holds it until its transaction ends.
    const sweeper = await fx.database.admin.connect();
    try {
      await sweeper.query('BEGIN');
      await sweeper.query('SELECT once.sweep_idempotency_keys(100)');
      const takeover = call('t', 'raced', 'new value');
      // The call's takeover waits on the row the sweep holds.
      for (let waiting = false; !waiting; ) {
        const { rows } = await age("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'");
        waiting = rows[0].n > 0;
      }
      await sweeper.query('COMMIT');
      // No duplicate was involved: it executed, and says it did not wait.
      expect(await takeover).toMatchObject({ value: 'new value', outcome: 'executed', waited: false });
    } finally {
      sweeper.release();
    }
    expect(await fx.rows('dedupe_audit', "key = 'raced' AND kind = 'waited'")).toEqual([]);
  });

  it('deletes exactly the expired records, old delivered events and old audit rows', async () => {
    for (const key of ['expired-1', 'expired-2', 'expired-3', 'live-1', 'live-2']) await call('t', key);
    await call('t', 'live-1'); // a replay: one audit row
    await age("UPDATE once.idempotency_keys SET expires_at = now() - interval '1 second' WHERE key LIKE 'expired-%'");
    // A committed in-progress claim (two-phase mode) past its ttl but with a live lease stays.
    await age(`INSERT INTO once.idempotency_keys (tenant_id, key, status, locked_until, expires_at)
               VALUES ('t', 'leased', 'in_progress', now() + interval '1 minute', now() - interval '1 second')`);

    await withTenant(fx.app, 't', async (tx) => {
      for (const topic of ['old.delivered', 'recent.delivered', 'old.pending', 'old.dead']) await enqueue(tx, { topic, payload: null });
    });
    await age(`UPDATE once.outbox_events SET status = 'delivered', delivered_at = now() - interval '8 days' WHERE topic = 'old.delivered';
               UPDATE once.outbox_events SET status = 'delivered', delivered_at = now() - interval '1 day' WHERE topic = 'recent.delivered';
               UPDATE once.outbox_events SET created_at = now() - interval '30 days' WHERE topic = 'old.pending';
               UPDATE once.outbox_events SET status = 'dead', created_at = now() - interval '30 days' WHERE topic = 'old.dead'`);
    await age(`INSERT INTO once.dedupe_audit (tenant_id, key, kind, at) VALUES ('t', 'ancient', 'replay', now() - interval '31 days')`);

    const result = await sweep(relayUrl, { batchSize: 2 });
    expect(result).toMatchObject({ idempotencyKeys: 3, outboxEvents: 1, dedupeAudit: 1, truncated: false });
    expect(await keysLeft()).toEqual(['leased', 'live-1', 'live-2']);
    const { rows: events } = await age('SELECT topic FROM once.outbox_events ORDER BY topic');
    expect(events.map((row) => row.topic)).toEqual(['old.dead', 'old.pending', 'recent.delivered']);
    const { rows: audit } = await age('SELECT key FROM once.dedupe_audit');
    expect(audit.map((row) => row.key)).toEqual(['live-1']);

    // Nothing is due any more: a second sweep is a no-op.
    expect(await sweep(relayUrl)).toMatchObject({ idempotencyKeys: 0, outboxEvents: 0, dedupeAudit: 0 });
  });

  it('honours the retention options and stops at maxBatches', async () => {
    await withTenant(fx.app, 't', async (tx) => {
      for (let i = 0; i < 5; i += 1) await enqueue(tx, { topic: 'x', payload: i });
    });
    await age("UPDATE once.outbox_events SET status = 'delivered', delivered_at = now() - interval '2 hours'");
    expect(await sweep(relayUrl, { outboxRetention: '3h' })).toMatchObject({ outboxEvents: 0 });
    const truncated = await sweep(relayUrl, { outboxRetention: '1h', batchSize: 2, maxBatches: 2 });
    expect(truncated).toMatchObject({ truncated: true, batches: 2 });
    expect(truncated.idempotencyKeys + truncated.outboxEvents).toBeLessThanOrEqual(4);
    expect(await sweep(relayUrl, { outboxRetention: '1h' })).toMatchObject({ truncated: false });
    expect((await age('SELECT count(*)::int AS n FROM once.outbox_events')).rows[0].n).toBe(0);
  });

  it('a swept key executes again, like an expired one', async () => {
    expect((await call('t', 'again', 'first')).outcome).toBe('executed');
    await age("UPDATE once.idempotency_keys SET expires_at = now() - interval '1 second'");
    await sweep(relayUrl);
    const second = await call('t', 'again', 'second');
    expect(second).toMatchObject({ outcome: 'executed', value: 'second' });
  });

  it('skips a record a transaction holds instead of waiting for it', async () => {
    await call('t', 'held', 'old');
    await age("UPDATE once.idempotency_keys SET expires_at = now() - interval '1 second'");
    let release!: () => void;
    let taken!: () => void;
    const takenOver = new Promise<void>((resolve) => (taken = resolve));
    // Re-executing the expired key takes its row over (an UPDATE, locked until commit).
    const holder = withTenant(fx.app, 't', (tx) =>
      runIdempotent(tx, 'held', async () => {
        taken();
        await new Promise<void>((resolve) => (release = resolve));
        return 'new';
      }),
    );
    await takenOver;
    let result: Awaited<ReturnType<typeof sweep>>;
    try {
      result = await sweep(relayUrl);
    } finally {
      release();
    }
    expect(result.idempotencyKeys).toBe(0);
    expect(await holder).toBe('new');
    expect(await keysLeft()).toEqual(['held']);
  });

  it('refuses a role that cannot see across tenants, rather than sweeping nothing', async () => {
    await expect(sweep(fx.appUrl)).rejects.toBeInstanceOf(WrongRoleError);
    await expect(sweep(fx.appUrl)).rejects.toMatchObject({ code: 'WRONG_ROLE' });
  });

  it('rejects bad options', async () => {
    await expect(sweep(relayUrl, { outboxRetention: 'soon' })).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
    await expect(sweep(relayUrl, { batchSize: 0 })).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
  });

  it('the relay refuses bad sweep options when it starts, not at every cron tick', async () => {
    const start = (sweepOptions: object) =>
      startRelay({ connectionString: relayUrl, handleSignals: false, sinks: { '>': async () => {} }, sweep: sweepOptions as never });
    for (const [bad, path] of [
      [{ outboxRetention: 'forever' }, 'outboxRetention'],
      [{ auditRetention: -5 }, 'auditRetention'],
      [{ batchSize: 0 }, 'batchSize'],
      [{ schedule: 'every five minutes' }, 'schedule'],
    ] as const) {
      const error = await start(bad).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(InvalidOptionsError);
      expect(JSON.stringify((error as InvalidOptionsError).issues)).toContain(path);
    }
  });

  it("is scheduled by the relay on graphile-worker's cron, and runs as the relay role", async () => {
    await call('t', 'cron-expired');
    await age("UPDATE once.idempotency_keys SET expires_at = now() - interval '1 second'");
    const relay = await startRelay({ connectionString: relayUrl, sinks: { '>': async () => {} }, handleSignals: false });
    try {
      // graphile-worker registers the cron entry as its scheduler starts, just after the relay.
      let registered = 0;
      for (let i = 0; i < 100 && registered === 0; i += 1) {
        registered = (await age("SELECT 1 FROM graphile_worker._private_known_crontabs WHERE identifier = 'once_sweep'")).rowCount ?? 0;
        if (registered === 0) await new Promise((resolve) => setTimeout(resolve, 50));
      }
      expect(registered).toBe(1);
      // Rather than wait for the next 5-minute tick, add the job the cron would add.
      await age("SELECT graphile_worker.add_job('once_sweep', job_key => 'once_sweep')");
      const deadline = Date.now() + 15_000;
      while ((await keysLeft()).length > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
      expect(await keysLeft()).toEqual([]);
    } finally {
      await relay.stop();
    }
  });
});
