/**
 * redisStreamSink against real Redis: the machine's (REDIS_URL, default 127.0.0.1:6379), keys
 * under a prefix of each test's own, and a redis-server of this file's own (AOF, appendfsync
 * always) for what needs a crash or changed settings: what an entry holds, the atomic dedupe
 * window, MAXLEN, start()'s checks, coded errors; then through the relay with every event
 * delivered twice, and with Redis killed and restarted mid-stream.
 *
 * Without Redis the suites are skipped, unless CI or ONCE_REQUIRE_SERVICES is set: then they
 * fail, so a CI run cannot go green by silently testing nothing.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, expectTypeOf, it } from 'vitest';
import type { z } from 'zod';
import { DeliveryFailedError, SinkMisconfiguredError } from '../src/errors.ts';
import type { Relay, Sink } from '../src/index.ts';
import { eventEnvelope } from '../src/outbox/sink.ts';
import { redisStreamSink, type redisStreamSinkOptionsSchema, type RedisStreamSinkOptions } from '../src/outbox/sinks/redis-stream-sink.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { errorOf } from './support/error-of.ts';
import { optionIssues, pacedSink, startBrokerRelay, testContext, testEvent, testStartInfo, twiceSink } from './support/sink-fixtures.ts';
import { fillOutbox, waitForOutbox } from './support/outbox-helpers.ts';
import { REDIS_URL, redisAvailable, redisRequired, requireRedis, startRedisServer, type OwnRedisServer } from './support/redis.ts';

const MINUTE_MILLISECONDS = 60 * 1_000;

/** A stream's entries as objects of their fields. */
async function entries(redis: Redis, stream: string): Promise<Array<Record<string, string>>> {
  return (await redis.xrange(stream, '-', '+')).map(([, fields]) => {
    const entry: Record<string, string> = {};
    for (let i = 0; i < fields.length; i += 2) entry[fields[i]!] = fields[i + 1]!;
    return entry;
  });
}

/** Deletes every key under `prefix`. */
async function deleteKeys(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1_000);
    if (keys.length > 0) await redis.del(...keys);
    cursor = next;
  } while (cursor !== '0');
}

