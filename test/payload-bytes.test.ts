/**
 * Outbox payloads are delivered as written (sql/0009): the bytes a receiver gets are the bytes
 * JSON.stringify gave for the payload passed to enqueue, keys in the application's order, not
 * jsonb's (which sorts keys by length, then bytes, and normalises numbers). Compared as JSON text,
 * never only by deep equality.
 */
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enqueue, httpSink, startRelay, verifyWebhook, withTenant, type DeliveryEvent, type Relay } from '../src/index.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { waitForOutbox } from './support/outbox-helpers.ts';

let fx: AppFixture;
let relayUrl: string;

beforeAll(async () => {
  fx = await createAppFixture(4);
  relayUrl = await fx.database.createLoginRole('relay');
});
afterAll(async () => {
  await fx?.close();
});

/** Payloads whose jsonb form differs from their JSON text: key order, long before short, nesting, numbers, escapes. */
const PAYLOADS: unknown[] = [
  { zebra: 1, apple: 2, mango: { z: true, a: false, m: null } },
  { 'a longer key first': 'x', b: 'y', '10': 'integer-like keys come first in JS', '2': 'and sort numerically' },
  { amount: 12.5, tiny: 1e-7, big: 1e21, negative: -0.1, list: [{ y: 1, x: 2 }, 'é', '日本', '"quoted" \\ slash\n'] },
  { nested: { deeper: { deepest: { b: 2, a: 1 } } }, empty: {}, none: [] },
  ['an', 'array', { at: 'the root', also: 'works' }],
  'a bare string',
  42,
  null,
];

async function enqueueAll(tenantId: string, payloads: readonly unknown[], orderingKey?: string): Promise<void> {
  await withTenant(fx.app, tenantId, async (tx) => {
    for (const payload of payloads) await enqueue(tx, { topic: 'bytes.test', payload, ...(orderingKey ? { orderingKey } : {}) });
  });
}

async function drainWith(sink: (event: DeliveryEvent) => Promise<void>, count: number): Promise<void> {
  let relay: Relay | undefined;
  try {
    relay = await startRelay({
      connectionString: relayUrl,
      sinks: { '>': sink },
      handleSignals: false,
      sweep: false,
      logger: { warn: () => {}, error: () => {} },
    });
    await waitForOutbox(fx.database.admin, (c) => c.delivered === count, 30_000);
  } finally {
    await relay?.stop();
  }
}

describe('outbox payloads as written', () => {
  it('stores the JSON text enqueue wrote beside the jsonb, which reorders it', async () => {
    await fx.database.admin.query('DELETE FROM once.outbox_events');
    await enqueueAll('tenant-a', [PAYLOADS[0]]);
    const { rows } = await fx.database.admin.query<{ payload_text: string; jsonb_text: string }>(
      'SELECT payload_text, payload::text AS jsonb_text FROM once.outbox_events',
    );
    expect(rows).toHaveLength(1);
    expect(rows[0]!.payload_text).toBe(JSON.stringify(PAYLOADS[0]));
    // What the relay delivered before sql/0009: the same value, other bytes.
    expect(rows[0]!.jsonb_text).not.toBe(JSON.stringify(PAYLOADS[0]));
    expect(JSON.parse(rows[0]!.jsonb_text)).toEqual(PAYLOADS[0]);
  });

  it('hands sinks payloads whose JSON text is the text enqueue wrote, keyed and unkeyed, across tenants', async () => {
    await fx.database.admin.query('DELETE FROM once.outbox_events');
    await enqueueAll('tenant-a', PAYLOADS);
    await enqueueAll('tenant-b', PAYLOADS, 'key-1');
    const seen = new Map<string, string[]>();
    await drainWith(async (event) => {
      const list = seen.get(event.tenantId) ?? [];
      list.push(JSON.stringify(event.payload));
      seen.set(event.tenantId, list);
    }, PAYLOADS.length * 2);
    const expected = PAYLOADS.map((payload) => JSON.stringify(payload));
    expect([...(seen.get('tenant-a') ?? [])].sort()).toEqual([...expected].sort());
    expect(seen.get('tenant-b')).toEqual(expected); // keyed: in commit order, too
  });

  it('sends the bytes through httpSink: the signed body carries the payload text verbatim', async () => {
    await fx.database.admin.query('DELETE FROM once.outbox_events');
    const secret = `whsec_${randomBytes(32).toString('base64')}`;
    const bodies: string[] = [];
    const server: Server = createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        try {
          verifyWebhook(request.headers as Record<string, string>, raw, secret);
          bodies.push(raw);
          response.writeHead(204).end();
        } catch {
          response.writeHead(401).end();
        }
      });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      await enqueueAll('tenant-c', PAYLOADS);
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`;
      let relay: Relay | undefined;
      try {
        relay = await startRelay({
          connectionString: relayUrl,
          sinks: { '>': httpSink({ url, secret }) },
          handleSignals: false,
          sweep: false,
          logger: { warn: () => {}, error: () => {} },
        });
        await waitForOutbox(fx.database.admin, (c) => c.delivered === PAYLOADS.length, 30_000);
      } finally {
        await relay?.stop();
      }
      expect(bodies).toHaveLength(PAYLOADS.length);
      for (const payload of PAYLOADS) {
        const text = JSON.stringify(payload);
        expect(bodies.filter((body) => body.includes(`"data":${text}`))).toHaveLength(1);
      }
    } finally {
      server.close();
    }
  });

  it('still delivers rows written before sql/0009 (payload_text NULL) from the jsonb', async () => {
    await fx.database.admin.query('DELETE FROM once.outbox_events');
    await enqueueAll('tenant-d', [PAYLOADS[0], PAYLOADS[2]]);
    await fx.database.admin.query('UPDATE once.outbox_events SET payload_text = NULL');
    const payloads: unknown[] = [];
    await drainWith(async (event) => void payloads.push(event.payload), 2);
    expect(payloads).toEqual(expect.arrayContaining([PAYLOADS[0], PAYLOADS[2]]));
  });
});
