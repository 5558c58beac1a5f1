/**
 * The sweep benchmark (issue "Operations"): a sweep of 200,000 expired keys while 8 writers claim
 * fresh keys. Reports the writers' worst and p99 call time during the sweep, beside the same
 * writers without a sweep, in the same run: the sweep must never hold locks a claim waits on.
 */
import pg from 'pg';
import { runIdempotent, sweep, withTenant } from '../src/index.ts';
import { percentile, printTable } from './harness.ts';
import type { BenchDatabase } from './setup.ts';

async function writers(bench: BenchDatabase, until: () => boolean, label: string): Promise<number[]> {
  const db = bench.kysely(8);
  const times: number[] = [];
  let n = 0;
  await Promise.all(
    Array.from({ length: 8 }, async (_, worker) => {
      while (!until()) {
        const key = `${label}-${worker}-${++n}`;
        const started = performance.now();
        await withTenant(db, `tenant-${worker % 4}`, (tx) => runIdempotent(tx, key, async () => key));
        times.push(performance.now() - started);
      }
    }),
  );
  return times.sort((a, b) => a - b);
}

export async function runSweepBench(bench: BenchDatabase, options: { keys: number }) {
  const admin = new pg.Pool({ connectionString: bench.adminUrl, max: 2 });
  admin.on('error', () => {});
  try {
    await admin.query(
      `INSERT INTO once.idempotency_keys (tenant_id, key, status, result, expires_at, created_at)
       SELECT 'tenant-' || (i % 4), 'expired-' || i, 'completed', '{"ok":true}', now() - interval '1 minute', now() - interval '1 day'
         FROM generate_series(1, $1) i`,
      [options.keys],
    );
    await admin.query('VACUUM ANALYZE once.idempotency_keys');

    const baselineEnd = performance.now() + 3_000;
    const baseline = await writers(bench, () => performance.now() > baselineEnd, 'baseline');

    let sweeping = true;
    const sweepStarted = performance.now();
    const sweepDone = sweep(bench.relayUrl).then((result) => {
      sweeping = false;
      return { ...result, seconds: (performance.now() - sweepStarted) / 1_000 };
    });
    const during = await writers(bench, () => !sweeping, 'during');
    const result = await sweepDone;

    console.log(
      `\nSweep of ${result.idempotencyKeys.toLocaleString('en-US')} expired keys in ${result.seconds.toFixed(1)} s (${result.batches} batches), 8 writers claiming fresh keys`,
    );
    printTable(
      ['writers', 'calls', 'p50 ms', 'p99 ms', 'worst ms'],
      [
        ['without a sweep', baseline.length, percentile(baseline, 50), percentile(baseline, 99), baseline.at(-1) ?? 0],
        ['during the sweep', during.length, percentile(during, 50), percentile(during, 99), during.at(-1) ?? 0],
      ],
    );
    console.log(`  worst call during the sweep: ${(during.at(-1) ?? 0).toFixed(1)} ms (target: no claim waits more than 100 ms on the sweep)`);
    return {
      sweep: result,
      baselineMs: { p50: percentile(baseline, 50), p99: percentile(baseline, 99), worst: baseline.at(-1) ?? 0, calls: baseline.length },
      duringMs: { p50: percentile(during, 50), p99: percentile(during, 99), worst: during.at(-1) ?? 0, calls: during.length },
    };
  } finally {
    await admin.end();
  }
}
