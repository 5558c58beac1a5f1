/**
 * Key runs (src/outbox/key-runs.ts): a claim brings a key's head with its due followers, and the
 * relay delivers them one after another. Commit order holds through failures, stops and kills;
 * a run takes no slot from other tenants; an idle relay (polling less often) still delivers.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { afterAll, beforeEach, expect, it } from 'vitest';
import { type DeliveryEvent, enqueue, type Relay, type RelayOptions, startRelay, withTenant } from '../src/index.ts';
import { QUIET_RELAY, useRelayFixture } from './support/relay-fixture.ts';
import { waitForOutbox } from './support/outbox-helpers.ts';

const setting = useRelayFixture();
const relays: Relay[] = [];
const children: ChildProcess[] = [];

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  await Promise.all(relays.map((relay) => relay.stop()));
});
beforeEach(async () => {
  await Promise.all(relays.splice(0).map((relay) => relay.stop()));
  await setting.fx.database.admin.query('DELETE FROM once.outbox_events');
});

async function relay(options: Partial<RelayOptions> & Pick<RelayOptions, 'sinks'>): Promise<Relay> {
  const started = await startRelay({ connectionString: setting.relayUrl, ...QUIET_RELAY, backoff: { initialMs: 5, maxMs: 40 }, ...options });
  relays.push(started);
  return started;
}

/** `count` events of one key (ids in commit order), payload { seq: 1..count }; `poisonAt` gets topic "poison". */
async function fillKey(count: number, options: { tenant?: string; key?: string; poisonAt?: number } = {}): Promise<void> {
  await setting.fx.database.admin.query(
    `INSERT INTO once.outbox_events (tenant_id, dedupe_id, topic, ordering_key, payload)
     SELECT $2, $3 || '-' || i, CASE WHEN i = $4 THEN 'poison' ELSE 'keyed' END, $3, jsonb_build_object('seq', i)
       FROM generate_series(1, $1::int) i ORDER BY i`,
    [count, options.tenant ?? 'tenant-k', options.key ?? 'k', options.poisonAt ?? 0],
  );
}

const seqOf = (event: DeliveryEvent) => (event.payload as { seq: number }).seq;
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, index) => from + index);

async function attemptsBySeq(): Promise<Map<number, number>> {
  const { rows } = await setting.fx.database.admin.query<{ seq: number; attempts: number }>(
    "SELECT (payload->>'seq')::int AS seq, attempts FROM once.outbox_events WHERE ordering_key IS NOT NULL",
  );
  return new Map(rows.map((row) => [row.seq, row.attempts]));
}

it("claims a key's followers with its head and delivers them one at a time, in commit order", async () => {
  await fillKey(300);
  const calls: number[] = [];
  let heldDuringFirst = 0;
  let inFlight = 0;
  let overlapped = false;
  const started = await relay({
    sinks: {
      '>': async (event) => {
        inFlight += 1;
        overlapped ||= inFlight > 1;
        calls.push(seqOf(event));
        if (calls.length === 1) {
          // The head's claim brought its followers too: they are leased to this relay already.
          const { rows } = await setting.fx.database.admin.query<{ n: number }>('SELECT count(*)::int AS n FROM once.outbox_events WHERE locked_by = $1', [
            started.id,
          ]);
          heldDuringFirst = rows[0]!.n;
        }
        await new Promise((resolve) => setImmediate(resolve));
        inFlight -= 1;
      },
    },
  });
  await waitForOutbox(setting.fx.database.admin, (c) => c.delivered === 300);
  expect(calls).toEqual(range(1, 300));
  expect(overlapped).toBe(false);
  expect(heldDuringFirst).toBeGreaterThan(1);
  expect([...(await attemptsBySeq()).values()].every((attempts) => attempts === 1)).toBe(true);
});

it('a failure in the middle of a run hands the rest back uncounted; they are delivered after it, in order', async () => {
  await fillKey(120);
  const calls: number[] = [];
  let failed = false;
  await relay({
    sinks: {
      '>': async (event) => {
        calls.push(seqOf(event));
        if (seqOf(event) === 10 && !failed) {
          failed = true;
          throw new Error('receiver hiccup');
        }
      },
    },
  });
  await waitForOutbox(setting.fx.database.admin, (c) => c.delivered === 120);
  // Nothing after 10 was tried before 10 succeeded on its second attempt.
  expect(calls).toEqual([...range(1, 10), ...range(10, 120)]);
  const attempts = await attemptsBySeq();
  expect(attempts.get(10)).toBe(2);
  // The followers handed back were not charged an attempt for it.
  expect([...attempts].filter(([seq]) => seq !== 10).every(([, count]) => count === 1)).toBe(true);
});