describe.skipIf(!redisAvailable && !redisRequired)('redisStreamSink (real Redis)', () => {
  let redis: Redis;
  let own: OwnRedisServer;
  let prefix: string;
  const sinks: Sink[] = [];

  beforeAll(async () => {
    requireRedis();
    redis = new Redis(REDIS_URL);
    own = await startRedisServer();
  });
  afterEach(async () => {
    await Promise.all(sinks.splice(0).map((sink) => sink.close?.()));
    await deleteKeys(redis, prefix);
  });
  afterAll(async () => {
    redis?.disconnect();
    await own?.stop();
  });

  /** A sink on the machine's Redis whose streams and dedupe records are under this test's prefix. */
  function sink(options: Partial<RedisStreamSinkOptions> = {}): Sink {
    const created = redisStreamSink({
      url: REDIS_URL,
      stream: (e) => `${prefix}${e.topic}`,
      dedupeKeyPrefix: `${prefix}dedupe:`,
      ...options,
    });
    sinks.push(created);
    return created;
  }
  const fresh = () => {
    prefix = `once:test:${randomBytes(4).toString('hex')}:`;
  };

  it('appends the event as one entry: dedupe id, tenant, topic, ordering key, headers and the JSON envelope', async () => {
    fresh();
    const appended = testEvent({ orderingKey: 'order-42', headers: { traceparent: 't-1' } });

    await sink()(appended, testContext());

    expect(await entries(redis, `${prefix}orders.created`)).toEqual([
      {
        dedupe_id: appended.dedupeId,
        tenant: 'tenant-a',
        topic: 'orders.created',
        ordering_key: 'order-42',
        headers: JSON.stringify({ traceparent: 't-1' }),
        body: JSON.stringify(eventEnvelope(appended)),
      },
    ]);
    expect(JSON.parse((await entries(redis, `${prefix}orders.created`))[0]!.body!)).toEqual({
      id: appended.dedupeId,
      type: 'orders.created',
      timestamp: '2025-01-02T03:04:05.678Z',
      data: { orderId: 42, total: '9.99' },
    });
  });

  it('appends an event delivered three times (concurrently too) once, and remembers it for the dedupe window', async () => {
    fresh();
    const deliver = sink({ dedupeWindowMs: 10 * MINUTE_MILLISECONDS });
    const once = testEvent();

    await Promise.all([deliver(once, testContext()), deliver(once, testContext())]);
    await deliver(once, { ...testContext(), attempt: 3 });

    const stream = `${prefix}orders.created`;
    const [[entryId]] = (await redis.xrange(stream, '-', '+')) as [[string, string[]]];
    expect(await redis.xlen(stream)).toBe(1);
    const record = `${prefix}dedupe:{${stream}}:${once.dedupeId}`;
    expect(await redis.get(record)).toBe(entryId);
    const ttl = await redis.pttl(record);
    expect(ttl).toBeGreaterThan(9 * MINUTE_MILLISECONDS);
    expect(ttl).toBeLessThanOrEqual(10 * MINUTE_MILLISECONDS);
  });

  it('appends a repeat again once the dedupe window has passed', async () => {
    fresh();
    const deliver = sink({ dedupeWindowMs: 100 });
    const once = testEvent();

    await deliver(once, testContext());
    await new Promise((resolve) => setTimeout(resolve, 250));
    await deliver(once, testContext());

    expect(await redis.xlen(`${prefix}orders.created`)).toBe(2);
  });

  it('uses one stream per topic by default, or a fixed stream; the dedupe record follows a hash tag of the stream', async () => {
    fresh();
    const byTopic = sink({ stream: undefined });
    const fixed = sink({ stream: `${prefix}{all}.events` });
    const topic = `${prefix}orders.paid`;
    const first = testEvent({ topic });

    await byTopic(first, testContext());
    await fixed(testEvent(), testContext());

    expect(await redis.xlen(topic)).toBe(1);
    expect(await redis.exists(`${prefix}dedupe:{${topic}}:${first.dedupeId}`)).toBe(1);
    expect(await redis.xlen(`${prefix}{all}.events`)).toBe(1);
    expect(await redis.keys(`${prefix}dedupe:{all}:*`)).toHaveLength(1);
  });

  it('trims with MAXLEN: exactly with exactMaxLen, about (~) otherwise', async () => {
    fresh();
    const exact = sink({ maxLen: 3, exactMaxLen: true });
    const about = sink({ maxLen: 1_000, stream: `${prefix}about` });
    const appended = Array.from({ length: 5 }, (_, i) => testEvent({ id: String(i) }));

    for (const e of appended) {
      await exact(e, testContext());
      await about(e, testContext());
    }

    expect((await entries(redis, `${prefix}orders.created`)).map((entry) => entry.dedupe_id)).toEqual(appended.slice(2).map((e) => e.dedupeId));
    expect(await redis.xlen(`${prefix}about`)).toBe(5);
  });

  it('start() warns once when the relay retries for longer than the dedupe window; refuses with dedupeWindowCheck: refuse', async () => {
    fresh();
    const warned = testStartInfo(10 * MINUTE_MILLISECONDS);
    const refused = testStartInfo(10 * MINUTE_MILLISECONDS);
    const longEnough = testStartInfo(MINUTE_MILLISECONDS);
    const off = testStartInfo(10 * MINUTE_MILLISECONDS);

    await sink({ url: own.url, dedupeWindowMs: MINUTE_MILLISECONDS }).start!(warned);
    const error = await errorOf(sink({ url: own.url, dedupeWindowMs: MINUTE_MILLISECONDS, dedupeWindowCheck: 'refuse' }).start!(refused));
    await sink({ url: own.url, dedupeWindowMs: MINUTE_MILLISECONDS, dedupeWindowCheck: 'refuse' }).start!(longEnough);
    await sink({ url: own.url, dedupeWindowMs: MINUTE_MILLISECONDS, dedupeWindowCheck: 'off' }).start!(off);

    expect(warned.warn).toHaveBeenCalledTimes(1);
    expect(warned.warn.mock.calls[0]?.[0]).toContain('dedupeWindowMs');
    expect(error).toBeInstanceOf(SinkMisconfiguredError);
    expect(error.code).toBe('SINK_MISCONFIGURED');
    expect(refused.warn).not.toHaveBeenCalled();
    expect(longEnough.warn).not.toHaveBeenCalled();
    expect(off.warn).not.toHaveBeenCalled();
  });

  it('start() warns when Redis would lose entries (no AOF) or evict dedupe records; not with configCheck: off', async () => {
    fresh();
    const admin = new Redis(own.url);
    try {
      const durable = testStartInfo(1_000);
      await sink({ url: own.url }).start!(durable);
      expect(durable.warn).not.toHaveBeenCalled();

      await admin.config('SET', 'appendonly', 'no');
      await admin.config('SET', 'maxmemory', '512mb');
      await admin.config('SET', 'maxmemory-policy', 'volatile-lru');
      const fragile = testStartInfo(1_000);
      const off = testStartInfo(1_000);
      await sink({ url: own.url }).start!(fragile);
      await sink({ url: own.url, configCheck: 'off' }).start!(off);

      const warnings = fragile.warn.mock.calls.map(([message]) => message);
      expect(warnings).toHaveLength(2);
      expect(warnings[0]).toContain('appendonly');
      expect(warnings[1]).toContain('volatile-lru');
      expect(off.warn).not.toHaveBeenCalled();
    } finally {
      await admin.config('SET', 'maxmemory', '0');
      await admin.config('SET', 'maxmemory-policy', 'noeviction');
      await admin.config('SET', 'appendonly', 'yes');
      admin.disconnect();
    }
  });

  it('an append to a key of another type fails with DeliveryFailedError and leaves no dedupe record, so the retry appends', async () => {
    fresh();
    const deliver = sink();
    const stream = `${prefix}orders.created`;
    await redis.set(stream, 'not a stream');
    const once = testEvent();

    const error = await errorOf(deliver(once, testContext()));
    await redis.del(stream);
    await deliver(once, testContext());

    expect(error).toBeInstanceOf(DeliveryFailedError);
    expect(error.message).toContain('WRONGTYPE');
    expect(await redis.xlen(stream)).toBe(1);
  });

  it('an aborted delivery fails with DeliveryFailedError and appends nothing', async () => {
    fresh();
    const controller = new AbortController();
    controller.abort(new Error('relay shutting down'));

    const error = await errorOf(sink()(testEvent(), { attempt: 1, signal: controller.signal }));

    expect(error).toBeInstanceOf(DeliveryFailedError);
    expect(error.message).toContain('aborted');
    expect(await redis.exists(`${prefix}orders.created`)).toBe(0);
  });

  it('an unreachable server fails start() and deliveries with DeliveryFailedError within seconds, password hidden', async () => {
    fresh();
    const unreachable = sink({ url: 'redis://:secret-pw@127.0.0.1:1', timeoutMs: 1_000 });
    const startedAt = Date.now();

    const startError = await errorOf(unreachable.start!(testStartInfo(1_000)));
    const deliveryError = await errorOf(unreachable(testEvent(), testContext()));
    await unreachable.close!();

    expect(startError).toBeInstanceOf(DeliveryFailedError);
    expect(startError.message).not.toContain('secret-pw');
    expect(deliveryError).toBeInstanceOf(DeliveryFailedError);
    expect(deliveryError.code).toBe('DELIVERY_FAILED');
    expect(Date.now() - startedAt).toBeLessThan(5_000);
  });

  it('close() quits; later deliveries fail and a second close() is harmless', async () => {
    fresh();
    const deliver = sink();
    await deliver(testEvent(), testContext());

    await deliver.close!();
    await deliver.close!();
    const error = await errorOf(deliver(testEvent(), testContext()));

    expect(error).toBeInstanceOf(DeliveryFailedError);
    expect(await redis.xlen(`${prefix}orders.created`)).toBe(1);
  });
});

