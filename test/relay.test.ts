/**
 * The relay against real Postgres, with function sinks (the HTTP and NATS sinks have their own
 * end-to-end tests): every committed event delivered under its one dedupe id, per-key commit
 * order, dead letters and requeue, graceful stop, nothing from rolled-back transactions.
 */

import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  DeliveryRejectedError,
  enqueue,
  listDeadEvents,
  requeueDeadEvents,
  startRelay,
  withTenant,
  type DeliveryContext,
  type DeliveryEvent,
  type Relay,
  type RelayOptions,
} from '../src/index.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { fillOutbox, waitForOutbox } from './support/outbox-helpers.ts';
import { testPool } from './support/test-database.ts';

let fx: AppFixture;
let relayUrl: string;
const relays: Relay[] = [];

beforeAll(async () => {
  fx = await createAppFixture(10);
  relayUrl = await fx.database.createLoginRole('relay');
});
afterAll(async () => {
  await Promise.all(relays.map((relay) => relay.stop()));
  await fx?.close();
});
beforeEach(async () => {
  await Promise.all(relays.splice(0).map((relay) => relay.stop()));
  await fx.database.admin.query('DELETE FROM once.outbox_events');
});

async function relay(options: Partial<RelayOptions> & Pick<RelayOptions, 'sinks'>): Promise<Relay> {
  const started = await startRelay({
    connectionString: relayUrl,
    backoff: { initialMs: 5, maxMs: 40 },
    handleSignals: false,
    logger: { warn: () => {}, error: () => {} },
    ...options,
  });
  relays.push(started);
  return started;
}

/** Records every attempt: dedupe ids seen per event id, and the order of successful deliveries. */
function recordingSink(failureRate = 0) {
  const attempts = new Map<string, string[]>();
  const delivered: DeliveryEvent[] = [];
  const contexts: DeliveryContext[] = [];
  const sink = async (event: DeliveryEvent, context: DeliveryContext) => {
    attempts.set(event.id, [...(attempts.get(event.id) ?? []), event.dedupeId]);
    contexts.push(context);
    if (Math.random() < failureRate) throw new Error('receiver hiccup');
    delivered.push(event);
  };
  return { sink, attempts, delivered, contexts };
}

