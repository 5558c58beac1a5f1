/**
 * The database-library benchmark (issue 14): fresh-call throughput (withTenant + runIdempotent
 * with a business insert through the library itself, a new key each call) of every adapter,
 * against the Kysely path measured in the same run, on the same server, at concurrency 1 and 16.
 * Target: each adapter within 5% of Kysely at c=16.
 *
 * Libraries are not equally fast at the same work (Prisma's query pipeline and Knex's builder
 * cost CPU of their own), so each is also measured doing the same insert without pg-once, in its
 * own transaction with the tenant set (what an RLS application pays anyway). pg-once's added cost
 * through a library is then the time per call it adds at c=16, where the machine is saturated
 * (1/ops with pg-once - 1/ops bare), compared with the same through Kysely. Round trips of both
 * are counted on the wire, and the CPU a call costs is read from /proc at c=16 (this process, and
 * the Postgres server's processes when it runs on this machine): where each library's time goes.
 */
import { cpuSecondsByCommand, cpuSecondsSince } from './cpu-time.ts';
import { countedKysely, SUBJECTS, type Subject } from '../support/driver-subjects.ts';
import { startWireCounter } from '../support/wire-counter.ts';
import { measureThroughput, printTable, type Throughput } from './harness.ts';
import type { BenchDatabase } from './setup.ts';

const TENANTS = 16;
let runId = 0;

/** Every library once, in the transaction withTenant opens; node-postgres also in the caller's own. */
const BENCHED = Object.keys(SUBJECTS).filter((name) => !name.includes("the caller's own transaction") || name.startsWith('pg '));
/** The bare baseline of each: the caller's own pg transaction is the Pool's. */
const bareOf = (name: string) => (name.startsWith('pg ') ? 'pg (Pool)' : name);

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

const bareCall = (subject: Subject, tag: string) => (worker: number, iteration: number) =>
  subject.bareInsert(`tenant-${worker % TENANTS}`, `${tag}-${worker}-${iteration}`, 100);

/** Throughput at c=16 with the CPU its calls cost: this process's, and the Postgres server's (0 when not on this machine). */
export interface MeasuredCpu extends Throughput {
  nodeMicrosPerCall: number;
  postgresMicrosPerCall: number;
}

/** measureThroughput (its warm-up first, on its own), reading CPU around the measured part only. */
async function measureWithCpu(op: (worker: number, iteration: number) => Promise<unknown>, seconds: number): Promise<MeasuredCpu> {
  await measureThroughput(op, { concurrency: 16, seconds: 0.5, warmupSeconds: 0 });
  const postgresBefore = cpuSecondsByCommand('postgres');
  const nodeBefore = process.cpuUsage();
  const result = await measureThroughput(op, { concurrency: 16, seconds, warmupSeconds: 0 });
  const node = process.cpuUsage(nodeBefore);
  const postgres = cpuSecondsSince(postgresBefore, cpuSecondsByCommand('postgres'));
  const calls = Math.max(1, result.ops + result.errors);
  return { ...result, nodeMicrosPerCall: (node.user + node.system) / calls, postgresMicrosPerCall: (postgres * 1e6) / calls };
}

export interface DriversBenchResult {
  throughput: Record<string, { c1: Throughput; c16: MeasuredCpu; bareC16?: MeasuredCpu }>;
  roundTrips: Record<string, { pgOnce: number; bare: number }>;
  ratios: Record<string, number>;
}

/** Round trips of one fresh call and of one bare insert, after the warm-up calls that prepare statements. */
async function countRoundTrips(bench: BenchDatabase, name: string): Promise<{ pgOnce: number; bare: number }> {
  const server = new URL(bench.appUrl);
  const counter = await startWireCounter({ host: server.hostname, port: Number(server.port || 5432) });
  const url = new URL(bench.appUrl);
  url.hostname = '127.0.0.1';
  url.port = String(counter.port);
  // Kysely's are counted on its client: through the counting proxy its path merges as behind a pooler.
  const onClient = { roundTrips: 0 };
  const subject = name === 'kysely' ? countedKysely(bench.appUrl, onClient) : SUBJECTS[name]!(url.toString(), 1);
  try {
    const counted = async (call: (worker: number, iteration: number) => Promise<unknown>) => {
      await call(0, 0);
      await call(0, 1);
      counter.reset();
      onClient.roundTrips = 0;
      await call(0, 2);
      return name === 'kysely' ? onClient.roundTrips : counter.count.roundTrips;
    };
    return { pgOnce: await counted(freshCall(subject, `${++runId}-trips`)), bare: await counted(bareCall(subject, `${++runId}-trips`)) };
  } finally {
    await subject.close();
    await counter.close();
  }
}