describe.skipIf(!redisAvailable && !redisRequired)('relay -> redisStreamSink -> Redis', () => {
  let fx: AppFixture;
  let relayUrl: string;
  let redis: Redis;
  const prefix = `once:test:${randomBytes(4).toString('hex')}:`;
  const relays: Relay[] = [];

  beforeAll(async () => {
    requireRedis();
    fx = await createAppFixture(8);
    relayUrl = await fx.database.createLoginRole('relay');
    redis = new Redis(REDIS_URL);
  });
  afterAll(async () => {
    await Promise.all(relays.map((relay) => relay.stop()));
    await deleteKeys(redis, prefix);
    redis?.disconnect();
    await fx?.close();
  });

  async function relay(sink: Sink, warnings: string[] = []): Promise<Relay> {
    await fx.database.admin.query('DELETE FROM once.outbox_events');
    const started = await startBrokerRelay(relayUrl, sink, warnings);
    relays.push(started);
    return started;
  }

  it('every event delivered twice leaves one entry per event, in the stream of its topic', async () => {
    const warnings: string[] = [];
    const sink = redisStreamSink({ url: REDIS_URL, stream: (e) => `${prefix}${e.topic}`, dedupeKeyPrefix: `${prefix}dedupe:`, configCheck: 'off' });
    const streams = await relay(twiceSink(sink), warnings);
    const created = await fillOutbox(fx.app, { count: 150, tenants: 3, topic: 'orders.created' });
    const paid = await fillOutbox(fx.app, { count: 50, tenants: 3, topic: 'orders.paid' });
    await waitForOutbox(fx.database.admin, (c) => c.delivered === 200);
    await streams.stop();

    expect(warnings).toEqual([]);
    for (const [topic, refs] of [
      ['orders.created', created],
      ['orders.paid', paid],
    ] as const) {
      const stored = await entries(redis, `${prefix}${topic}`);
      expect(stored).toHaveLength(refs.length);
      expect(new Set(stored.map((entry) => `${entry.tenant}/${entry.dedupe_id}`))).toEqual(new Set(refs.map((ref) => `${ref.tenantId}/${ref.dedupeId}`)));
    }
  });

  it('Redis killed (SIGKILL) and restarted mid-stream: every event in the stream once, nothing lost', async () => {
    const COUNT = 1_000;
    const own = await startRedisServer();
    try {
      const warnings: string[] = [];
      const sink = redisStreamSink({ url: own.url, stream: 'events', timeoutMs: 2_000 });
      // Paced, so the stream is still flowing when the server dies.
      const paced = pacedSink(sink, 5);
      const started = await relay(paced, warnings);
      const refs = await fillOutbox(fx.app, { count: COUNT, tenants: 4, orderingKeys: 20 });

      const atCrash = await waitForOutbox(fx.database.admin, (c) => c.delivered >= 200, 30_000);
      await own.crashAndRestart(500);
      const counts = await waitForOutbox(fx.database.admin, (c) => c.delivered === COUNT, 120_000);
      await started.stop();

      expect(warnings).toEqual([]);
      expect(atCrash.delivered).toBeLessThan(COUNT);
      expect(counts).toEqual({ pending: 0, delivered: COUNT, dead: 0 });
      const check = new Redis(own.url);
      try {
        const stored = await entries(check, 'events');
        expect(stored).toHaveLength(COUNT);
        expect(new Set(stored.map((entry) => entry.dedupe_id))).toEqual(new Set(refs.map((ref) => ref.dedupeId)));
      } finally {
        check.disconnect();
      }
      console.info(`redis relay test: ${COUNT} events, crash at ${atCrash.delivered} delivered, ${paced.failures()} failed attempts`);
    } finally {
      await own.stop();
    }
  });
});