describe('relay', () => {
  it('delivers 1,000 events of 10 tenants through a sink failing 30% of attempts, each under one dedupe id', async () => {
    const refs = await fillOutbox(fx.app, { count: 1_000, tenants: 10 });
    const recorder = recordingSink(0.3);
    await relay({ sinks: { '>': recorder.sink } });
    const counts = await waitForOutbox(fx.database.admin, (c) => c.delivered === 1_000, 60_000);
    expect(counts).toEqual({ pending: 0, delivered: 1_000, dead: 0 });

    for (const ref of refs) {
      const seen = recorder.attempts.get(ref.id) ?? [];
      expect(seen.length).toBeGreaterThan(0);
      expect(new Set(seen)).toEqual(new Set([ref.dedupeId]));
    }
    expect([...recorder.attempts.values()].some((seen) => seen.length > 1)).toBe(true); // retries happened
    expect(new Set(recorder.delivered.map((e) => e.tenantId)).size).toBe(10);
    const { rows } = await fx.database.admin.query(
      'SELECT count(*)::int AS n FROM once.outbox_events WHERE delivered_at IS NULL OR attempts < 1 OR locked_by IS NOT NULL',
    );
    expect(rows[0].n).toBe(0);
    // The attempt number a sink sees grows across retries.
    expect(Math.max(...recorder.contexts.map((c) => c.attempt))).toBeGreaterThan(1);
  });

  it('delivers events sharing an ordering key strictly in commit order, despite random failures', async () => {
    // One event per transaction: writers of several keys in one transaction may deadlock on the
    // per-key locks (a retryable TransactionConflictError), which is not what this test is about.
    const refs = await fillOutbox(fx.app, { count: 200, tenants: 1, orderingKeys: 5, perTransaction: 1 });
    const recorder = recordingSink(0.3);
    await relay({ sinks: { '>': recorder.sink }, concurrency: 16 });
    await waitForOutbox(fx.database.admin, (c) => c.delivered === 200, 60_000);
    // Per key, ids follow commit order (enqueue serialises a key's writers); delivery must too.
    for (let key = 0; key < 5; key += 1) {
      const expected = refs
        .filter((r) => r.orderingKey === `key-${key}`)
        .map((r) => BigInt(r.id))
        .sort((a, b) => (a < b ? -1 : 1));
      const got = recorder.delivered.filter((e) => e.orderingKey === `key-${key}`).map((e) => BigInt(e.id));
      expect(got).toEqual(expected);
    }
  });

  it('serialises writers of one ordering key, so ids follow commit order', async () => {
    let releaseFirst!: () => void;
    const firstEnqueued = new Promise<void>((resolve) => {
      void withTenant(fx.app, 'tenant-o', async (tx) => {
        await enqueue(tx, { topic: 't', payload: 'first', orderingKey: 'k' });
        resolve();
        await new Promise<void>((r) => (releaseFirst = r));
      });
    });
    await firstEnqueued;
    let secondDone = false;
    const second = withTenant(fx.app, 'tenant-o', (tx) => enqueue(tx, { topic: 't', payload: 'second', orderingKey: 'k' })).then((r) => {
      secondDone = true;
      return r;
    });
    // A writer on another key, or without a key, is not held up.
    await withTenant(fx.app, 'tenant-o', (tx) => enqueue(tx, { topic: 't', payload: 'other', orderingKey: 'other' }));
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(secondDone).toBe(false);
    releaseFirst();
    await second;
    const { rows } = await fx.database.admin.query("SELECT payload FROM once.outbox_events WHERE ordering_key = 'k' ORDER BY id");
    expect(rows.map((r) => r.payload)).toEqual(['first', 'second']);
  });

  it('marks an event dead at once when the receiver rejects it, and requeue delivers it', async () => {
    const refs = await fillOutbox(fx.app, { count: 3, tenants: 1 });
    const rejectOnce = new Set([refs[1]!.id]);
    const seen: string[] = [];
    await relay({
      sinks: {
        '>': async (event) => {
          if (rejectOnce.delete(event.id)) throw new DeliveryRejectedError('HTTP 422 Unprocessable Entity');
          seen.push(event.id);
        },
      },
    });
    await waitForOutbox(fx.database.admin, (c) => c.delivered === 2 && c.dead === 1);
    const dead = await listDeadEvents(relayUrl);
    expect(dead).toEqual([expect.objectContaining({ id: refs[1]!.id, attempts: 1, lastError: expect.stringContaining('422') })]);

    expect(await requeueDeadEvents(relayUrl, [refs[1]!.id])).toBe(1);
    await waitForOutbox(fx.database.admin, (c) => c.delivered === 3 && c.dead === 0);
    expect(seen.sort()).toEqual(refs.map((r) => r.id).sort());
  });

  it('declares an event dead after maxAttempts, keeping attempts and the last error', async () => {
    const [ref] = await fillOutbox(fx.app, { count: 1, tenants: 1 });
    let calls = 0;
    await relay({
      maxAttempts: 3,
      sinks: {
        '>': async () => {
          calls += 1;
          throw new Error(`down ${calls}`);
        },
      },
    });
    await waitForOutbox(fx.database.admin, (c) => c.dead === 1);
    expect(calls).toBe(3);
    const [dead] = await listDeadEvents(relayUrl);
    expect(dead).toMatchObject({ id: ref!.id, attempts: 3, lastError: 'Error: down 3' });
    expect(await requeueDeadEvents(relayUrl, 'all')).toBe(1);
  });

  it('counts a sink that throws synchronously as a failed attempt: the relay survives, the event dies, the rest flows', async () => {
    const refs = await fillOutbox(fx.app, { count: 20, tenants: 2 });
    const poison = refs[7]!.id;
    let calls = 0;
    const delivered = new Set<string>();
    await relay({
      maxAttempts: 3,
      sinks: {
        // Not async: the throw happens before any promise exists.
        '>': (event) => {
          if (event.id === poison) {
            calls += 1;
            throw new TypeError('cannot serialise the payload');
          }
          delivered.add(event.id);
          return Promise.resolve();
        },
      },
    });
    await waitForOutbox(fx.database.admin, (c) => c.delivered === 19 && c.dead === 1);
    expect(calls).toBe(3);
    expect(delivered.size).toBe(19);
    const [dead] = await listDeadEvents(relayUrl);
    expect(dead).toMatchObject({ id: poison, attempts: 3, lastError: 'TypeError: cannot serialise the payload' });
  });

  it('fences outcomes by the claim: a relay whose lease lapsed cannot kill or reset an event another relay is delivering', async () => {
    const [ref] = await fillOutbox(fx.app, { count: 1, tenants: 1 });
    const gate = <T>() => {
      let open!: (value: T) => void;
      const promise = new Promise<T>((resolve) => (open = resolve));
      return { promise, open };
    };
    const firstStarted = gate<void>();
    const firstOutcome = gate<void>();
    // A long lease: once A's heartbeat has moved the lease from the short queued one to this, it
    // does not renew again during the test; the lapse is made by hand below, as if A's renewals
    // had failed. One slot and batches of one: A claims nothing more while it delivers, so B,
    // not A, claims the lapsed event.
    const a = await relay({
      leaseMs: 600_000,
      concurrency: 1,
      batchSize: 1,
      sinks: {
        '>': async () => {
          firstStarted.open();
          await firstOutcome.promise;
          throw new DeliveryRejectedError('HTTP 410 Gone'); // "dead" had it been A's to settle
        },
      },
    });
    await firstStarted.promise;
    const leasedLong = async () =>
      (await fx.database.admin.query("SELECT next_attempt_at > now() + interval '1 minute' AS long FROM once.outbox_events WHERE id = $1", [ref!.id])).rows[0]
        .long;
    while (!(await leasedLong())) await new Promise((resolve) => setTimeout(resolve, 20));
    await fx.database.admin.query('UPDATE once.outbox_events SET next_attempt_at = now() WHERE id = $1', [ref!.id]);

    const secondStarted = gate<void>();
    const secondOutcome = gate<void>();
    const b = await relay({
      sinks: {
        '>': async () => {
          secondStarted.open();
          await secondOutcome.promise;
        },
      },
    });
    await secondStarted.promise;
    firstOutcome.open();
    await a.stop(); // A's outcome has been written (or refused) by the time stop() returns
    const { rows } = await fx.database.admin.query('SELECT status, attempts, locked_by FROM once.outbox_events WHERE id = $1', [ref!.id]);
    expect(rows[0]).toEqual({ status: 'pending', attempts: 2, locked_by: b.id });

    secondOutcome.open();
    await waitForOutbox(fx.database.admin, (c) => c.delivered === 1);
  });

  it('runs under a role whose DateStyle and TimeZone are unusual, with its own pool or a given one', async () => {
    const oddUrl = await fx.database.createLoginRole('relay');
    const role = new URL(oddUrl).username;
    await fx.database.admin.query(`ALTER ROLE "${role}" SET DateStyle = 'SQL, DMY'`);
    await fx.database.admin.query(`ALTER ROLE "${role}" SET TimeZone = 'Asia/Kathmandu'`);
    await fx.database.admin.query(`ALTER ROLE "${role}" SET IntervalStyle = 'sql_standard'`);
    const refs = await fillOutbox(fx.app, { count: 4, tenants: 2 });
    const { rows } = await fx.database.admin.query<{ id: string; created_at: Date }>('SELECT id, created_at FROM once.outbox_events');
    const createdAt = new Map(rows.map((row) => [String(row.id), row.created_at.getTime()]));

    const seen = new Map<string, number>();
    const sink = async (event: DeliveryEvent) => void seen.set(event.id, event.createdAt.getTime());
    await relay({ connectionString: oddUrl, sweep: false, sinks: { '>': sink } });
    await waitForOutbox(fx.database.admin, (c) => c.delivered === 4);
    expect(seen).toEqual(createdAt);

    // A pool of the caller's: the relay cannot pin its sessions, and must not depend on them.
    await Promise.all(relays.splice(0).map((r) => r.stop()));
    await fx.database.admin.query("UPDATE once.outbox_events SET status = 'pending', delivered_at = NULL, next_attempt_at = now()");
    seen.clear();
    const pool = testPool({ connectionString: oddUrl, max: 4 });
    try {
      const { rows: style } = await pool.query('SHOW DateStyle');
      expect(style[0].DateStyle).toBe('SQL, DMY');
      await relay({ connectionString: undefined, pool, sweep: false, sinks: { '>': sink } } as RelayOptions);
      await waitForOutbox(fx.database.admin, (c) => c.delivered === 4);
      expect(seen).toEqual(createdAt);
      expect(refs).toHaveLength(4);
    } finally {
      await Promise.all(relays.splice(0).map((r) => r.stop()));
      await pool.end();
    }
  });

  it('refuses to requeue an id that is not a dead event', async () => {
    await expect(requeueDeadEvents(relayUrl, ['999999'])).rejects.toMatchObject({ code: 'EVENT_NOT_FOUND' });
    await expect(requeueDeadEvents(relayUrl, ['abc'])).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
  });

  it('routes by topic pattern, exact topics first; an event without a sink is retried, then dead', async () => {
    const got: string[] = [];
    await withTenant(fx.app, 'tenant-r', async (tx) => {
      for (const topic of ['orders.created', 'orders.paid', 'emails.sent', 'misc']) await enqueue(tx, { topic, payload: null });
    });
    await relay({
      maxAttempts: 2,
      sinks: {
        'orders.*': async (e) => void got.push(`orders:${e.topic}`),
        'orders.paid': async (e) => void got.push(`exact:${e.topic}`),
        'emails.>': async (e) => void got.push(`emails:${e.topic}`),
      },
    });
    await waitForOutbox(fx.database.admin, (c) => c.delivered === 3 && c.dead === 1);
    expect(got.sort()).toEqual(['emails:emails.sent', 'exact:orders.paid', 'orders:orders.created']);
    const [dead] = await listDeadEvents(relayUrl);
    expect(dead).toMatchObject({ topic: 'misc', lastError: expect.stringContaining('no sink') });
  });

  it('never delivers events of rolled-back transactions', async () => {
    await withTenant(fx.app, 'tenant-x', async (tx) => {
      await enqueue(tx, { topic: 'kept', payload: 1 });
    });
    await expect(
      withTenant(fx.app, 'tenant-x', async (tx) => {
        await enqueue(tx, { topic: 'rolled.back', payload: 2 });
        throw new Error('business rule failed');
      }),
    ).rejects.toThrow('business rule failed');
    const recorder = recordingSink();
    await relay({ sinks: { '>': recorder.sink } });
    await waitForOutbox(fx.database.admin, (c) => c.delivered === 1);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(recorder.delivered.map((e) => e.topic)).toEqual(['kept']);
  });

  it('stop() lets in-flight deliveries finish; a restarted relay delivers the rest, none lost', async () => {
    const refs = await fillOutbox(fx.app, { count: 300, tenants: 3 });
    const recorder = recordingSink();
    const slow = async (event: DeliveryEvent, context: DeliveryContext) => {
      await new Promise((resolve) => setTimeout(resolve, 5));
      await recorder.sink(event, context);
    };
    const first = await relay({ sinks: { '>': slow }, concurrency: 8 });
    await waitForOutbox(fx.database.admin, (c) => c.delivered >= 40);
    await first.stop();
    const afterStop = await waitForOutbox(fx.database.admin, () => true);
    expect(afterStop.delivered).toBeLessThan(300);
    // Nothing was left leased to the stopped relay.
    const { rows } = await fx.database.admin.query('SELECT count(*)::int AS n FROM once.outbox_events WHERE locked_by IS NOT NULL');
    expect(rows[0].n).toBe(0);

    await relay({ sinks: { '>': recorder.sink } });
    await waitForOutbox(fx.database.admin, (c) => c.delivered === 300);
    const byId = new Map(refs.map((r) => [r.id, r.dedupeId]));
    for (const event of recorder.delivered) expect(event.dedupeId).toBe(byId.get(event.id));
    expect(new Set(recorder.delivered.map((e) => e.id)).size).toBe(300);
  });

  it('stop() aborts deliveries that outlast shutdownTimeoutMs and releases them uncounted', async () => {
    const [ref] = await fillOutbox(fx.app, { count: 1, tenants: 1 });
    let signal: AbortSignal | undefined;
    const hanging = await relay({
      shutdownTimeoutMs: 400, // half for the delivery, half for releasing it
      sinks: {
        '>': (_event, context) => {
          signal = context.signal;
          return new Promise(() => {});
        },
      },
    });
    await waitForOutbox(fx.database.admin, () => signal !== undefined);
    await hanging.stop();
    expect(signal?.aborted).toBe(true);
    const { rows } = await fx.database.admin.query(
      'SELECT status, attempts, locked_by, next_attempt_at <= now() AS due FROM once.outbox_events WHERE id = $1',
      [ref!.id],
    );
    expect(rows[0]).toEqual({ status: 'pending', attempts: 0, locked_by: null, due: true });
  });

  it('aborts a delivery that exceeds deliveryTimeoutMs and retries it', async () => {
    await fillOutbox(fx.app, { count: 1, tenants: 1 });
    let calls = 0;
    await relay({
      deliveryTimeoutMs: 50,
      sinks: {
        '>': async (_event, context) => {
          calls += 1;
          if (calls === 1) await new Promise((_, reject) => context.signal.addEventListener('abort', () => reject(context.signal.reason)));
        },
      },
    });
    await waitForOutbox(fx.database.admin, (c) => c.delivered === 1);
    expect(calls).toBe(2);
    const { rows } = await fx.database.admin.query('SELECT attempts, last_error FROM once.outbox_events');
    expect(rows[0]).toMatchObject({ attempts: 2, last_error: expect.stringContaining('timed out') });
  });

  it('times out a delivery that ignores its signal while hundreds of others start and finish after it, and only that one', async () => {
    const refs = await fillOutbox(fx.app, { count: 300, tenants: 3 });
    const hung = refs[0]!.id;
    const attempts = new Map<string, number>();
    await relay({
      deliveryTimeoutMs: 400,
      concurrency: 4,
      sinks: {
        '>': async (event) => {
          attempts.set(event.id, (attempts.get(event.id) ?? 0) + 1);
          // Ignores its signal: the relay stops waiting for it at the timeout all the same.
          if (event.id === hung && attempts.get(event.id) === 1) await new Promise(() => {});
        },
      },
    });
    await waitForOutbox(fx.database.admin, (c) => c.delivered === 300, 30_000);
    expect(attempts.get(hung)).toBe(2);
    expect([...attempts.entries()].filter(([id, count]) => id !== hung && count !== 1)).toEqual([]);
    const { rows } = await fx.database.admin.query('SELECT id::text, attempts, last_error FROM once.outbox_events WHERE attempts > 1');
    expect(rows).toEqual([{ id: hung, attempts: 2, last_error: expect.stringContaining('timed out after 400 ms') }]);
  });

  it('rejects bad options with coded errors', async () => {
    await expect(startRelay({ sinks: {} } as never)).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
    await expect(startRelay({ connectionString: relayUrl, sinks: { '>': 'nope' } } as never)).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
    await expect(startRelay({ connectionString: relayUrl, sinks: { '>': async () => {} }, concurrency: 0 })).rejects.toMatchObject({
      code: 'INVALID_OPTIONS',
    });
  });
});
