/**
 * The relay benchmark (issue "The relay"):
 * - drain rate of 20,000 queued events to a no-op sink, vs raw graphile-worker draining 20,000
 *   no-op jobs in the same run, with its default settings and with its batched local queue;
 * - latency from commit to sink call at light load (50 events/s), pg-once vs graphile-worker;
 * - relay RSS while draining 100,000 events (a relay in a child process, sampled from /proc);
 * - fairness across tenants: tenant A's backlog of 50,000 drains through a 10 ms sink
 *   (concurrency 32) while tenant B commits one event a second; B's latency from commit to sink
 *   call, and A's drain rate with B beside it vs alone;
 * - relay RSS while draining events of 1 MiB;
 * - blocked keys: server time of an idle poll (the claim statement finding nothing to claim) with
 *   100,000 due events behind 100 ordering-key heads that are backing off;
 * - one ordering key's throughput with an instant sink (relay-key.ts);
 * - an idle relay's statements per second, and the first event's latency after idling (relay-idle.ts).
 * `--only drain,key` runs some of them (RELAY_PARTS).
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { Logger, run } from 'graphile-worker';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { enqueue, type RelayOptions, startRelay, withTenant } from '../src/index.ts';
import { CLAIM_EVENTS_TEXT } from '../src/outbox/sql/claim-events.ts';
import { percentile, printTable } from './harness.ts';
import { type IdleCost, idleCost } from './relay-idle.ts';
import { type KeyThroughput, keyThroughput } from './relay-key.ts';
import type { BenchDatabase } from './setup.ts';

const silent = new Logger(() => () => {});
const MIB = 1_048_576;
/** Events of the uncounted warm-up drain of each side (see the drain part). */
const WARM_UP_EVENTS = 10_000;

/** `count` events of 10 tenants; with `payloadBytes`, each payload is a JSON string that long. */
async function fillOutbox(admin: pg.Pool, count: number, payloadBytes?: number): Promise<void> {
  await admin.query('TRUNCATE once.outbox_events');
  await admin.query(
    `INSERT INTO once.outbox_events (tenant_id, dedupe_id, topic, payload)
     SELECT 'tenant-' || (i % 10), 'bench-' || i, 'bench.event',
            CASE WHEN $2::int IS NULL THEN jsonb_build_object('i', i) ELSE to_jsonb(repeat(md5(i::text), $2::int / 32)) END
       FROM generate_series(1, $1) i`,
    [count, payloadBytes ?? null],
  );
  await admin.query('VACUUM ANALYZE once.outbox_events');
}

async function fillJobs(admin: pg.Pool, count: number): Promise<void> {
  await admin.query('DELETE FROM graphile_worker._private_jobs');
  await admin.query(
    `SELECT graphile_worker.add_jobs(array_agg(row('noop', json_build_object('i', i), null, null, null, null, null, null)::graphile_worker.job_spec))
       FROM generate_series(1, $1) i`,
    [count],
  );
  await admin.query('VACUUM ANALYZE graphile_worker._private_jobs');
}

async function waitUntil(check: () => Promise<boolean>): Promise<void> {
  while (!(await check())) await new Promise((resolve) => setTimeout(resolve, 20));
}

async function drainPgOnce(bench: BenchDatabase, admin: pg.Pool, count: number): Promise<number> {
  await fillOutbox(admin, count);
  const started = performance.now();
  const relay = await startRelay({ connectionString: bench.relayUrl, sinks: { '>': async () => {} }, handleSignals: false });
  await waitUntil(async () => (await admin.query("SELECT 1 FROM once.outbox_events WHERE status = 'pending' LIMIT 1")).rowCount === 0);
  const seconds = (performance.now() - started) / 1_000;
  await relay.stop();
  return count / seconds;
}