it('an event that dies in the middle of a run no longer holds the key back; the rest follow in order', async () => {
  await fillKey(80);
  const calls: number[] = [];
  await relay({
    maxAttempts: 2,
    sinks: {
      '>': async (event) => {
        calls.push(seqOf(event));
        if (seqOf(event) === 30) throw new Error('always fails');
      },
    },
  });
  await waitForOutbox(setting.fx.database.admin, (c) => c.delivered === 79 && c.dead === 1);
  expect(calls).toEqual([...range(1, 30), ...range(30, 80)]);
});

it('stop() in the middle of a run hands the followers back uncounted; a restarted relay continues the key in order', async () => {
  await fillKey(200);
  const calls: number[] = [];
  let reached!: () => void;
  const reachedFive = new Promise<void>((resolve) => (reached = resolve));
  const first = await relay({
    sinks: {
      '>': async (event) => {
        calls.push(seqOf(event));
        if (seqOf(event) === 5) {
          reached();
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      },
    },
  });
  await reachedFive;
  await first.stop();
  const afterStop = calls.length;
  const { rows } = await setting.fx.database.admin.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM once.outbox_events WHERE status = 'pending' AND (locked_by IS NOT NULL OR attempts <> 0)",
  );
  expect(rows[0]!.n).toBe(0); // nothing left leased, no attempt charged to what did not run
  await relay({ sinks: { '>': async (event) => void calls.push(seqOf(event)) } });
  await waitForOutbox(setting.fx.database.admin, (c) => c.delivered === 200);
  expect(calls.slice(0, afterStop)).toEqual(range(1, afterStop));
  expect(calls.slice(afterStop)).toEqual(range(afterStop + 1, 200));
});

it('a relay killed in the middle of a run: another relay delivers the rest of the key in order', async () => {
  await fillKey(150, { poisonAt: 8 });
  // The child delivers 1..7 and hangs on 8 (topic "poison"), holding 9.. in its run.
  const child = spawn(process.execPath, ['test/fixtures/relay-poison.ts'], {
    env: { ...process.env, DATABASE_URL: setting.relayUrl, LEASE_MS: '500' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  const exited = once(child, 'exit');
  await new Promise<void>((resolve) => createInterface({ input: child.stdout! }).on('line', (line) => line.startsWith('POISON') && resolve()));
  const { rows: held } = await setting.fx.database.admin.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM once.outbox_events WHERE locked_by IS NOT NULL AND status = 'pending'",
  );
  expect(held[0]!.n).toBeGreaterThan(1); // the poison and followers queued behind it
  child.kill('SIGKILL');
  await exited;

  const calls: number[] = [];
  await relay({ sinks: { '>': async (event) => void calls.push(seqOf(event)) } });
  await waitForOutbox(setting.fx.database.admin, (c) => c.delivered === 150);
  // The survivor starts at the first event the dead relay had not settled, and goes on in order.
  expect(calls.length).toBeGreaterThanOrEqual(150 - 7);
  expect(calls).toEqual(range(calls[0]!, 150));
  expect(calls[0]).toBeLessThanOrEqual(8);
});

it("a key's run takes no slot from another tenant's event", async () => {
  await fillKey(3_000, { tenant: 'tenant-a' });
  const order: string[] = [];
  let enqueued: string | undefined;
  await relay({
    concurrency: 4,
    sinks: {
      '>': async (event) => {
        order.push(event.tenantId === 'tenant-b' ? 'b' : String(seqOf(event)));
        if (order.length === 20) {
          void withTenant(setting.fx.app, 'tenant-b', async (tx) => (await enqueue(tx, { topic: 'b', payload: 'b' })).id).then((id) => (enqueued = id));
        }
        await new Promise((resolve) => setTimeout(resolve, 1));
      },
    },
  });
  await waitForOutbox(setting.fx.database.admin, () => order.includes('b'), 30_000);
  expect(enqueued).toBeDefined();
  // A's key delivers one event at a time, so B's event finds a free slot at its first claim,
  // long before A's 3,000 (a few of A's events at most go first).
  expect(order.indexOf('b')).toBeLessThan(500);
  const { rows } = await setting.fx.database.admin.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM once.outbox_events WHERE tenant_id = 'tenant-a' AND status = 'pending'",
  );
  expect(rows[0]!.n).toBeGreaterThan(1_000);
});

it('an event committed after the relay sat idle for a while is delivered', async () => {
  const delivered: string[] = [];
  await relay({ maxPollIntervalMs: 200, sinks: { '>': async (event) => void delivered.push(event.id) } });
  // Long enough for the poll interval to reach its cap (a tenth of the idle time, up to 200 ms).
  await new Promise((resolve) => setTimeout(resolve, 2_500));
  const id = await withTenant(setting.fx.app, 'tenant-idle', async (tx) => (await enqueue(tx, { topic: 'late', payload: 1 })).id);
  await waitForOutbox(setting.fx.database.admin, (c) => c.delivered === 1, 10_000);
  expect(delivered).toEqual([id]);
  // And a key's events, committed together after another quiet spell, all arrive in order.
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  await fillKey(50);
  await waitForOutbox(setting.fx.database.admin, (c) => c.delivered === 51, 10_000);
});
