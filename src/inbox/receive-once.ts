/**
 * receiveOnce(db, message, fn): the receiving side of at-least-once delivery (an inbox). A
 * message id is processed once per tenant, with the same guarantees as runIdempotent, which it
 * is: the record lives in once.idempotency_keys under the key `inbox:<messageId>`. `inbox:` is a
 * reserved namespace (src/internal/internal-key.ts): runIdempotent refuses it in any other key,
 * so no tool call, and no model writing keys, can claim a message id before its message arrives.
 *
 * It opens the tenant's transaction itself, with the tenant of the message: for a webhook, the one
 * verifyWebhook read from the signed body. A receiver that took the tenant from a header or a URL
 * instead would let anyone holding one captured delivery replay it into any other tenant, where
 * its message id is new and the effect would run again.
 */
import type { Kysely, Transaction } from 'kysely';
import { InvalidKeyError } from '../errors.ts';
import type { Jsonify } from '../idempotency/jsonify.ts';
import { type RunIdempotent, runIdempotent } from '../idempotency/run-idempotent.ts';
import { outsideInternalKey, runWithInternalKey } from '../internal/internal-key.ts';
import type { RunIdempotentOptions } from '../idempotency/run-idempotent-options.ts';
import type { WithTenantOptions } from '../with-tenant-options.ts';
import { withTenant } from '../tenant.ts';

/** Key prefix of inbox records in once.idempotency_keys. */
export const INBOX_KEY_PREFIX = 'inbox:';
const MAX_MESSAGE_ID_LENGTH = 255 - INBOX_KEY_PREFIX.length;

/** The key of a message's inbox record. */
export function inboxKey(messageId: string): string {
  return `${INBOX_KEY_PREFIX}${messageId}`;
}

/** What receiveOnce needs of a message; a VerifiedWebhook is one. */
export interface InboxMessage {
  /** The sender's id of the message, the same on every retry (a webhook's `webhook-id`). */
  messageId: string;
  /**
   * The tenant the message belongs to, as the sender vouched for it (verifyWebhook's `tenant`,
   * read from the signed body), never from an unsigned header.
   */
  tenant: string;
}

export interface ReceiveOnceOptions extends Omit<RunIdempotentOptions, 'tool'> {
  /** Where messages come from (stored as the record's tool, for audit and status). (Default: 'inbox') */
  source?: string;
  /** Options for the transaction receiveOnce opens (withTenant's). (Default: none) */
  tenantOptions?: WithTenantOptions;
}

/** withTenant's signature for a library whose handle is `Db` and transaction `Tx`. */
export type WithTenant<Db, Tx> = <T>(db: Db, tenantId: string, fn: (tx: Tx) => Promise<T>, options?: WithTenantOptions) => Promise<T>;

/** receiveOnce for one database library, from that library's withTenant and runIdempotent. */
export function receiveOnceFor<Db, Tx>(withTenantOf: WithTenant<Db, Tx>, runIdempotentOf: RunIdempotent<Tx>) {
  return async function receiveOnce<T>(db: Db, message: InboxMessage, fn: (tx: Tx) => Promise<T>, options: ReceiveOnceOptions = {}): Promise<Jsonify<T>> {
    const { messageId, tenant } = message ?? {};
    if (typeof messageId !== 'string' || messageId.length === 0 || messageId.length > MAX_MESSAGE_ID_LENGTH) {
      throw new InvalidKeyError(`pg-once: a message id must be a string of 1..${MAX_MESSAGE_ID_LENGTH} characters.`);
    }
    const { source, tenantOptions, ...rest } = options;
    const key = inboxKey(messageId);
    // A week: senders retry for hours (the relay's default retry horizon is about 2 hours).
    return withTenantOf(
      db,
      tenant,
      (tx) => runWithInternalKey(key, () => runIdempotentOf(tx, key, outsideInternalKey(fn), { ttl: '7d', ...rest, tool: source ?? 'inbox' })),
      tenantOptions,
    );
  };
}

const receiveOnceKysely = receiveOnceFor<Kysely<any>, Transaction<any>>(withTenant, runIdempotent);

export function receiveOnce<DB, T>(
  db: Kysely<DB>,
  message: InboxMessage,
  fn: (tx: Transaction<DB>) => Promise<T>,
  options: ReceiveOnceOptions = {},
): Promise<Jsonify<T>> {
  return receiveOnceKysely(db, message, fn as (tx: Transaction<any>) => Promise<T>, options);
}
