/**
 * The idempotent calls this process has in flight, per database handle and (tenant, key,
 * version), so that a duplicate of one of them knows before its first round trip that it will
 * most likely wait.
 *
 * A duplicate's first claim normally does not wait: it learns that the key is claimed ('busy'),
 * then takes a wait slot (wait-slots.ts) and claims again, blocking. When the call it duplicates
 * runs in this very process (an agent's retry, a fan-out of the same tool call), that first round
 * trip only tells what is known here already, and 15 duplicates of one key each paid it. Such a
 * duplicate takes its wait slot first and blocks on its first claim; once.claim_key still takes a
 * free key without waiting (and says 'replay', not 'waited', when it did not wait), so nothing but
 * the round trip changes. Duplicates in other processes go the usual way.
 */

const calls = new WeakMap<object, Map<string, number>>();

/** Registers a call until `leave()`; `duplicate` is true when this process had the same one in flight already. */
export function enterCall(db: object, tenantId: string, key: string, version: string): { duplicate: boolean; leave: () => void } {
  let byKey = calls.get(db);
  if (!byKey) {
    byKey = new Map();
    calls.set(db, byKey);
  }
  // Lengths first: no two (tenant, key) pairs make the same text.
  const id = `${tenantId.length}:${tenantId}${key.length}:${key}${version}`;
  const before = byKey.get(id) ?? 0;
  byKey.set(id, before + 1);
  let left = false;
  return {
    duplicate: before > 0,
    leave: () => {
      if (left) return;
      left = true;
      const now = (byKey.get(id) ?? 1) - 1;
      if (now > 0) byKey.set(id, now);
      else byKey.delete(id);
    },
  };
}

/** The statement_timeout the last claim on each database handle reported (ms), so a blocking first claim knows whether to raise it. */
const statementTimeouts = new WeakMap<object, number>();

export const knownStatementTimeout = (db: object): number | undefined => statementTimeouts.get(db);

export function noteStatementTimeout(db: object, ms: number): void {
  if (Number.isFinite(ms)) statementTimeouts.set(db, ms);
}
