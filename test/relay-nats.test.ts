/**
 * End to end: outbox -> relay -> NATS sink -> the machine's JetStream. The relay delivers at
 * least once; JetStream drops repeats by Nats-Msg-Id (the dedupe id) within its duplicate window,
 * so the stream holds each event once however often it was published.
 * Skipped without a NATS server unless CI/ONCE_REQUIRE_SERVICES, where it fails instead.
 */
import { randomBytes } from 'node:crypto';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { natsSink, startRelay, type DeliveryContext, type DeliveryEvent, type Relay } from '../src/index.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { fillOutbox, waitForOutbox } from './support/outbox-helpers.ts';
import { NATS_URL, natsAvailable, natsRequired } from './support/nats.ts';

const required = natsRequired;
const available = natsAvailable;

describe.skipIf(!available && !required)('relay -> NATS JetStream', () => {
  let fx: AppFixture;
  let relayUrl: string;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  const stream = `once_relay_${randomBytes(4).toString('hex')}`;
  const subject = `once.relay.${randomBytes(4).toString('hex')}`;
  let relay: Relay | undefined;

  beforeAll(async () => {
    if (!available) throw new Error(`NATS is not reachable at ${NATS_URL}, and CI/ONCE_REQUIRE_SERVICES requires it.`);
    fx = await createAppFixture(4);
    relayUrl = await fx.database.createLoginRole('relay');
    nc = await connect({ servers: NATS_URL });
    jsm = await jetstreamManager(nc);
    // A duplicate window longer than the relay's retry horizon below, so no warning is due.
    await jsm.streams.add({ name: stream, subjects: [subject], duplicate_window: 10 * 60 * 1_000_000_000 });
  });
  afterAll(async () => {
    await relay?.stop();
    await jsm?.streams.delete(stream).catch(() => {});
    await nc?.close();
    await fx?.close();
  });

  it('repeated deliveries of each event leave one stream message per event', async () => {
    const refs = await fillOutbox(fx.app, { count: 50, tenants: 2 });
    const nats = natsSink({ servers: NATS_URL, subject });
    // Every event's first publish "loses its ack": the message is stored, but the relay sees a
    // failure and publishes again, under the same dedupe id.
    const published = new Map<string, number>();
    const lossyAck = Object.assign(
      async (event: DeliveryEvent, context: DeliveryContext) => {
        await nats(event, context);
        const count = (published.get(event.id) ?? 0) + 1;
        published.set(event.id, count);
        if (count === 1) throw new Error('ack lost on the way back');
      },
      { start: nats.start, close: nats.close },
    );
    const warnings: string[] = [];
    relay = await startRelay({
      connectionString: relayUrl,
      sinks: { '>': lossyAck },
      backoff: { initialMs: 5, maxMs: 50 },
      maxAttempts: 5,
      handleSignals: false,
      logger: { warn: (message: string) => warnings.push(message), error: () => {} },
    });
    await waitForOutbox(fx.database.admin, (c) => c.delivered === 50, 30_000);
    expect(warnings).toEqual([]);
    expect([...published.values()].every((count) => count === 2)).toBe(true);

    const info = await jsm.streams.info(stream);
    expect(info.state.messages).toBe(50);
    // Each stored message carries its event's dedupe id as Nats-Msg-Id.
    const ids = new Set<string>();
    for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq += 1) {
      const message = await jsm.streams.getMessage(stream, { seq });
      ids.add(message!.header!.get('Nats-Msg-Id'));
    }
    expect(ids).toEqual(new Set(refs.map((r) => r.dedupeId)));
  });
});
