/**
 * Runs the orders API (orders-api.ts) end to end: a real Postgres (embedded unless
 * --database-url is given), pg-once migrated, the API on Hono's Node server, the relay delivering
 * `orders.created` events as signed webhooks to a receiver (examples/webhook-receiver.ts). Then it
 * plays a client whose network is unreliable: every order is POSTed twice with one key, once
 * concurrently, and checks that each order and each event exists once and that every retry got
 * the first answer's bytes. `--serve` keeps the API running afterwards (Ctrl-C stops it).
 *
 *   node examples/http-api/main.ts [--database-url postgres://...] [--serve]
 */
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { parseArgs } from 'node:util';
import { serve } from '@hono/node-server';
import { Kysely, PostgresDialect } from 'kysely';
import { httpSink, startRelay } from '../../src/index.ts';
import { openDemoDatabase } from '../demo/database.ts';
import { quietPool } from '../demo/quiet-pool.ts';
import { startWebhookReceiver } from '../webhook-receiver.ts';
import { ordersApi, type Database } from './orders-api.ts';

const { values } = parseArgs({ options: { 'database-url': { type: 'string' }, serve: { type: 'boolean', default: false } } });
const ORDERS = 10;
const secret = `whsec_${Buffer.from(randomUUID()).toString('base64')}`;

const database = await openDemoDatabase({ databaseUrl: values['database-url'] ?? process.env.DATABASE_URL, keep: false });
const delivered: string[] = [];
const receiver = await startWebhookReceiver({ secret, onEvent: (event) => void delivered.push(event.id) });
const relay = await startRelay({
  connectionString: database.relayUrl,
  sinks: { 'orders.*': httpSink({ url: receiver.url, secret }) },
  sweep: false,
  handleSignals: false,
});
const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: quietPool(database.appUrl, 8) }) });
const server = serve({ fetch: ordersApi({ db, tokens: new Map([['token-acme', 'acme']]) }).fetch, port: 0, hostname: '127.0.0.1' }) as Server;
await once(server, 'listening');
const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
console.log(`orders API at ${url} (${database.description}); relay -> ${receiver.url}`);

const post = async (key: string, amountCents: number) => {
  const response = await fetch(`${url}/orders`, {
    method: 'POST',
    headers: { authorization: 'Bearer token-acme', 'content-type': 'application/json', 'idempotency-key': key },
    body: JSON.stringify({ customer: 'ada', items: ['book'], amountCents }),
  });
  return {
    status: response.status,
    replayed: response.headers.get('idempotent-replayed') === 'true',
    body: await response.text(),
    retryAfter: response.headers.get('retry-after'),
  };
};

let ok = true;
const check = (what: string, passed: boolean) => {
  console.log(`  ${passed ? 'ok  ' : 'FAIL'} ${what}`);
  ok &&= passed;
};
try {
  let identical = 0;
  let conflicts = 0;
  for (let i = 0; i < ORDERS; i += 1) {
    const key = randomUUID();
    // The first attempt and a retry sent before its answer came back: the retry gets 409 with
    // Retry-After (or, if the first had committed, its answer), and a later retry the answer.
    const [first, early] = await Promise.all([post(key, 100 + i), post(key, 100 + i)]);
    const winner = first.status === 201 && !first.replayed ? first : early;
    if (first.status === 409 || early.status === 409) conflicts += 1;
    const late = await post(key, 100 + i);
    if (late.replayed && late.body === winner.body) identical += 1;
  }
  const changed = await post('reused-key', 1);
  const reused = await post('reused-key', 2);
  const missing = await fetch(`${url}/orders`, { method: 'POST', headers: { authorization: 'Bearer token-acme' }, body: '{}' });
  const count = (await (await fetch(`${url}/orders/count`, { headers: { authorization: 'Bearer token-acme' } })).json()) as { orders: number };

  for (let waited = 0; delivered.length < count.orders && waited < 100; waited += 1) await new Promise((resolve) => setTimeout(resolve, 100));
  console.log(`  ${ORDERS} orders POSTed 3 times each (${conflicts} retries met the first in flight: 409 + Retry-After)`);
  check(`orders stored = ${ORDERS + 1} (one per key)`, count.orders === ORDERS + 1 && changed.status === 201);
  check(`late retries replayed the first answer byte for byte: ${identical}/${ORDERS}`, identical === ORDERS);
  check(`same key, other body: ${reused.status} ${JSON.parse(reused.body).code}`, reused.status === 422);
  check(`POST without Idempotency-Key: ${missing.status}`, missing.status === 400);
  check(`events delivered by the relay = orders (${delivered.length})`, delivered.length === count.orders);
  if (values.serve) {
    console.log(
      `serving ${url} until Ctrl-C; try:\n  curl -i -X POST ${url}/orders -H 'authorization: Bearer token-acme' -H "idempotency-key: $(uuidgen)" -H 'content-type: application/json' -d '{"customer":"ada","items":["book"],"amountCents":100}'`,
    );
    await once(process, 'SIGINT');
  }
} finally {
  server.close();
  await relay.stop();
  await db.destroy();
  await receiver.close();
  await database.close();
}
console.log(ok ? 'PASS' : 'FAIL');
process.exitCode = ok ? 0 : 1;
