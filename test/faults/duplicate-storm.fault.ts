/**
 * Scenario 1, duplicate storm: 10,000 calls over 100 tenants, every intent sent 1-8 times,
 * duplicates interleaved and concurrent, fn failing at random after its writes (transient
 * failures roll back; permanent ones are stored and replayed as errors). Afterwards the business
 * rows are exactly the intents some call saw succeed, each once, and the outbox holds one event
 * per row.
 */
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { enqueue, IdempotencyInProgressError, runIdempotent, StoredCallError, withTenant } from '../../src/index.ts';
import { createAppFixture, type AppFixture } from '../support/app-fixture.ts';
import { recordFigures } from './support/figures.ts';
import { random, scaled } from './support/scale.ts';

const TENANTS = 100;
const CALLS = scaled(10_000, 100);
/** Callers at once; copies of one intent are launched close together, so many overlap. */
const CONCURRENCY = 32;
/** Copies of an intent are spread over about this many neighbouring positions of the call order. */
const SPREAD = 40;
const TRANSIENT_FAILURE_RATE = 0.12;
const PERMANENT_FAILURE_RATE = 0.03;

class TransientFailure extends Error {}
class PermanentFailure extends Error {}

interface Intent {
  tenant: string;
  key: string;
  amount: number;
  successes: { outcome: 'executed' | 'replayed'; waited: boolean; nonce: string; amount: number }[];
  storedFailures: number;
  transientFailures: number;
  inProgress: number;
  unexpected: unknown[];
}

let fx: AppFixture;
beforeAll(async () => {
  fx = await createAppFixture(CONCURRENCY);
});
afterAll(async () => {
  await fx?.close();
});

it(`duplicate storm: ${CALLS} calls over ${TENANTS} tenants, each intent 1-8 times, random fn failures`, async () => {
  const rng = random(1);
  const intents: Intent[] = [];
  const calls: { intent: Intent; position: number; fail: 'none' | 'transient' | 'permanent' }[] = [];
  while (calls.length < CALLS) {
    const index = intents.length;
    const intent: Intent = {
      tenant: `storm-tenant-${index % TENANTS}`,
      key: `storm:${index}:charge_card`,
      amount: rng.int(1, 1_000_000),
      successes: [],
      storedFailures: 0,
      transientFailures: 0,
      inProgress: 0,
      unexpected: [],
    };
    intents.push(intent);
    const copies = Math.min(rng.int(1, 8), CALLS - calls.length);
    for (let copy = 0; copy < copies; copy += 1) {
      const roll = rng.next();
      const fail = roll < PERMANENT_FAILURE_RATE ? 'permanent' : roll < PERMANENT_FAILURE_RATE + TRANSIENT_FAILURE_RATE ? 'transient' : 'none';
      calls.push({ intent, position: index + rng.next() * SPREAD, fail });
    }
  }
  calls.sort((a, b) => a.position - b.position);

  let injected = 0;
  let next = 0;
  const worker = async () => {
    while (next < calls.length) {
      const { intent, fail } = calls[next++]!;
      try {
        const result = await withTenant(fx.app, intent.tenant, (tx) =>
          runIdempotent.detailed(
            tx,
            intent.key,
            async (t) => {
              await sql`INSERT INTO orders (key, amount) VALUES (${intent.key}, ${intent.amount})`.execute(t);
              await enqueue(t, { topic: 'storm.charged', payload: { key: intent.key, amount: intent.amount } });
              if (fail === 'transient') {
                injected += 1;
                throw new TransientFailure('card network timeout');
              }
              if (fail === 'permanent') {
                injected += 1;
                throw new PermanentFailure('card declined');
              }
              return { nonce: randomUUID(), amount: intent.amount };
            },
            { request: { key: intent.key, amount: intent.amount }, tool: 'charge_card', storeError: (error) => error instanceof PermanentFailure },
          ),
        );
        intent.successes.push({ outcome: result.outcome, waited: result.waited, nonce: result.value.nonce, amount: result.value.amount });
      } catch (error) {
        if (error instanceof TransientFailure) intent.transientFailures += 1;
        else if (error instanceof PermanentFailure || error instanceof StoredCallError) intent.storedFailures += 1;
        else if (error instanceof IdempotencyInProgressError) intent.inProgress += 1;
        else intent.unexpected.push(error);
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));

  const { rows: orderRows } = await fx.database.admin.query<{ tenant_id: string; key: string; rows: string; amount: number }>(
    'SELECT tenant_id, key, count(*) AS rows, min(amount) AS amount FROM public.orders GROUP BY tenant_id, key',
  );
  const { rows: eventRows } = await fx.database.admin.query<{ tenant_id: string; key: string; events: string }>(
    "SELECT tenant_id, payload->>'key' AS key, count(*) AS events FROM once.outbox_events GROUP BY 1, 2",
  );
  const orders = new Map(orderRows.map((row) => [`${row.tenant_id}\u0000${row.key}`, { rows: Number(row.rows), amount: row.amount }]));
  const events = new Map(eventRows.map((row) => [`${row.tenant_id}\u0000${row.key}`, Number(row.events)]));

  let lost = 0;
  let doubled = 0;
  let phantom = 0;
  let succeeded = 0;
  const unexpected: unknown[] = [];
  for (const intent of intents) {
    unexpected.push(...intent.unexpected);
    const stored = orders.get(`${intent.tenant}\u0000${intent.key}`) ?? { rows: 0, amount: 0 };
    const eventCount = events.get(`${intent.tenant}\u0000${intent.key}`) ?? 0;
    const ok = intent.successes.length > 0;
    if (ok) succeeded += 1;
    const executions = intent.successes.filter((s) => s.outcome === 'executed').length;
    const nonces = new Set(intent.successes.map((s) => s.nonce));
    if (ok && stored.rows === 0) lost += 1;
    if (stored.rows > 1 || eventCount > 1 || executions > 1 || nonces.size > 1 || (ok && intent.storedFailures > 0)) doubled += 1;
    if (!ok && stored.rows > 0) phantom += 1;
    if (stored.rows !== eventCount) phantom += 1;
  }
  const all = intents.flatMap((intent) => intent.successes);
  recordFigures({
    scenario: '1 duplicate storm',
    operations: calls.length,
    faults: injected,
    lost,
    doubled,
    detail: {
      tenants: TENANTS,
      intents: intents.length,
      succeeded,
      rows: orderRows.reduce((sum, row) => sum + Number(row.rows), 0),
      executed: all.filter((s) => s.outcome === 'executed').length,
      replayed: all.filter((s) => s.outcome === 'replayed').length,
      waited: all.filter((s) => s.waited).length,
      stored_failures_seen: intents.reduce((sum, i) => sum + i.storedFailures, 0),
      in_progress: intents.reduce((sum, i) => sum + i.inProgress, 0),
      phantom,
      unexpected: unexpected.length,
    },
  });

  expect(unexpected.map(String).slice(0, 5)).toEqual([]);
  expect({ lost, doubled, phantom }).toEqual({ lost: 0, doubled: 0, phantom: 0 });
  expect(orderRows.reduce((sum, row) => sum + Number(row.rows), 0)).toBe(succeeded);
  // Every idempotency record left behind is settled: no claim stuck in progress.
  expect(await fx.rows('idempotency_keys', "status = 'in_progress'")).toEqual([]);
});
