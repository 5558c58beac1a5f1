/**
 * drainOnce, the serverless relay: many drains at once (and a relay beside them) keep every relay
 * guarantee; a deadline hands back what it cut; nothing is left leased or running.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterEach, expect, it } from 'vitest';
import { type DeliveryEvent, drainOnce, type DrainResult, InvalidOptionsError, startRelay, WrongRoleError } from '../src/index.ts';
import { fillOutbox } from './support/outbox-helpers.ts';
import { QUIET_RELAY, useRelayFixture } from './support/relay-fixture.ts';
import { startWebhookReceiver } from './support/webhook-receiver.ts';

const setting = useRelayFixture(8);
const QUIET = { logger: QUIET_RELAY.logger };
const pause = (milliseconds: number) => new Promise((resolve) => setTimeout(resolve, milliseconds));

afterEach(async () => {
  await setting.fx.database.admin.query('DELETE FROM once.outbox_events');
});

/** What the outbox holds, read past RLS. */
async function outbox() {
  const { rows } = await setting.fx.database.admin.query<{
    status: string;
    locked_by: string | null;
    attempts: number;
    due: boolean;
    last_error: string | null;
  }>('SELECT status, locked_by, attempts, next_attempt_at <= now() AS due, last_error FROM once.outbox_events ORDER BY id');
  return rows;
}

it('many drains at once, beside a relay: every event delivered once (but for retries), each key in order, nothing left leased', async () => {
  const refs = await fillOutbox(setting.fx.app, { count: 600, tenants: 4, orderingKeys: 6, perTransaction: 6 }); // keys locked in one order: no deadlock between writers
  // Half the events without a key: both claim paths run.
  await setting.fx.database.admin.query("UPDATE once.outbox_events SET ordering_key = NULL WHERE (payload->>'seq')::int % 2 = 1");
  const keyOf = new Map(refs.map((ref) => [`${ref.tenantId}/${ref.id}`, ref.seq % 2 === 1 ? undefined : ref.orderingKey]));
  const successes: DeliveryEvent[] = [];
  const failedOnce = new Set<string>();
  const sink = async (event: DeliveryEvent, { signal }: { signal: AbortSignal }) => {
    await pause(Math.random() * 3);
    signal.throwIfAborted(); // cut by a drain's deadline: handed back, not delivered
    const seq = (event.payload as { seq: number }).seq;
    // Every 23rd event fails its first attempt: a retry, and a key held back behind it.
    if (seq % 23 === 0 && !failedOnce.has(event.dedupeId)) {
      failedOnce.add(event.dedupeId);
      throw new Error('receiver hiccup');
    }
    successes.push(event);
  };
  const common = { connectionString: setting.relayUrl, sinks: { '>': sink }, concurrency: 8, backoff: { initialMs: 10, maxMs: 20 } };
  const options = { ...common, deadlineMs: 4_000, ...QUIET };
  const relay = await startRelay({ ...common, ...QUIET_RELAY });
  const results: DrainResult[] = [];
  try {
    for (let round = 0; round < 30 && successes.length < refs.length; round += 1) {
      results.push(...(await Promise.all(Array.from({ length: 6 }, () => drainOnce(options)))));
      // Nothing is leased by a drain once it has returned (the relay may hold some of its own).
      const { rows } = await setting.fx.database.admin.query("SELECT count(*)::int AS n FROM once.outbox_events WHERE locked_by LIKE '%:drain:%'");
      expect(rows[0]!.n).toBe(0);
    }
  } finally {
    await relay.stop();
  }
  expect(new Set(successes.map((event) => event.dedupeId)).size).toBe(refs.length);
  expect(successes).toHaveLength(refs.length); // delivered once each: repeats only after a failure, and those failed
  // Commit order within a key is id order (enqueue serialises a key's writers).
  const lastId = new Map<string, bigint>();
  for (const event of successes) {
    const key = keyOf.get(`${event.tenantId}/${event.id}`);
    if (key === undefined) continue;
    expect(BigInt(event.id) > (lastId.get(`${event.tenantId}/${key}`) ?? -1n), `key ${event.tenantId}/${key}`).toBe(true);
    lastId.set(`${event.tenantId}/${key}`, BigInt(event.id));
  }
  const rows = await outbox();
  expect(rows.every((row) => row.status === 'delivered' && row.locked_by === null)).toBe(true);
  expect(results.some((result) => result.delivered > 0)).toBe(true);
  expect(results.reduce((sum, result) => sum + result.dead, 0)).toBe(0);
}, 120_000);

