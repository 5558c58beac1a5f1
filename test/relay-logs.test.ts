/**
 * What the relay tells its operator: a real pino logger (a child of one, as applications pass
 * it) receiving the relay's lines while it delivers to a real receiver that fails one topic and
 * refuses one event for good: the start line with the settings, retries rate-limited per topic
 * with every one of them accounted for, dead events with their fields, the stop line's counts.
 * Also: dead at claim, the relay's first logger shape, and the rate limit on its own.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Logger, pino } from 'pino';
import { enqueue, httpSink, startRelay, withTenant, type RelayOptions } from '../src/index.ts';
import { LogRateLimit } from '../src/outbox/log-rate-limit.ts';
import { fillOutbox, waitForOutbox } from './support/outbox-helpers.ts';
import { QUIET_RELAY, useRelayFixture } from './support/relay-fixture.ts';
import { startWebhookReceiver, type WebhookReceiver } from './support/webhook-receiver.ts';

const setting = useRelayFixture();
let receiver: WebhookReceiver;
beforeAll(async () => {
  receiver = await startWebhookReceiver();
});
afterAll(async () => {
  await receiver?.close();
});

type Line = Record<string, any> & { level: number; time: number; msg: string };

/** A real pino logger whose destination keeps each line it writes, parsed. */
function capturingPino(): { logger: Logger; lines: Line[] } {
  const lines: Line[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Line) });
  return { logger, lines };
}

function relayOptions(extra: Partial<RelayOptions>): RelayOptions {
  return {
    ...QUIET_RELAY,
    connectionString: setting.relayUrl,
    sinks: { '>': httpSink({ url: receiver.url, secret: receiver.secret, timeoutMs: 5_000 }) },
    concurrency: 8,
    backoff: { initialMs: 1, maxMs: 1 },
    ...extra,
  };
}

/** Retries (or dead events) a set of lines stands for: one per line, or its suppressed count. */
function represented(lines: Line[]): number {
  return lines.reduce((sum, line) => sum + (line.suppressed ?? 1), 0);
}

