/**
 * Reads the key a client sent in the `Idempotency-Key` header. The IETF httpapi draft makes it a
 * Structured Field string (`Idempotency-Key: "8e03978e-40d5-43e8-bc93-6894a57f9324"`); Stripe and
 * most clients send the bare value (`Idempotency-Key: 8e03978e-...`). Both are accepted and mean
 * the same key, so a client that switches style keeps its key.
 */
import { InvalidKeyError } from '../errors.ts';

/**
 * Longest client key, in characters. The stored key is `once:http:<principal>:<client key>`, the
 * principal at most 64 characters (hashed when longer), and a stored key has at most 255.
 */
export const MAX_CLIENT_KEY_LENGTH = 160;

/** Printable ASCII, what both an sf-string and a header value may carry without escapes. */
const PRINTABLE_ASCII = /^[\x20-\x7e]+$/u;

/** The client's key, or undefined when the header is absent; InvalidKeyError (400) when malformed. */
export function parseIdempotencyKey(value: string | undefined, header: string): string | undefined {
  if (value === undefined) return undefined;
  let key = value.trim();
  if (key.startsWith('"')) {
    // An sf-string: the only escapes are \" and \\, and nothing may follow the closing quote.
    const match = /^"((?:[^"\\]|\\["\\])*)"$/u.exec(key);
    if (!match) throw new InvalidKeyError(`pg-once: the ${header} header is a malformed quoted string.`);
    key = match[1]!.replace(/\\(["\\])/gu, '$1');
  }
  if (key.length === 0) throw new InvalidKeyError(`pg-once: the ${header} header is empty.`);
  if (key.length > MAX_CLIENT_KEY_LENGTH) {
    throw new InvalidKeyError(`pg-once: the ${header} header holds ${key.length} characters, over the limit of ${MAX_CLIENT_KEY_LENGTH}.`);
  }
  if (!PRINTABLE_ASCII.test(key)) throw new InvalidKeyError(`pg-once: the ${header} header may hold printable ASCII only.`);
  return key;
}