async function drainGraphileWorker(bench: BenchDatabase, admin: pg.Pool, count: number, batched: boolean): Promise<number> {
  await fillJobs(admin, count);
  const started = performance.now();
  const runner = await run({
    connectionString: bench.adminUrl,
    taskList: { noop: async () => {} },
    logger: silent,
    noHandleSignals: true,
    ...(batched ? { preset: { worker: { concurrentJobs: 32, localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } } } : {}),
  });
  await waitUntil(async () => (await admin.query('SELECT 1 FROM graphile_worker._private_jobs LIMIT 1')).rowCount === 0);
  const seconds = (performance.now() - started) / 1_000;
  await runner.stop();
  return count / seconds;
}

export interface Latency {
  p50: number;
  p99: number;
  samples: number;
}

/**
 * Commit (as the writer sees it: its COMMIT returned) to the sink call, at `perSecond` events/s.
 * `relayOptions` and `ready` (awaited after the relay started, before the first event) let the
 * doorbell bench (doorbell.ts) measure the same way with its wake-up on.
 */
export async function latencyPgOnce(
  bench: BenchDatabase,
  admin: pg.Pool,
  seconds: number,
  perSecond: number,
  relayOptions: Partial<RelayOptions> = {},
  ready: () => Promise<void> = async () => {},
): Promise<Latency> {
  await admin.query('TRUNCATE once.outbox_events');
  const committedAt = new Map<number, number>();
  const latencies: number[] = [];
  const relay = await startRelay({
    connectionString: bench.relayUrl,
    handleSignals: false,
    sinks: {
      '>': async (event) => {
        const seq = (event.payload as { seq: number }).seq;
        const at = performance.now();
        // The relay can see the row a hair before the writer's COMMIT returns to it.
        queueMicrotask(() => setImmediate(() => latencies.push(Math.max(0, at - (committedAt.get(seq) ?? at)))));
      },
    },
    ...relayOptions,
  });
  await ready();
  const db = bench.kysely(2);
  const total = Math.round(seconds * perSecond);
  for (let seq = 0; seq < total; seq += 1) {
    await withTenant(db, `tenant-${seq % 10}`, (tx) => enqueue(tx, { topic: 'latency', payload: { seq } }));
    committedAt.set(seq, performance.now());
    await new Promise((resolve) => setTimeout(resolve, 1_000 / perSecond));
  }
  await new Promise((resolve) => setTimeout(resolve, 200));
  await relay.stop();
  return summarise(latencies);
}

export async function latencyGraphileWorker(bench: BenchDatabase, admin: pg.Pool, seconds: number, perSecond: number): Promise<Latency> {
  await admin.query('DELETE FROM graphile_worker._private_jobs');
  const committedAt = new Map<number, number>();
  const latencies: number[] = [];
  const runner = await run({
    connectionString: bench.adminUrl,
    logger: silent,
    noHandleSignals: true,
    taskList: {
      latency: async (payload) => {
        const seq = (payload as { seq: number }).seq;
        const at = performance.now();
        setImmediate(() => latencies.push(Math.max(0, at - (committedAt.get(seq) ?? at))));
      },
    },
  });
  const db = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: bench.adminUrl, max: 2 }) }) });
  const total = Math.round(seconds * perSecond);
  for (let seq = 0; seq < total; seq += 1) {
    // As in the business transaction: add_job inside it (as the superuser owner: the bench's
    // application role has no grants on graphile-worker's schema).
    await db.transaction().execute((tx) => sql`SELECT graphile_worker.add_job('latency', ${JSON.stringify({ seq })}::json)`.execute(tx));
    committedAt.set(seq, performance.now());
    await new Promise((resolve) => setTimeout(resolve, 1_000 / perSecond));
  }
  await new Promise((resolve) => setTimeout(resolve, 200));
  await runner.stop();
  await db.destroy();
  return summarise(latencies);
}

export interface Fairness {
  /** B's latency from commit to sink call, while A's backlog drains (ms). */
  b: Latency;
  /** A's drain rate alone, and with B's trickle beside it (events/s). */
  aAlone: number;
  aWithB: number;
  /** (alone - with B) / alone. */
  aDrop: number;
}