describe('relay logs', () => {
  it('logs start, rate-limited retries, dead events and stop, with fields, to a pino child logger', async () => {
    const { fx, relayUrl } = setting;
    await fx.database.admin.query('DELETE FROM once.outbox_events');
    receiver.requests.length = 0;
    receiver.respond = (delivery) => (delivery.body.type === 'orders.flaky' ? 500 : delivery.body.data?.gone ? 410 : 200);
    const flaky = await fillOutbox(fx.app, { count: 20, tenants: 2, topic: 'orders.flaky' });
    await fillOutbox(fx.app, { count: 5, tenants: 1, topic: 'orders.created' });
    const gone = await withTenant(fx.app, 'tenant-gone', (tx) => enqueue(tx, { topic: 'orders.created', payload: { gone: true } }));

    const { logger, lines } = capturingPino();
    const startedAt = Date.now();
    const relay = await startRelay(relayOptions({ logger: logger.child({ service: 'billing' }), maxAttempts: 10 }));
    await waitForOutbox(fx.database.admin, (c) => c.delivered === 5 && c.dead === 21, 60_000);
    await relay.stop();
    const elapsedMs = Date.now() - startedAt;

    for (const line of lines) {
      expect(line).toMatchObject({ time: expect.any(Number), pid: process.pid, hostname: expect.any(String), service: 'billing', relayId: relay.id });
      expect(pino.levels.labels[line.level]).toBeDefined();
    }
    const text = JSON.stringify(lines);
    expect(text).not.toContain(receiver.secret);
    expect(text).not.toContain(new URL(relayUrl).password);

    const start = lines.find((line) => line.msg === 'relay started')!;
    expect(start).toMatchObject({
      level: pino.levels.values.info,
      topics: ['>'],
      concurrency: 8,
      maxAttempts: 10,
      leaseMs: 10_000,
      backoff: { initialMs: 1, maxMs: 1 },
      sweep: false,
      database: expect.stringContaining('127.0.0.1'),
    });

    // 20 events x 10 attempts, all failed: 180 retries (the 10th attempt is the death).
    const retries = lines.filter((line) => line.msg.startsWith('delivery failed, retrying'));
    expect(represented(retries)).toBe(180);
    // One line when a topic starts failing, then at most one per 10 s window, each standing for
    // the retries it leaves out: a bounded number, however many retries.
    expect(retries.length).toBeLessThanOrEqual(2 + Math.ceil(elapsedMs / 10_000));
    const firstRetry = retries[0]!;
    expect(firstRetry).toMatchObject({ level: pino.levels.values.warn, topic: 'orders.flaky', attempt: 1, retryInMs: expect.any(Number) });
    expect(firstRetry).not.toHaveProperty('suppressed');
    expect(flaky.map((ref) => ref.id)).toContain(firstRetry.eventId);
    expect(firstRetry.error).toContain('500');
    expect(retries.filter((line) => line.suppressed).every((line) => line.msg === 'delivery failed, retrying; more retries suppressed')).toBe(true);

    const dead = lines.filter((line) => line.msg.startsWith('event is dead'));
    expect(dead.every((line) => line.level === pino.levels.values.error)).toBe(true);
    expect(represented(dead.filter((line) => line.topic === 'orders.flaky'))).toBe(20);
    expect(dead.filter((line) => line.topic === 'orders.flaky' && !line.suppressed).length).toBeGreaterThanOrEqual(10); // the burst, in full
    expect(dead.find((line) => line.eventId === gone.id)).toEqual(
      expect.objectContaining({
        tenantId: 'tenant-gone',
        topic: 'orders.created',
        dedupeId: gone.dedupeId,
        attempt: 1,
        reason: 'rejected',
        error: expect.stringContaining('410'),
      }),
    );
    expect(dead.find((line) => line.topic === 'orders.flaky')).toMatchObject({ reason: 'max_attempts', attempt: 10 });

    expect(lines.at(-1)).toMatchObject({
      msg: 'relay stopped',
      level: pino.levels.values.info,
      delivered: 5,
      retried: 180,
      dead: 21,
      released: 0,
      durationMs: expect.any(Number),
    });
  });

  it('logs an event found dead at its claim (its last attempt cut short), and still serves the first logger shape', async () => {
    const { fx } = setting;
    await fx.database.admin.query('DELETE FROM once.outbox_events');
    receiver.respond = () => 200;
    const exhaust = async () => {
      const ref = await withTenant(fx.app, 'tenant-x', (tx) => enqueue(tx, { topic: 'orders.cut', payload: {} }));
      // What a relay killed during the last attempt leaves: attempts used up, still locked by it.
      await fx.database.admin.query(
        `UPDATE once.outbox_events SET attempts = 3, locked_by = 'gone:1:dead', next_attempt_at = now() - interval '1 second' WHERE id = $1`,
        [ref.id],
      );
      return ref;
    };

    const first = await exhaust();
    const { logger, lines } = capturingPino();
    let relay = await startRelay(relayOptions({ logger, maxAttempts: 3 }));
    await waitForOutbox(fx.database.admin, (c) => c.dead === 1);
    await relay.stop();
    expect(lines.find((line) => line.msg === 'event is dead')).toMatchObject({
      eventId: first.id,
      tenantId: 'tenant-x',
      topic: 'orders.cut',
      dedupeId: first.dedupeId,
      attempt: 3,
      reason: 'exhausted',
      error: expect.stringContaining('without an outcome'),
    });

    // The message-first shape: warnings and errors as text, as before; no start, stop or retry lines.
    const second = await exhaust();
    receiver.respond = (delivery) => (delivery.body.type === 'orders.flaky' ? 500 : 200);
    await fillOutbox(fx.app, { count: 3, tenants: 1, topic: 'orders.flaky' });
    const messages: string[] = [];
    relay = await startRelay(
      relayOptions({
        logger: { warn: (message: string) => messages.push(`warn ${message}`), error: (message: string) => messages.push(`error ${message}`) },
        maxAttempts: 3,
      }),
    );
    await waitForOutbox(fx.database.admin, (c) => c.dead === 5);
    await relay.stop();
    expect(messages).toEqual([`warn event ${second.id} of tenant tenant-x is dead: ${lines.find((line) => line.msg === 'event is dead')!.error}`]);
  });

  it('a logger that throws breaks nothing', async () => {
    const { fx } = setting;
    await fx.database.admin.query('DELETE FROM once.outbox_events');
    receiver.respond = () => 200;
    const refs = await fillOutbox(fx.app, { count: 10, tenants: 2 });
    const throwing = () => {
      throw new Error('logger down');
    };
    const relay = await startRelay(relayOptions({ logger: { info: throwing, warn: throwing, error: throwing } }));
    await waitForOutbox(fx.database.admin, (c) => c.delivered === refs.length);
    await relay.stop();
  });
});

describe('LogRateLimit', () => {
  it('logs the burst, counts the rest, and sums them up at the end of the window or on flush', async () => {
    const written: { item: number; suppressed: number }[] = [];
    const limit = new LogRateLimit<number>(20, 2, (item, suppressed) => written.push({ item, suppressed }));
    for (let item = 1; item <= 50; item += 1) limit.add('a', item);
    limit.add('b', 100);
    expect(written).toEqual([
      { item: 1, suppressed: 0 },
      { item: 2, suppressed: 0 },
      { item: 100, suppressed: 0 },
    ]);
    // The window ends: one line, the latest item, standing for the 48 left out.
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(written.at(-1)).toEqual({ item: 50, suppressed: 48 });
    // Whatever comes next (in the window after a summary: counted; after a quiet window: logged
    // again) is accounted for once flush() has written what is pending.
    limit.add('a', 51);
    limit.add('a', 52);
    limit.flush();
    const total = written.filter((line) => line.item < 100).reduce((sum, line) => sum + (line.suppressed || 1), 0);
    expect(total).toBe(52);
  });
});
