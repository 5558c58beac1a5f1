/**
 * enqueue: writes an outbox event in the caller's transaction, so the event exists if and only if
 * the business writes commit. Delivery (the relay) reads it from there.
 */
import { randomUUID } from 'node:crypto';
import type { Transaction } from 'kysely';
import { kyselyClient } from '../drivers/kysely-driver.ts';
import { InvalidOptionsError, NotInTransactionError, translateDatabaseError } from '../errors.ts';
import { callContext } from '../idempotency/call-context.ts';
import type { TransactionClient } from '../internal/transaction-client.ts';
import { JsonTextError, toJsonText } from '../internal/json-text.ts';
import { parseOptions } from '../options.ts';
import { type OutboxEvent, outboxEventSchema } from './outbox-event.ts';
import { dedupeIdProblem, deriveDedupeId } from './dedupe-id.ts';

/**
 * Events that share an ordering key must be delivered in COMMIT order, but ids are handed out at
 * insert time, and two writers can commit in the other order. So a writer enqueueing on a key
 * first takes a transaction-level advisory lock on (tenant, key), held until it commits or rolls
 * back: writers of one key commit one after another, and their ids follow their commit order,
 * which lets the relay deliver a key's events in id order. Taken in the same statement as the
 * INSERT (the CTE runs before the row, and its id, is produced), so it costs no round trip.
 * Writers of different keys never wait for each other; events without a key take no lock.
 */
const ORDERING_LOCK_SEED = 0x6f6e6365;

/** Largest payload accepted, in bytes of JSON (1 MiB): the outbox is not a blob store. */
export const MAX_PAYLOAD_BYTES = 1_048_576;

const INSERT_EVENT = `
  INSERT INTO once.outbox_events (dedupe_id, topic, payload, payload_text, headers)
  SELECT $1, $2, p.text::jsonb, p.text, $4::text::jsonb FROM (SELECT $3::text AS text) p
  RETURNING id::text`;
const INSERT_ORDERED_EVENT = `
  WITH serialize AS (
    SELECT pg_advisory_xact_lock(hashtextextended(once.current_tenant() || chr(31) || $5, $6))
  )
  INSERT INTO once.outbox_events (dedupe_id, topic, ordering_key, payload, payload_text, headers)
  SELECT $1, $2, $5, p.text::jsonb, p.text, $4::text::jsonb
    FROM serialize, (SELECT $3::text AS text) p
  RETURNING id::text`;

export interface EnqueuedEvent {
  /** The outbox row's id (a bigint, as a string). */
  id: string;
  /** What receivers dedupe on; the same on every delivery attempt. */
  dedupeId: string;
}

export function enqueue(tx: Transaction<any>, event: OutboxEvent): Promise<EnqueuedEvent> {
  return enqueueIn(kyselyClient(tx), event);
}

/** enqueue through any database library's transaction (see src/drivers/); undefined when not in one. */
export async function enqueueIn(tx: TransactionClient | undefined, event: OutboxEvent): Promise<EnqueuedEvent> {
  if (!tx) {
    throw new NotInTransactionError('pg-once: enqueue must run in a transaction (use withTenant), so the event commits with your writes.');
  }
  const parsed = parseOptions(outboxEventSchema, event, 'outbox event');
  const idProblem = parsed.dedupeId === undefined ? undefined : dedupeIdProblem(parsed.dedupeId);
  if (idProblem) {
    throw new InvalidOptionsError('outbox event', [{ path: ['dedupeId'], message: idProblem, code: 'invalid_format' }]);
  }
  const payload = payloadText(parsed.payload);
  const call = callContext.getStore();
  // Taken synchronously, before any await, so positions follow the order of enqueue calls.
  const dedupeId =
    parsed.dedupeId ?? (call !== undefined && call.tx === tx.owner ? deriveDedupeId(call.tenantId, call.key, call.version, call.position++) : randomUUID());
  // Written at once, never held back for the statement that stores the result (which would save
  // a round trip): fn's own later statements, and the caller's, must see the event it enqueued.
  try {
    const headers = JSON.stringify(parsed.headers);
    // The payload is sent once and stored twice: as written (payload_text, what the relay
    // delivers, so keys keep their order: sql/0009) and as jsonb (payload, for queries).
    const rows =
      parsed.orderingKey === undefined
        ? await tx.query<{ id: unknown }>(INSERT_EVENT, [dedupeId, parsed.topic, payload, headers])
        : await tx.query<{ id: unknown }>(INSERT_ORDERED_EVENT, [dedupeId, parsed.topic, payload, headers, parsed.orderingKey, ORDERING_LOCK_SEED]);
    return { id: String(rows[0]!.id), dedupeId };
  } catch (error) {
    throw translateDatabaseError(error);
  }
}

function payloadText(payload: unknown): string {
  let text: string | undefined;
  try {
    text = toJsonText(payload);
  } catch (error) {
    if (!(error instanceof JsonTextError)) throw error;
    throw new InvalidOptionsError('outbox event', [{ path: ['payload'], message: error.message, code: 'not_json' }], { cause: error });
  }
  if (text === undefined) {
    throw new InvalidOptionsError('outbox event', [{ path: ['payload'], message: 'a payload is required (use null for none)', code: 'invalid_type' }]);
  }
  if (Buffer.byteLength(text) > MAX_PAYLOAD_BYTES) {
    throw new InvalidOptionsError('outbox event', [{ path: ['payload'], message: `the payload is over ${MAX_PAYLOAD_BYTES} bytes as JSON`, code: 'too_big' }]);
  }
  return text;
}
