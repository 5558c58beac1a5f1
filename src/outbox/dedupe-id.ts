import { createHash } from 'node:crypto';

/**
 * The dedupe id of the n-th event enqueued by an idempotent call. A pure function of tenant, key,
 * version and position, so the id is the same on every run of the call, even a re-execution after
 * the record expired: downstream receivers drop the repeat. JSON array framing keeps the parts
 * unambiguous (no separator a key could contain).
 */
export function deriveDedupeId(tenantId: string, key: string, version: string, position: number): string {
  const digest = createHash('sha256').update(JSON.stringify([tenantId, key, version, position])).digest('hex');
  return `once_${digest.slice(0, 32)}`;
}
