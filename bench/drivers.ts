/**
 * The database-library benchmark (issue 14): fresh-call throughput (withTenant + runIdempotent
 * with a business insert through the library itself, a new key each call) of every adapter,
 * against the Kysely path measured in the same run, on the same server, at concurrency 1 and 16.
 * Target: each adapter within 5% of Kysely at c=16.
 */
import { SUBJECTS, type Subject } from '../support/driver-subjects.ts';
import { measureThroughput, printTable, type Throughput } from './harness.ts';
import type { BenchDatabase } from './setup.ts';

const TENANTS = 16;
let runId = 0;

const freshCall = (subject: Subject, tag: string) => (worker: number, iteration: number) => {
  const key = `${tag}-${worker}-${iteration}`;
  return subject.withTenant(`tenant-${worker % TENANTS}`, (tx) =>
    subject.runIdempotent.detailed(
      tx,
      key,
      async (inner: unknown) => {
        await subject.insertOrder(inner, key, 100);
        return { orderId: key, amount: 100, currency: 'EUR' };
      },
      { tool: 'create_order', request: { key, amount: 100 } },
    ),
  );
};

export interface DriversBenchResult {
  throughput: Record<string, { c1: Throughput; c16: Throughput }>;
  /** Each library's ops/s over Kysely's, at c=16 (target >= 0.95). */
  ratios: Record<string, number>;
}

export async function runDriversBench(bench: BenchDatabase, seconds: number): Promise<DriversBenchResult> {
  const run = ++runId;
  const names = Object.keys(SUBJECTS);
  const throughput: DriversBenchResult['throughput'] = {};
  const better = (a: Throughput | undefined, b: Throughput) => (a && a.opsPerSecond >= b.opsPerSecond ? a : b);
  // Two rounds over all libraries, keeping each one's better run: on a 2-core machine one run is
  // at the mercy of whatever else wakes up, and that must not decide a ratio.
  for (let round = 0; round < 2; round += 1) {
    for (const name of names) {
      const one = SUBJECTS[name]!(bench.appUrl, 1);
      const sixteen = SUBJECTS[name]!(bench.appUrl, 16);
      try {
        const tag = `${run}-${round}-${name.replace(/\W+/g, '_')}`;
        const c1 = await measureThroughput(freshCall(one, `${tag}-c1`), { concurrency: 1, seconds });
        const c16 = await measureThroughput(freshCall(sixteen, `${tag}-c16`), { concurrency: 16, seconds });
        throughput[name] = { c1: better(throughput[name]?.c1, c1), c16: better(throughput[name]?.c16, c16) };
        console.log(`  round ${round + 1} ${name}: ${Math.round(c1.opsPerSecond)} ops/s at c=1, ${Math.round(c16.opsPerSecond)} ops/s at c=16`);
      } finally {
        await one.close();
        await sixteen.close();
      }
    }
  }
  const kysely = throughput.kysely!;
  const ratios = Object.fromEntries(names.map((name) => [`${name} / kysely at c=16 (target >= 0.95)`, throughput[name]!.c16.opsPerSecond / kysely.c16.opsPerSecond]));
  console.log('\nDatabase libraries: fresh calls, ops/s (higher is better), against Kysely in this run');
  printTable(
    ['library', 'c=1 ops/s', 'x kysely', 'c=16 ops/s', 'x kysely'],
    names.map((name) => {
      const row = throughput[name]!;
      return [name, row.c1.opsPerSecond, row.c1.opsPerSecond / kysely.c1.opsPerSecond, row.c16.opsPerSecond, row.c16.opsPerSecond / kysely.c16.opsPerSecond];
    }),
  );
  return { throughput, ratios };
}