/** Tenant A's backlog through a 10 ms sink at concurrency 32; B commits `bPerSecond` while it drains. */
export async function fairnessPgOnce(bench: BenchDatabase, admin: pg.Pool, backlog: number, bPerSecond = 1): Promise<Fairness> {
  const SINK_MILLISECONDS = 10;
  const drainA = async (withB: boolean) => {
    await admin.query('TRUNCATE once.outbox_events');
    await admin.query(
      `INSERT INTO once.outbox_events (tenant_id, dedupe_id, topic, payload)
       SELECT 'tenant-a', 'a-' || i, 'backlog', jsonb_build_object('i', i) FROM generate_series(1, $1) i`,
      [backlog],
    );
    await admin.query('VACUUM ANALYZE once.outbox_events');
    const committedAt = new Map<number, number>();
    const latencies: number[] = [];
    let aLeft = backlog;
    let aDone!: () => void;
    const aDrained = new Promise<void>((resolve) => (aDone = resolve));
    const relay = await startRelay({
      connectionString: bench.relayUrl,
      handleSignals: false,
      sweep: false,
      concurrency: 32,
      sinks: {
        '>': async (event) => {
          const at = performance.now();
          if (event.tenantId === 'tenant-b') {
            const seq = (event.payload as { seq: number }).seq;
            queueMicrotask(() => setImmediate(() => latencies.push(Math.max(0, at - (committedAt.get(seq) ?? at)))));
          }
          await new Promise((resolve) => setTimeout(resolve, SINK_MILLISECONDS));
          if (event.tenantId === 'tenant-a' && --aLeft === 0) aDone();
        },
      },
    });
    const started = performance.now();
    const db = bench.kysely(1);
    let writing = withB;
    const writer = (async () => {
      for (let seq = 0; writing; seq += 1) {
        await new Promise((resolve) => setTimeout(resolve, 1_000 / bPerSecond));
        if (!writing) break;
        await withTenant(db, 'tenant-b', (tx) => enqueue(tx, { topic: 'trickle', payload: { seq } }));
        committedAt.set(seq, performance.now());
      }
    })();
    await aDrained;
    const rate = backlog / ((performance.now() - started) / 1_000);
    writing = false;
    await writer;
    await relay.stop();
    return { rate, latencies };
  };
  const alone = await drainA(false);
  const withB = await drainA(true);
  return { b: summarise(withB.latencies), aAlone: alone.rate, aWithB: withB.rate, aDrop: (alone.rate - withB.rate) / alone.rate };
}

/**
 * Server time of the claim statement (EXPLAIN ANALYZE, TIMING OFF: the execution time without
 * per-node clocks) when `followers` due events sit behind `keys` ordering-key heads that are
 * backing off, and nothing else is pending: what every idle poll costs. Best of 5.
 */
export async function blockedKeysPoll(admin: pg.Pool, followers: number, keys = 100): Promise<{ bestMs: number; medianMs: number }> {
  await admin.query('TRUNCATE once.outbox_events');
  await admin.query(
    `INSERT INTO once.outbox_events (tenant_id, dedupe_id, topic, ordering_key, payload, next_attempt_at)
     SELECT 'tenant-k', 'k-' || i, 'blocked', 'key-' || (i % $2::int), '1', CASE WHEN i <= $2::int THEN now() + interval '1 hour' ELSE now() END
       FROM generate_series(1, $1::int + $2::int) i`,
    [followers, keys],
  );
  await admin.query('VACUUM ANALYZE once.outbox_events');
  const times: number[] = [];
  for (let round = 0; round < 5; round += 1) {
    const client = await admin.connect();
    try {
      await client.query('BEGIN');
      await client.query('SET LOCAL jit = off'); // as on the relay's own connections
      const { rows } = await client.query(`EXPLAIN (ANALYZE, TIMING OFF) ${CLAIM_EVENTS_TEXT}`, [512, 750, 'bench', 25, '', 63]);
      const plan = rows.map((row: Record<string, string>) => row['QUERY PLAN']).join('\n');
      times.push(Number(/Execution Time: ([\d.]+)/.exec(plan)![1]));
    } finally {
      await client.query('ROLLBACK');
      client.release();
    }
  }
  times.sort((a, b) => a - b);
  return { bestMs: times[0]!, medianMs: times[2]! };
}

