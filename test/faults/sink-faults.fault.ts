/**
 * Scenario 5, sink faults. HTTP: a receiver that times out, answers 500, 503 and 429 with
 * Retry-After, drops the connection mid-response or before answering, or accepts and then answers
 * too slowly; the relay keeps retrying, and the downstream system behind the receiver, deduping
 * by webhook-id, gets every event, each under its one dedupe id. NATS: a JetStream server of the
 * test's own that is not running when the relay starts delivering, and later stops and comes
 * back; every event ends up in the stream exactly once (Nats-Msg-Id = dedupe id).
 */
import { randomBytes } from 'node:crypto';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import { httpSink, natsSink, OnceError, startRelay, type DeliveryContext, type DeliveryEvent, type Relay } from '../../src/index.ts';
import { createAppFixture, type AppFixture } from '../support/app-fixture.ts';
import { fillOutbox, waitForOutbox } from '../support/outbox-helpers.ts';
import { FAULT_MODES, startFaultReceiver, type FaultMode } from './support/fault-receiver.ts';
import { recordFigures } from './support/figures.ts';
import { natsProcess, natsServerAvailable } from './support/nats-process.ts';
import { random, scaled, sleep } from './support/scale.ts';

const HTTP_EVENTS = scaled(1_000, 100);
const NATS_EVENTS = scaled(1_000, 100);
const NATS_REQUIRED = Boolean(process.env.CI || process.env.ONCE_REQUIRE_SERVICES);
const NATS_AVAILABLE = natsServerAvailable();

let fx: AppFixture;
let relayUrl: string;
const relays: Relay[] = [];
const silent = { warn: () => {}, error: () => {} };

beforeAll(async () => {
  fx = await createAppFixture(8);
  relayUrl = await fx.database.createLoginRole('relay');
});
beforeEach(async () => {
  await fx.database.admin.query('DELETE FROM once.outbox_events');
});
afterAll(async () => {
  await Promise.all(relays.map((relay) => relay.stop()));
  await fx?.close();
});

it(`HTTP sink faults: ${HTTP_EVENTS} events through timeouts, 500/503/429 + Retry-After, dropped connections and slow answers`, async () => {
  const rng = random(5);
  const SINK_TIMEOUT_MS = 400;
  const receiver = await startFaultReceiver({ slowAcceptMs: SINK_TIMEOUT_MS * 3, retryAfterSeconds: 1 });
  const faults = FAULT_MODES.filter((mode) => mode !== 'ok');
  // Six attempts in ten meet a fault; from the sixth attempt on an event goes through, so the
  // run ends (the relay's own maxAttempts, 25, is never the limit here).
  receiver.choose = (_request, attempt) => (attempt >= 6 || rng.chance(0.4) ? 'ok' : rng.pick(faults));
  const relayLogs: string[] = [];
  try {
    const refs = await fillOutbox(fx.app, { count: HTTP_EVENTS, tenants: 10, topic: 'sink.http' });
    const relay = await startRelay({
      connectionString: relayUrl,
      sinks: { '>': httpSink({ url: receiver.url, secret: receiver.secret, timeoutMs: SINK_TIMEOUT_MS }) },
      concurrency: 32,
      leaseMs: 2_000,
      deliveryTimeoutMs: 3_000,
      backoff: { initialMs: 20, maxMs: 200 },
      handleSignals: false,
      sweep: false,
      logger: {
        warn: (message: string) => relayLogs.push(message),
        error: (message: string, error: unknown) => relayLogs.push(`${message} ${(error as { code?: string } | undefined)?.code ?? ''}`),
      },
    });
    relays.push(relay);
    const counts = await waitForOutbox(fx.database.admin, (c) => c.pending === 0, 120_000);
    await relay.stop();

    const seqOf = new Map(refs.map((ref) => [ref.dedupeId, ref.seq]));
    const mismatched = receiver.requests.filter(
      (r) => r.webhookId !== r.idempotencyKey || r.webhookId !== r.body.id || seqOf.get(r.webhookId) !== r.body.data.seq,
    ).length;
    const lost = refs.filter((ref) => !receiver.processed.has(ref.dedupeId)).length;
    const byMode = Object.fromEntries(FAULT_MODES.map((mode) => [mode, receiver.requests.filter((r) => r.mode === mode).length]));
    // How long the relay waited before trying an event again after a 429 with `Retry-After: 1`
    // (the 503s carry an HTTP date, whose one-second resolution makes their wait 0-1 s).
    const gaps: number[] = [];
    receiver.requests.forEach((request, index) => {
      if (request.mode !== '429') return;
      const next = receiver.requests.slice(index + 1).find((r) => r.webhookId === request.webhookId);
      if (next) gaps.push(next.at - request.at);
    });
    const { rows } = await fx.database.admin.query<{ max: number }>('SELECT max(attempts) AS max FROM once.outbox_events');

    recordFigures({
      scenario: '5a sink faults (HTTP)',
      operations: HTTP_EVENTS,
      faults: receiver.requests.filter((r) => r.mode !== 'ok').length,
      lost,
      doubled: mismatched,
      detail: {
        requests: receiver.requests.length,
        faults_by_mode: Object.fromEntries(Object.entries(byMode).filter(([mode]) => mode !== 'ok')),
        processed_again_and_dropped: [...receiver.processed.values()].reduce((sum, n) => sum + n - 1, 0),
        min_wait_after_429_retry_after_1s_ms: gaps.length ? Math.min(...gaps) : null,
        max_attempts: rows[0]!.max,
        unverified: receiver.unverified,
        relay_errors_logged: relayLogs.length,
        settle_deadlocks: relayLogs.filter((line) => line.includes('40P01')).length,
      },
    });

    expect(receiver.unverified).toBe(0);
    expect({ lost, doubled: mismatched }).toEqual({ lost: 0, doubled: 0 });
    expect(counts).toEqual({ pending: 0, delivered: HTTP_EVENTS, dead: 0 });
    for (const mode of FAULT_MODES) expect(byMode[mode as FaultMode], mode).toBeGreaterThan(0);
  } finally {
    await receiver.close();
  }
});

