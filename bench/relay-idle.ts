/**
 * What an idle relay costs, and what its economy costs the first event after a quiet spell:
 * - statements per second sent by a relay with nothing to deliver (claims, graphile-worker's
 *   sweep scheduler, heartbeats, everything), counted on the client: every pg.Client query in
 *   this process while only the relay runs;
 * - latency from commit to sink call of one event committed after the relay sat idle for a given
 *   time (an idle relay polls less often, so this grows with the idle time, up to a cap).
 */
import pg from 'pg';
import { enqueue, startRelay, withTenant } from '../src/index.ts';
import { percentile } from './harness.ts';
import type { BenchDatabase } from './setup.ts';

export interface IdleCost {
  queriesPerSecond: number;
  /** Per idle time before the event (ms): commit-to-sink latencies (ms), sorted. */
  firstEvent: { idleMs: number; p50: number; max: number; samples: number }[];
}

/** Counts every statement any pg.Client of this process sends while `counting` is on. */
function countQueries(): { count: () => number; stop: () => void } {
  const prototype = pg.Client.prototype as unknown as { query: (...args: unknown[]) => unknown };
  const original = prototype.query;
  let count = 0;
  prototype.query = function (this: unknown, ...args: unknown[]) {
    count += 1;
    return original.apply(this, args);
  };
  return {
    count: () => count,
    stop: () => {
      prototype.query = original;
    },
  };
}

export async function idleCost(
  bench: BenchDatabase,
  admin: pg.Pool,
  options: { idleSeconds: number; idleTimesMs: number[]; samples: number },
): Promise<IdleCost> {
  await admin.query('TRUNCATE once.outbox_events');
  let delivered: ((at: number) => void) | undefined;
  // Sweeps on, as in production: graphile-worker's scheduler is part of what an idle relay costs.
  const relay = await startRelay({
    connectionString: bench.relayUrl,
    handleSignals: false,
    sinks: { '>': async () => delivered?.(performance.now()) },
  });
  const db = bench.kysely(1);
  try {
    await new Promise((resolve) => setTimeout(resolve, 1_000)); // start-up statements are not idle cost
    const counter = countQueries();
    const before = counter.count();
    await new Promise((resolve) => setTimeout(resolve, options.idleSeconds * 1_000));
    const queriesPerSecond = (counter.count() - before) / options.idleSeconds;
    counter.stop();
    // One event not counted: the idle spell of the first sample starts at a delivery, like the others.
    const warmUp = new Promise<number>((resolve) => (delivered = resolve));
    await withTenant(db, 'tenant-idle', (tx) => enqueue(tx, { topic: 'idle', payload: { warmUp: true } }));
    await warmUp;
    const firstEvent: IdleCost['firstEvent'] = [];
    for (const idleMs of options.idleTimesMs) {
      const latencies: number[] = [];
      for (let sample = 0; sample < options.samples; sample += 1) {
        // The previous event's delivery ended the last idle spell; wait this long, then commit.
        await new Promise((resolve) => setTimeout(resolve, idleMs));
        const arrived = new Promise<number>((resolve) => (delivered = resolve));
        await withTenant(db, 'tenant-idle', (tx) => enqueue(tx, { topic: 'idle', payload: { idleMs } }));
        const committedAt = performance.now();
        latencies.push(Math.max(0, (await arrived) - committedAt));
      }
      latencies.sort((a, b) => a - b);
      firstEvent.push({ idleMs, p50: percentile(latencies, 50), max: latencies.at(-1)!, samples: latencies.length });
    }
    return { queriesPerSecond, firstEvent };
  } finally {
    await relay.stop();
  }
}