export function summarise(latencies: number[]): Latency {
  const sorted = [...latencies].sort((a, b) => a - b);
  return { p50: percentile(sorted, 50), p99: percentile(sorted, 99), samples: sorted.length };
}

/**
 * Peak RSS of a relay process draining `count` events, in MB. With `payloadBytes`, payloads of
 * that size (repeated text: Postgres stores them compressed, the relay receives every byte).
 */
export async function relayRss(bench: BenchDatabase, admin: pg.Pool, count: number, payloadBytes?: number): Promise<{ peakMb: number; seconds: number }> {
  await fillOutbox(admin, count, payloadBytes);
  const started = performance.now();
  const child = spawn(process.execPath, [new URL('./relay-child.ts', import.meta.url).pathname], {
    env: { ...process.env, DATABASE_URL: bench.relayUrl },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let peakKb = 0;
  const sampler = setInterval(async () => {
    try {
      const status = await readFile(`/proc/${child.pid}/status`, 'utf8');
      const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
      peakKb = Math.max(peakKb, kb);
    } catch {
      // the process has exited
    }
  }, 50);
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (data: Buffer) => data.toString().includes('DRAINED') && resolve());
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`relay child exited with ${code}`))));
  });
  clearInterval(sampler);
  child.kill();
  return { peakMb: peakKb / 1024, seconds: (performance.now() - started) / 1_000 };
}

/** Parts of the relay bench, in the order they run; `--only a,b` runs some of them. */
export const RELAY_PARTS = ['drain', 'latency', 'rss', 'fairness', 'bigRss', 'blockedKeys', 'key', 'idle'] as const;
type RelayPart = (typeof RELAY_PARTS)[number];

