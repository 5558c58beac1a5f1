/**
 * The many-relays bench's check of every delivery (bench/relays.ts): per ordering key, sink calls
 * of all relay processes, in time order, must follow commit order; a second call for an event is
 * a duplicate; an event never delivered is missing.
 */
import type { ChildResult } from './relays-child.ts';

/** The workload's shape: tenants, ordering keys per tenant (backlog), writers (live). */
export const TENANTS = 8;
export const KEYS_PER_TENANT = 16;
export const LIVE_WRITERS = 4;

/** The ordering group (tenant and key) of each event, or undefined for an unkeyed one. */
export type GroupOf = (seq: number) => string | undefined;

/** Backlog events: seq i of tenant i % 8; keyed when floor(i / 8) is even, key floor(i / 16) % 16. */
export const backlogGroup: GroupOf = (seq) =>
  Math.floor(seq / TENANTS) % 2 === 0 ? `tenant-${seq % TENANTS}/key-${Math.floor(seq / (2 * TENANTS)) % KEYS_PER_TENANT}` : undefined;

/**
 * Live events: writer w writes seq = j * 4 + w; the same tenants and the same share of keyed
 * events, each key written by one writer only (so its commit order is that writer's order).
 */
export const liveGroup: GroupOf = (seq) =>
  Math.floor(seq / TENANTS) % 2 === 0 ? `tenant-${seq % TENANTS}/w${seq % LIVE_WRITERS}-key-${Math.floor(seq / (2 * TENANTS)) % 4}` : undefined;

/** Per key, sink calls in time order must walk its events in seq order; repeats are duplicates. */
export function checkDeliveries(results: ChildResult[], total: number, groupOf: GroupOf) {
  const deliveries = results.flatMap((r) => r.seqs.map((seq, i) => ({ seq, at: r.ats[i]! }))).filter((d) => d.seq < total);
  deliveries.sort((a, b) => a.at - b.at);
  const expected = new Map<string, number[]>();
  for (let seq = 0; seq < total; seq += 1) {
    const group = groupOf(seq);
    if (group !== undefined) (expected.get(group) ?? expected.set(group, []).get(group)!).push(seq);
  }
  const next = new Map<string, number>();
  const seen = new Uint8Array(total);
  let duplicates = 0;
  let outOfOrder = 0;
  let unique = 0;
  for (const { seq } of deliveries) {
    if (seen[seq]) {
      duplicates += 1;
      continue;
    }
    seen[seq] = 1;
    unique += 1;
    const group = groupOf(seq);
    if (group === undefined) continue;
    const list = expected.get(group)!;
    const index = next.get(group) ?? 0;
    if (list[index] === seq) next.set(group, index + 1);
    else {
      outOfOrder += 1;
      next.set(group, list.indexOf(seq) + 1);
    }
  }
  return { duplicates, outOfOrder, missing: total - unique, firstAt: deliveries[0]?.at ?? 0, lastAt: deliveries.at(-1)?.at ?? 0, deliveries };
}
