/** Helpers for relay tests: filling the outbox as the application, and waiting for the relay. */
import type { Kysely } from 'kysely';
import type pg from 'pg';
import { enqueue, withTenant } from '../../src/index.ts';

export interface EnqueuedRef {
  tenantId: string;
  id: string;
  dedupeId: string;
  orderingKey?: string;
  seq: number;
}

/** Enqueues `count` events spread over `tenants`, `perTransaction` to a transaction. */
export async function fillOutbox(
  app: Kysely<any>,
  options: { count: number; tenants: number; perTransaction?: number; topic?: string; orderingKeys?: number },
): Promise<EnqueuedRef[]> {
  const perTransaction = options.perTransaction ?? 10;
  const refs: EnqueuedRef[] = [];
  const batches: Promise<void>[] = [];
  for (let start = 0; start < options.count; start += perTransaction) {
    const tenantId = `tenant-${(start / perTransaction) % options.tenants}`;
    batches.push(
      withTenant(app, tenantId, async (tx) => {
        for (let seq = start; seq < Math.min(start + perTransaction, options.count); seq += 1) {
          const orderingKey = options.orderingKeys ? `key-${seq % options.orderingKeys}` : undefined;
          const { id, dedupeId } = await enqueue(tx, {
            topic: options.topic ?? 'test.event',
            payload: { seq },
            ...(orderingKey ? { orderingKey } : {}),
          });
          refs.push({ tenantId, id, dedupeId, seq, ...(orderingKey ? { orderingKey } : {}) });
        }
      }),
    );
    if (batches.length >= 8) await Promise.all(batches.splice(0));
  }
  await Promise.all(batches);
  return refs;
}

/** Waits until `predicate` holds on the outbox counts, or fails after `timeoutMs`. */
export async function waitForOutbox(
  admin: pg.Pool,
  predicate: (counts: { pending: number; delivered: number; dead: number }) => boolean,
  timeoutMs = 30_000,
): Promise<{ pending: number; delivered: number; dead: number }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { rows } = await admin.query<{ pending: string; delivered: string; dead: string }>(`
      SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
             count(*) FILTER (WHERE status = 'delivered') AS delivered,
             count(*) FILTER (WHERE status = 'dead') AS dead
        FROM once.outbox_events`);
    const counts = { pending: Number(rows[0]!.pending), delivered: Number(rows[0]!.delivered), dead: Number(rows[0]!.dead) };
    if (predicate(counts)) return counts;
    if (Date.now() > deadline) throw new Error(`outbox did not reach the expected state in time: ${JSON.stringify(counts)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