export async function runRelayBench(
  bench: BenchDatabase,
  options: {
    events: number;
    rssEvents: number;
    latencySeconds: number;
    fairnessBacklog?: number;
    bigEvents?: number;
    keyEvents?: number;
    only?: readonly string[];
  },
) {
  // 50,000 at the default scale (run.ts passes events = 20,000 x BENCH_SCALE).
  const fairnessBacklog = options.fairnessBacklog ?? Math.round(options.events * 2.5);
  // 10,000 events of 1 MiB at the default scale.
  const bigEvents = options.bigEvents ?? Math.round(options.events / 2);
  const keyEvents = options.keyEvents ?? Math.round(options.events / 4);
  const wanted = (part: RelayPart) => !options.only || options.only.includes(part);
  for (const part of options.only ?? []) {
    if (!(RELAY_PARTS as readonly string[]).includes(part)) throw new Error(`unknown relay bench part "${part}" (known: ${RELAY_PARTS.join(', ')})`);
  }
  const admin = new pg.Pool({ connectionString: bench.adminUrl, max: 2 });
  admin.on('error', () => {});
  try {
    const result: {
      drain?: { pgOnce: number; graphileWorkerDefault: number; graphileWorkerBatched: number };
      latency?: { pgOnce: Latency; graphileWorker: Latency };
      rss?: { peakMb: number; seconds: number };
      fairness?: Fairness;
      bigRss?: { peakMb: number; seconds: number };
      blockedKeys?: { bestMs: number; medianMs: number };
      key?: KeyThroughput;
      idle?: IdleCost;
    } = {};
    if (wanted('drain')) {
      // The fast drains take about a second each, so warm caches and the first start-up weigh on
      // a single run: each is measured twice, interleaved, and the better run counts, for both
      // sides. (graphile-worker's default drain takes long enough to be measured once.)
      const drain = { pgOnce: 0, graphileWorkerDefault: 0, graphileWorkerBatched: 0 };
      // One drain of each side first, not counted: the first drain in a process also pays for
      // compiling its code and growing the heap (V8 grows the young generation as it goes:
      // 15,000-20,000 page faults, a quarter of the process's CPU, in a first drain of either
      // side, against a few hundred in a warm one), and a service's relay or worker runs warm.
      await drainPgOnce(bench, admin, WARM_UP_EVENTS);
      await drainGraphileWorker(bench, admin, WARM_UP_EVENTS, true);
      for (let round = 0; round < 2; round += 1) {
        drain.pgOnce = Math.max(drain.pgOnce, await drainPgOnce(bench, admin, options.events));
        drain.graphileWorkerBatched = Math.max(drain.graphileWorkerBatched, await drainGraphileWorker(bench, admin, options.events, true));
      }
      drain.graphileWorkerDefault = await drainGraphileWorker(bench, admin, options.events, false);
      console.log(
        `  drain: pg-once ${Math.round(drain.pgOnce)}/s, graphile-worker ${Math.round(drain.graphileWorkerDefault)}/s default, ${Math.round(drain.graphileWorkerBatched)}/s batched`,
      );
      result.drain = drain;
    }
    if (wanted('latency')) {
      result.latency = {
        pgOnce: await latencyPgOnce(bench, admin, options.latencySeconds, 50),
        graphileWorker: await latencyGraphileWorker(bench, admin, options.latencySeconds, 50),
      };
    }
    if (wanted('rss')) result.rss = await relayRss(bench, admin, options.rssEvents);
    if (wanted('fairness')) result.fairness = await fairnessPgOnce(bench, admin, fairnessBacklog);
    if (wanted('bigRss')) result.bigRss = await relayRss(bench, admin, bigEvents, MIB);
    if (wanted('blockedKeys')) result.blockedKeys = await blockedKeysPoll(admin, 100_000);
    if (wanted('key')) result.key = await keyThroughput(bench, admin, keyEvents);
    if (wanted('idle')) result.idle = await idleCost(bench, admin, { idleSeconds: 10, idleTimesMs: [50, 500, 5_000], samples: 5 });

    const { drain, latency, rss, fairness, bigRss, blockedKeys, key, idle } = result;
    if (drain) {
      console.log(`\nRelay: drain of ${options.events.toLocaleString('en-US')} queued events to a no-op sink`);
      printTable(
        ['', 'events/s', 'x graphile-worker default', 'x graphile-worker batched'],
        [
          ['pg-once relay (defaults)', drain.pgOnce, drain.pgOnce / drain.graphileWorkerDefault, drain.pgOnce / drain.graphileWorkerBatched],
          ['graphile-worker, default settings', drain.graphileWorkerDefault, 1, drain.graphileWorkerDefault / drain.graphileWorkerBatched],
          ['graphile-worker, batched local queue', drain.graphileWorkerBatched, drain.graphileWorkerBatched / drain.graphileWorkerDefault, 1],
        ],
      );
    }
    if (latency) {
      console.log('\nLatency from commit to sink call at 50 events/s (ms)');
      printTable(
        ['', 'p50', 'p99', 'samples'],
        [
          ['pg-once relay (target p50 <= 5, p99 <= 25)', latency.pgOnce.p50, latency.pgOnce.p99, latency.pgOnce.samples],
          ['graphile-worker (add_job in the transaction)', latency.graphileWorker.p50, latency.graphileWorker.p99, latency.graphileWorker.samples],
        ],
      );
    }
    if (rss)
      console.log(
        `\nRelay RSS while draining ${options.rssEvents.toLocaleString('en-US')} events: peak ${rss.peakMb.toFixed(0)} MB (target <= 150), drained in ${rss.seconds.toFixed(1)} s`,
      );
    if (fairness) printFairness(fairness, fairnessBacklog);
    if (blockedKeys)
      console.log(
        `\nIdle poll with 100,000 due events behind 100 backing-off ordering-key heads: ${blockedKeys.bestMs.toFixed(2)} ms server time (median of 5: ${blockedKeys.medianMs.toFixed(2)}; target <= 1)`,
      );
    if (bigRss)
      console.log(
        `\nRelay RSS while draining ${bigEvents.toLocaleString('en-US')} events of 1 MiB: peak ${bigRss.peakMb.toFixed(0)} MB (target <= 250), drained in ${bigRss.seconds.toFixed(1)} s`,
      );
    if (key)
      console.log(
        `\nOne ordering key, ${keyEvents.toLocaleString('en-US')} events, instant sink: ${Math.round(key.perSecond)} events/s (target >= 1,000), ${key.outOfOrder} out of order, ${key.repeats} repeats`,
      );
    if (idle) printIdle(idle);
    printIssueFigures(result);
    const ratios = drain
      ? {
          'drain vs graphile-worker default (target >= 1.0)': drain.pgOnce / drain.graphileWorkerDefault,
          'drain vs graphile-worker batched (target >= 1.0)': drain.pgOnce / drain.graphileWorkerBatched,
        }
      : {};
    return { ...result, ratios };
  } finally {
    await admin.end();
  }
}

