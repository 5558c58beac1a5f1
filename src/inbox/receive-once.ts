/**
 * receiveOnce(tx, messageId, fn): the receiving side of at-least-once delivery (an inbox). A
 * message id is processed once per tenant, with the same guarantees as runIdempotent, which it
 * is: the record lives in once.idempotency_keys under the key `inbox:<messageId>`, so a message
 * id can never collide with a tool call's key.
 */
import type { Transaction } from 'kysely';
import { InvalidKeyError } from '../errors.ts';
import type { Jsonify } from '../idempotency/jsonify.ts';
import { runIdempotent } from '../idempotency/run-idempotent.ts';
import type { RunIdempotentOptions } from '../options.ts';

/** Key prefix of inbox records in once.idempotency_keys. */
export const INBOX_KEY_PREFIX = 'inbox:';
const MAX_MESSAGE_ID_LENGTH = 255 - INBOX_KEY_PREFIX.length;

export interface ReceiveOnceOptions extends Omit<RunIdempotentOptions, 'tool'> {
  /** Where messages come from (stored as the record's tool, for audit and status). (Default: 'inbox') */
  source?: string;
}

export async function receiveOnce<T>(
  tx: Transaction<any>,
  messageId: string,
  fn: (tx: Transaction<any>) => Promise<T>,
  options: ReceiveOnceOptions = {},
): Promise<Jsonify<T>> {
  if (typeof messageId !== 'string' || messageId.length === 0 || messageId.length > MAX_MESSAGE_ID_LENGTH) {
    throw new InvalidKeyError(`pg-once: a message id must be a string of 1..${MAX_MESSAGE_ID_LENGTH} characters.`);
  }
  const { source, ...rest } = options;
  // A week: senders retry for hours (the relay's default retry horizon is about 2 hours).
  return runIdempotent(tx, `${INBOX_KEY_PREFIX}${messageId}`, fn, { ttl: '7d', ...rest, tool: source ?? 'inbox' });
}