export async function runDriversBench(bench: BenchDatabase, seconds: number): Promise<DriversBenchResult> {
  const run = ++runId;
  const throughput: DriversBenchResult['throughput'] = {};
  const roundTrips: DriversBenchResult['roundTrips'] = {};
  for (const name of BENCHED) roundTrips[name] = await countRoundTrips(bench, name);
  const better = <M extends Throughput>(a: M | undefined, b: M) => (a && a.opsPerSecond >= b.opsPerSecond ? a : b);
  // Two rounds over all libraries, keeping each one's better run: on a 2-core machine one run is
  // at the mercy of whatever else wakes up, and that must not decide a ratio.
  for (let round = 0; round < 2; round += 1) {
    for (const name of BENCHED) {
      const one = SUBJECTS[name]!(bench.appUrl, 1);
      const sixteen = SUBJECTS[name]!(bench.appUrl, 16);
      try {
        const tag = `${run}-${round}-${name.replace(/\W+/g, '_')}`;
        const c1 = await measureThroughput(freshCall(one, `${tag}-c1`), { concurrency: 1, seconds });
        const c16 = await measureWithCpu(freshCall(sixteen, `${tag}-c16`), seconds);
        const bareC16 = bareOf(name) === name ? await measureWithCpu(bareCall(sixteen, `${tag}-bare`), seconds) : undefined;
        const previous = throughput[name];
        throughput[name] = { c1: better(previous?.c1, c1), c16: better(previous?.c16, c16), ...(bareC16 && { bareC16: better(previous?.bareC16, bareC16) }) };
        console.log(
          `  round ${round + 1} ${name}: ${Math.round(c1.opsPerSecond)} ops/s at c=1, ${Math.round(c16.opsPerSecond)} ops/s at c=16` +
            (bareC16 ? `, bare ${Math.round(bareC16.opsPerSecond)} ops/s at c=16` : ''),
        );
      } finally {
        await one.close();
        await sixteen.close();
      }
    }
  }
  const kysely = throughput.kysely!;
  const bare = (name: string) => throughput[bareOf(name)]!.bareC16!.opsPerSecond;
  /** Milliseconds pg-once adds to a call through a library, at c=16 (the machine saturated). */
  const added = (name: string) => 1_000 / throughput[name]!.c16.opsPerSecond - 1_000 / bare(name);
  /**
   * The throughput a library would reach x Kysely's if pg-once added through it exactly what it
   * adds through Kysely: its own bare cost plus Kysely's added cost. Below 0.95, the issue's
   * target is out of pg-once's reach through that library: its own per-call cost decides.
   */
  const ceiling = (name: string) => 1_000 / (1_000 / bare(name) + added('kysely')) / kysely.c16.opsPerSecond;
  const bareRow = (name: string) => throughput[bareOf(name)]!.bareC16!;
  const ratios: Record<string, number> = {};
  for (const name of BENCHED) {
    ratios[`${name}: x kysely at c=16 were pg-once's added cost Kysely's (the library's own ceiling)`] = ceiling(name);
    ratios[`${name} / kysely at c=16 (target >= 0.95)`] = throughput[name]!.c16.opsPerSecond / kysely.c16.opsPerSecond;
    ratios[`${name} / its bare transaction at c=16`] = throughput[name]!.c16.opsPerSecond / bare(name);
    ratios[`${name}: pg-once's added ms per call / through kysely at c=16 (target <= 1.05)`] = added(name) / added('kysely');
  }
  console.log('\nDatabase libraries: fresh calls, ops/s (higher is better), against Kysely and against the library alone, in this run');
  printTable(
    [
      'library',
      'c=1 ops/s',
      'x kysely',
      'c=16 ops/s',
      'x kysely',
      'ceiling',
      'bare c=16',
      'x bare',
      'added ms/call',
      'x kysely',
      'node us/call (bare)',
      'postgres us/call (bare)',
      'round trips (pg-once / bare)',
    ],
    BENCHED.map((name) => {
      const row = throughput[name]!;
      return [
        name,
        row.c1.opsPerSecond,
        row.c1.opsPerSecond / kysely.c1.opsPerSecond,
        row.c16.opsPerSecond,
        row.c16.opsPerSecond / kysely.c16.opsPerSecond,
        ceiling(name),
        bare(name),
        row.c16.opsPerSecond / bare(name),
        added(name),
        added(name) / added('kysely'),
        `${Math.round(row.c16.nodeMicrosPerCall)} (${Math.round(bareRow(name).nodeMicrosPerCall)})`,
        `${Math.round(row.c16.postgresMicrosPerCall)} (${Math.round(bareRow(name).postgresMicrosPerCall)})`,
        `${roundTrips[name]!.pgOnce} / ${roundTrips[name]!.bare}`,
      ];
    }),
  );
  return { throughput, roundTrips, ratios };
}