function printIdle(idle: IdleCost): void {
  console.log(`\nIdle relay: ${idle.queriesPerSecond.toFixed(1)} statements/s (sweep scheduler included; target <= 20)`);
  printTable(
    ['commit after the relay sat idle for', 'p50 (ms)', 'max (ms)', 'samples'],
    idle.firstEvent.map(({ idleMs, p50, max, samples }) => [`${idleMs.toLocaleString('en-US')} ms`, p50, max, samples]),
  );
}

/** Issue 12's figures beside their targets, from whichever parts ran. */
function printIssueFigures(result: {
  drain?: { pgOnce: number; graphileWorkerBatched: number };
  latency?: { pgOnce: Latency };
  fairness?: Fairness;
  blockedKeys?: { bestMs: number };
  key?: KeyThroughput;
  idle?: IdleCost;
}): void {
  const rows: (string | number)[][] = [];
  const { drain, latency, fairness, blockedKeys, key, idle } = result;
  if (key) rows.push(['one ordering key, instant sink (events/s)', key.perSecond, '>= 1,000', key.perSecond >= 1_000 && key.outOfOrder === 0 ? 'yes' : 'no']);
  if (idle) rows.push(['idle relay (statements/s)', idle.queriesPerSecond, '<= 20', idle.queriesPerSecond <= 20 ? 'yes' : 'no']);
  if (latency) rows.push(['commit-to-sink p50 at 50 events/s (ms)', latency.pgOnce.p50, '<= 5', latency.pgOnce.p50 <= 5 ? 'yes' : 'no']);
  if (blockedKeys) rows.push(['idle poll, 100,000 blocked events (ms server)', blockedKeys.bestMs, '<= 1', blockedKeys.bestMs <= 1 ? 'yes' : 'no']);
  if (fairness) {
    rows.push(["fairness: B's p99 (ms)", fairness.b.p99, '<= 50', fairness.b.p99 <= 50 ? 'yes' : 'no']);
    rows.push(["fairness: A's drain drop (%)", fairness.aDrop * 100, '<= 10', fairness.aDrop <= 0.1 ? 'yes' : 'no']);
  }
  if (drain) {
    const ratio = drain.pgOnce / drain.graphileWorkerBatched;
    rows.push(['drain x graphile-worker batched', ratio, '>= 1.0', ratio >= 1 ? 'yes' : 'no']);
  }
  if (rows.length === 0) return;
  console.log('\nIssue 12 figures (one run; on a shared 2-core machine, repeat before trusting one)');
  printTable(['', 'measured', 'target', 'met'], rows);
}

export function printFairness(fairness: Fairness, backlog: number): void {
  console.log(`\nFairness: tenant A's backlog of ${backlog.toLocaleString('en-US')} through a 10 ms sink (concurrency 32), tenant B 1 event/s`);
  printTable(
    ['', 'value', 'target'],
    [
      ["B's commit-to-sink p50 (ms)", fairness.b.p50, '-'],
      ["B's commit-to-sink p99 (ms)", fairness.b.p99, '<= 50'],
      ["B's samples", fairness.b.samples, '-'],
      ["A's drain alone (events/s)", fairness.aAlone, '-'],
      ["A's drain with B (events/s)", fairness.aWithB, '-'],
      ["A's drain rate drop (%)", fairness.aDrop * 100, '<= 10'],
    ],
  );
}
