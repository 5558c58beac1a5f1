import { createHash } from 'node:crypto';

/**
 * The dedupe id of the n-th event enqueued by an idempotent call. A pure function of tenant, key,
 * version and position, so the id is the same on every run of the call, even a re-execution after
 * the record expired: downstream receivers drop the repeat. JSON array framing keeps the parts
 * unambiguous (no separator a key could contain).
 */
export function deriveDedupeId(tenantId: string, key: string, version: string, position: number): string {
  const digest = createHash('sha256')
    .update(JSON.stringify([tenantId, key, version, position]))
    .digest('hex');
  return `once_${digest.slice(0, 32)}`;
}

/** Longest dedupe id `enqueue` accepts, in characters (all ASCII, so bytes too). */
export const MAX_DEDUPE_ID_LENGTH = 255;

/**
 * Letters, digits and `- . _ ~ : / + = @`: what every id format in use needs (UUIDs, ULIDs, svix
 * `msg_...`, base64 and base64url, URNs), and nothing a transport or a verifier could read
 * differently. The id travels as a header (`webhook-id`, `Idempotency-Key`, `Nats-Msg-Id`) and is
 * signed: a non-ASCII id cannot be a fetch() header at all (every delivery would throw), a
 * Latin-1 one is sent as Latin-1 but signed as UTF-8 (receivers outside JavaScript reject its
 * signature), and spaces or commas are trimmed or split by some header parsers. Checked at
 * enqueue, when the writer can still be told; by delivery time the event could only die.
 * Widening the set later is compatible; narrowing it would not be.
 */
const SAFE_DEDUPE_ID = /^[A-Za-z0-9._~:/+=@-]+$/;

/** Why `id` cannot be a dedupe id, or undefined when it can. */
export function dedupeIdProblem(id: string): string | undefined {
  if (id.length === 0 || id.length > MAX_DEDUPE_ID_LENGTH) return `a dedupe id has 1..${MAX_DEDUPE_ID_LENGTH} characters`;
  if (!SAFE_DEDUPE_ID.test(id)) return 'a dedupe id has only letters, digits and - . _ ~ : / + = @ (it travels in headers and is signed)';
  return undefined;
}
