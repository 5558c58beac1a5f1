/**
 * The five names every database library's subpath offers (withTenant, runIdempotent, enqueue,
 * receiveOnce, runIdempotentExternal), built from its Driver: the adapters stay a few lines each,
 * and the core they run is the root API's, statement for statement.
 */
import type { IdempotentOutcome } from '../idempotency/claim-outcome.ts';
import type { Jsonify } from '../idempotency/jsonify.ts';
import { runIdempotentFor } from '../idempotency/run-idempotent.ts';
import { type RunIdempotentExternal, runIdempotentExternalFor } from '../idempotency/run-idempotent-external.ts';
import { type InboxMessage, type ReceiveOnceOptions, receiveOnceFor, type WithTenant } from '../inbox/receive-once.ts';
import type { Driver } from '../internal/driver.ts';
import { type EnqueuedEvent, enqueueIn } from '../outbox/enqueue.ts';
import type { RunIdempotentOptions } from '../idempotency/run-idempotent-options.ts';
import type { OutboxEvent } from '../outbox/outbox-event.ts';
import { withTenantFor } from '../tenant.ts';

export interface DriverApi<Db, Tx> {
  withTenant: WithTenant<Db, Tx>;
  runIdempotent: RunIdempotentPassing<Tx>;
  enqueue(tx: Tx, event: OutboxEvent): Promise<EnqueuedEvent>;
  receiveOnce<T>(db: Db, message: InboxMessage, fn: (tx: Tx) => Promise<T>, options?: ReceiveOnceOptions): Promise<Jsonify<T>>;
  runIdempotentExternal: RunIdempotentExternal<Db>;
}

export function driverApi<Db extends object, Tx extends object>(driver: Driver<Db, Tx>): DriverApi<Db, Tx> {
  // postgres.js and Knex transactions are functions.
  const client = (tx: Tx) => ((typeof tx === 'object' || typeof tx === 'function') && tx !== null ? driver.client(tx) : undefined);
  const withTenant: WithTenant<Db, Tx> = (db, tenantId, fn, options) => withTenantFor(driver, db, tenantId, fn, options);
  const runIdempotent = runIdempotentFor(client);
  return {
    withTenant,
    // fn is handed the very object the caller passed, so its exact type is passed through.
    runIdempotent: runIdempotent as unknown as RunIdempotentPassing<Tx>,
    enqueue: (tx, event) => enqueueIn(client(tx), event),
    receiveOnce: receiveOnceFor(withTenant, runIdempotent),
    runIdempotentExternal: runIdempotentExternalFor(driver),
  };
}

/**
 * runIdempotent of a library whose transaction types are generic (Drizzle's schema, Prisma's
 * client, postgres.js's types): `fn` gets back exactly the type it was given.
 */
export interface RunIdempotentPassing<Base> {
  <T, X extends Base>(tx: X, key: string, fn: (tx: X) => Promise<T>, options?: RunIdempotentOptions): Promise<Jsonify<T>>;
  /** Also says whether the call executed or replayed. */
  detailed<T, X extends Base>(tx: X, key: string, fn: (tx: X) => Promise<T>, options?: RunIdempotentOptions): Promise<IdempotentOutcome<T>>;
}