describe('redisStreamSink options', () => {
  const issuesOf = (options: unknown) => optionIssues(redisStreamSink, options);
  const url = 'redis://127.0.0.1';

  it('fails with InvalidOptionsError naming every bad option, without connecting', () => {
    expect(issuesOf({})).toEqual(['url']);
    expect(issuesOf({ url: 'http://redis' })).toEqual(['url']);
    expect(issuesOf({ url, stream: '' })).toEqual(['stream']);
    expect(issuesOf({ url, maxLen: 0 })).toEqual(['maxLen']);
    expect(issuesOf({ url, dedupeWindowMs: 1.5 })).toEqual(['dedupeWindowMs']);
    expect(issuesOf({ url, dedupeWindowCheck: 'ignore' })).toEqual(['dedupeWindowCheck']);
    expect(issuesOf({ url, configCheck: 'refuse' })).toEqual(['configCheck']);
    expect(issuesOf({ url, redisOptions: 'x' })).toEqual(['redisOptions']);
    expect(issuesOf({ url, timeoutMs: 0 })).toEqual(['timeoutMs']);
    expect(issuesOf({ url, consumerGroup: 'g' })).toEqual(['consumerGroup']);
  });

  it('the hand-written options interface matches the schema', () => {
    expectTypeOf<z.input<typeof redisStreamSinkOptionsSchema>>().toEqualTypeOf<RedisStreamSinkOptions>();
  });
});