it('a deadline shorter than the backlog: returns with the rest handed back, claimable at once, and the next drain delivers it', async () => {
  await fillOutbox(setting.fx.app, { count: 60, tenants: 2 });
  const delivered: string[] = [];
  const slowSink = async (event: DeliveryEvent, { signal }: { signal: AbortSignal }) => {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(resolve, 100);
      signal.addEventListener(
        'abort',
        () => {
          clearTimeout(timer);
          reject(signal.reason);
        },
        { once: true },
      );
    });
    delivered.push(event.dedupeId);
  };
  const options = { connectionString: setting.relayUrl, sinks: { '>': slowSink }, concurrency: 2, ...QUIET };
  const first = await drainOnce({ ...options, deadlineMs: 1_000 });
  expect(first.reason).toBe('deadline');
  expect(first.delivered).toBe(delivered.length);
  expect(first.delivered).toBeLessThan(60);
  const afterFirst = await outbox();
  expect(afterFirst.filter((row) => row.status === 'pending')).toHaveLength(60 - first.delivered);
  // Handed back, not left to a lease: unlocked, due now, its cut attempt not counted.
  for (const row of afterFirst.filter((row) => row.status === 'pending')) expect(row).toMatchObject({ locked_by: null, due: true, attempts: 0 });

  const second = await drainOnce({ ...options, concurrency: 16, deadlineMs: 60_000 });
  expect(second).toMatchObject({ reason: 'drained', delivered: 60 - first.delivered, failed: 0, dead: 0, released: 0 });
  expect(new Set(delivered).size).toBe(60);
  expect(delivered).toHaveLength(60);
}, 90_000);

it('a sink that hangs: cut by the deadline it is released uncounted; timed out before it, a failed attempt', async () => {
  await fillOutbox(setting.fx.app, { count: 1, tenants: 1 });
  const hang = () => new Promise<void>(() => {}); // ignores its signal too
  const cut = await drainOnce({ connectionString: setting.relayUrl, sinks: { '>': hang }, deadlineMs: 3_000, deliveryTimeoutMs: 2_900, ...QUIET });
  expect(cut).toMatchObject({ reason: 'deadline', delivered: 0, failed: 0, released: 1 });
  expect(await outbox()).toMatchObject([{ status: 'pending', locked_by: null, attempts: 0, due: true }]);

  const timedOut = await drainOnce({ connectionString: setting.relayUrl, sinks: { '>': hang }, deadlineMs: 3_000, deliveryTimeoutMs: 200, ...QUIET });
  expect(timedOut).toMatchObject({ reason: 'drained', delivered: 0, failed: 1, released: 0 });
  const [row] = await outbox();
  expect(row).toMatchObject({ status: 'pending', locked_by: null, attempts: 1 });
  expect(row!.last_error).toContain('timed out');
}, 30_000);

it('max caps the deliveries started; the rest stays due for the next drain', async () => {
  await fillOutbox(setting.fx.app, { count: 20, tenants: 3 });
  const result = await drainOnce({ connectionString: setting.relayUrl, sinks: { '>': async () => {} }, max: 5, ...QUIET });
  expect(result).toMatchObject({ reason: 'max', delivered: 5 });
  const rows = await outbox();
  expect(rows.filter((row) => row.status === 'delivered')).toHaveLength(5);
  expect(rows.filter((row) => row.status === 'pending').every((row) => row.locked_by === null && row.due)).toBe(true);
});

