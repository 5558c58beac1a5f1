/**
 * One ordering key's throughput: `count` events of one tenant under one ordering key, drained by
 * a relay with an instant sink. Checks commit order on the way (a figure bought by reordering
 * would be worthless): the sink sees each event's sequence number, and a repeat (at least once)
 * is allowed, a step back past an event not yet seen is not.
 */
import type pg from 'pg';
import { startRelay } from '../src/index.ts';
import type { BenchDatabase } from './setup.ts';

export interface KeyThroughput {
  perSecond: number;
  /** Sink calls that came before an earlier event of the key had been delivered (must be 0). */
  outOfOrder: number;
  repeats: number;
}

export async function keyThroughput(bench: BenchDatabase, admin: pg.Pool, count: number): Promise<KeyThroughput> {
  await admin.query('TRUNCATE once.outbox_events');
  await admin.query(
    `INSERT INTO once.outbox_events (tenant_id, dedupe_id, topic, ordering_key, payload)
     SELECT 'tenant-key', 'key-' || i, 'keyed', 'the-key', jsonb_build_object('seq', i) FROM generate_series(1, $1::int) i`,
    [count],
  );
  await admin.query('VACUUM ANALYZE once.outbox_events');
  let highest = 0;
  let outOfOrder = 0;
  let repeats = 0;
  let done!: () => void;
  const drained = new Promise<void>((resolve) => (done = resolve));
  const started = performance.now();
  const relay = await startRelay({
    connectionString: bench.relayUrl,
    handleSignals: false,
    sweep: false,
    sinks: {
      '>': async (event) => {
        const seq = (event.payload as { seq: number }).seq;
        if (seq <= highest) repeats += 1;
        else if (seq !== highest + 1) outOfOrder += 1;
        highest = Math.max(highest, seq);
        if (highest === count) done();
      },
    },
  });
  await drained;
  const seconds = (performance.now() - started) / 1_000;
  await relay.stop();
  return { perSecond: count / seconds, outOfOrder, repeats };
}