it.skipIf(!NATS_AVAILABLE && !NATS_REQUIRED)(`NATS unavailable, then back: ${NATS_EVENTS} events into JetStream exactly once`, async () => {
  if (!NATS_AVAILABLE) throw new Error('nats-server is not on PATH, and CI/ONCE_REQUIRE_SERVICES requires this scenario.');
  const nats = await natsProcess();
  const subject = `once.fault.${randomBytes(4).toString('hex')}`;
  const stream = `once_fault_${randomBytes(4).toString('hex')}`;
  try {
    // The built-in sink checks the stream when the relay starts: with nothing listening the
    // relay refuses to start (fail fast), with a coded error.
    const refused = await startRelay({
      connectionString: relayUrl,
      sinks: { '>': natsSink({ servers: nats.url, subject }) },
      handleSignals: false,
      sweep: false,
      logger: silent,
    }).then(
      (relay) => relay.stop().then(() => 'started'),
      (error: unknown) => (error instanceof OnceError ? error.code : `uncoded ${String(error)}`),
    );

    // The same sink without its start hook connects on first delivery instead, so a relay can run
    // while NATS is down: deliveries fail and are retried until the server is there.
    const sink = natsSink({ servers: nats.url, subject, timeoutMs: 1_000 });
    let published = 0;
    const lazy = Object.assign(
      async (event: DeliveryEvent, context: DeliveryContext) => {
        await sleep(5); // a little latency, so the stop below lands mid-delivery
        await sink(event, context);
        published += 1;
      },
      { close: sink.close! },
    );
    const relay = await startRelay({
      connectionString: relayUrl,
      sinks: { '>': lazy },
      concurrency: 4,
      leaseMs: 2_000,
      deliveryTimeoutMs: 3_000,
      backoff: { initialMs: 50, maxMs: 400 },
      maxAttempts: 100,
      handleSignals: false,
      sweep: false,
      logger: silent,
    });
    relays.push(relay);

    // Phase 1: nothing listens on the port.
    const firstHalf = Math.floor(NATS_EVENTS / 2);
    const refs = await fillOutbox(fx.app, { count: firstHalf, tenants: 10, topic: 'sink.nats' });
    const failedAttempts = async () =>
      Number((await fx.database.admin.query<{ n: string }>('SELECT coalesce(sum(attempts), 0) AS n FROM once.outbox_events')).rows[0]!.n);
    const deadline = Date.now() + 20_000;
    while ((await failedAttempts()) < firstHalf * 2 && Date.now() < deadline) await sleep(50);
    const attemptsWhileDown = await failedAttempts();
    await nats.start();
    const nc = await connect({ servers: nats.url });
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: stream, subjects: [subject], duplicate_window: 10 * 60 * 1_000_000_000 });
    await nc.close();
    await waitForOutbox(fx.database.admin, (c) => c.delivered === firstHalf, 60_000);

    // Phase 2: the server stops (cleanly) mid-delivery and comes back 1.5 s later.
    refs.push(...(await fillOutbox(fx.app, { count: NATS_EVENTS - firstHalf, tenants: 10, topic: 'sink.nats' })));
    while (published < firstHalf + 20) await sleep(1);
    const publishedBeforeStop = published;
    await nats.stop();
    await sleep(1_500);
    await nats.start();
    const counts = await waitForOutbox(fx.database.admin, (c) => c.pending === 0, 90_000);
    await relay.stop();

    // What JetStream stored: every message with its Nats-Msg-Id.
    const reader = await connect({ servers: nats.url });
    const info = await (await jetstreamManager(reader)).streams.info(stream);
    const ids: string[] = [];
    const readerJsm = await jetstreamManager(reader);
    for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq += 1) {
      const message = await readerJsm.streams.getMessage(stream, { seq });
      if (message) ids.push(message.header.get('Nats-Msg-Id'));
    }
    await reader.close();
    const stored = new Set(ids);
    const lost = refs.filter((ref) => !stored.has(ref.dedupeId)).length;
    const doubled = ids.length - stored.size;

    recordFigures({
      scenario: '5b sink faults (NATS)',
      operations: NATS_EVENTS,
      faults: 2,
      lost,
      doubled,
      detail: {
        relay_start_while_down: refused,
        attempts_while_down: attemptsWhileDown,
        published_before_stop: publishedBeforeStop,
        stream_messages: info.state.messages,
        publishes: published,
      },
    });

    expect(refused).toBe('DELIVERY_FAILED');
    expect(attemptsWhileDown).toBeGreaterThan(firstHalf);
    expect({ lost, doubled }).toEqual({ lost: 0, doubled: 0 });
    expect(info.state.messages).toBe(NATS_EVENTS);
    expect(counts).toEqual({ pending: 0, delivered: NATS_EVENTS, dead: 0 });
    expect(publishedBeforeStop).toBeLessThan(NATS_EVENTS);
  } finally {
    await nats.close();
  }
});