it('keeps looking until the deadline with pollIntervalMs, and stops at once on its signal', async () => {
  const controller = new AbortController();
  const seen: string[] = [];
  const draining = drainOnce({
    connectionString: setting.relayUrl,
    sinks: { '>': async (event) => void seen.push(event.dedupeId) },
    pollIntervalMs: 20,
    deadlineMs: 60_000,
    signal: controller.signal,
    ...QUIET,
  });
  const [ref] = await fillOutbox(setting.fx.app, { count: 1, tenants: 1 });
  while (!seen.includes(ref!.dedupeId)) await pause(20);
  controller.abort();
  expect(await draining).toMatchObject({ reason: 'aborted', delivered: 1 });
});

it('refuses bad options and a login without the relay role, with coded errors', async () => {
  const sinks = { '>': async () => {} };
  const bad = await drainOnce({ connectionString: setting.relayUrl, sinks, deadlineMs: 1_000, deliveryTimeoutMs: 1_000 }).catch((error: unknown) => error);
  expect(bad).toBeInstanceOf(InvalidOptionsError);
  expect((bad as InvalidOptionsError).issues.map((issue) => issue.path.join('.'))).toEqual(['deliveryTimeoutMs']);
  const wrong = await drainOnce({ connectionString: setting.fx.appUrl, sinks, ...QUIET }).catch((error: unknown) => error);
  expect(wrong).toBeInstanceOf(WrongRoleError);
  expect((wrong as WrongRoleError).code).toBe('WRONG_ROLE');
});

it('pg-once relay --once delivers to a real receiver, prints the counts and exits by itself', async () => {
  const refs = await fillOutbox(setting.fx.app, { count: 12, tenants: 3 });
  const receiver = await startWebhookReceiver();
  try {
    // A process that left a pool, a LISTEN or a timer behind would not exit: the timeout kills it and fails the test.
    const { stdout } = await promisify(execFile)(process.execPath, ['src/cli.ts', 'relay', '--once', '--json', '--deadline', '20000', '--http', receiver.url], {
      env: { ...process.env, DATABASE_URL: setting.relayUrl, ONCE_WEBHOOK_SECRET: receiver.secret },
      timeout: 60_000,
    });
    expect(JSON.parse(stdout)).toEqual({ delivered: 12, failed: 0, dead: 0, released: 0, reason: 'drained' });
    expect(new Set(receiver.accepted.map((delivery) => delivery.webhookId))).toEqual(new Set(refs.map((ref) => ref.dedupeId)));
  } finally {
    await receiver.close();
  }
}, 90_000);

it('delivers an event cut short twice alone, and declares one out of attempts dead, as the relay does', async () => {
  const refs = await fillOutbox(setting.fx.app, { count: 12, tenants: 2 });
  const [poison, exhausted] = [refs[3]!, refs[7]!];
  // Their last attempts ended without an outcome (a crash): locked_by still set, the lease over.
  const cutShort = `UPDATE once.outbox_events SET locked_by = 'a-dead-drain', attempts = $3, next_attempt_at = now() - interval '1 second' WHERE tenant_id = $1 AND id = $2`;
  await setting.fx.database.admin.query(cutShort, [poison.tenantId, poison.id, 2]);
  await setting.fx.database.admin.query(cutShort, [exhausted.tenantId, exhausted.id, 5]);
  let inFlight = 0;
  let besidePoison = -1;
  const result = await drainOnce({
    connectionString: setting.relayUrl,
    maxAttempts: 5,
    sinks: {
      '>': async (event) => {
        inFlight += 1;
        if (event.dedupeId === poison.dedupeId) besidePoison = inFlight - 1;
        await pause(5);
        inFlight -= 1;
      },
    },
    ...QUIET,
  });
  expect(result).toMatchObject({ reason: 'drained', delivered: 11, dead: 1, failed: 0 });
  expect(besidePoison).toBe(0);
  const { rows } = await setting.fx.database.admin.query<{ status: string; last_error: string }>(
    'SELECT status, last_error FROM once.outbox_events WHERE id = $1',
    [exhausted.id],
  );
  expect(rows[0]).toMatchObject({ status: 'dead' });
  expect(rows[0]!.last_error).toContain('without an outcome');
});
