/**
 * The many-relays bench (issue 20): 1, 2 and 4 relay PROCESSES (bench/relays-child.ts) on one
 * database, over 8 tenants whose events are half under ordering keys (16 keys per tenant) and
 * half without one.
 *
 * - backlog: `events` events committed at once (one INSERT, analysed in the same transaction)
 *   while the relays sit idle; drain rate = events / (last sink call - first sink call), through
 *   an instant sink (the database is the limit) and a 10 ms sink (the sink is; more relays, or
 *   more concurrency, should help: also 1 relay at concurrency 128, the slots of 4 relays).
 * - live: writers in this process commit `liveRate` events/s (withTenant + enqueue) for
 *   `liveSeconds`; commit-to-sink latency from the writer's COMMIT returning to the sink call.
 * - idle: connections each relay holds and statements/s it sends with nothing to do, sweeps on
 *   (the defaults a deployment runs).
 * Every delivery is checked: per ordering key, sink calls (ordered by the monotonic clock, shared
 * by all processes) must follow commit order (a key's events are committed in one order: by one
 * INSERT in id order, or by one writer one after another); repeats of a dedupe id are counted as
 * duplicates, never expected. While a run drains: CPU of the relay processes, of the Postgres
 * server, of this process and of the whole machine (from /proc), pg_stat_activity sampled every
 * 25 ms (what the active backends run and wait for), and the client-side round trip of each claim
 * and settle.
 */
import pg from 'pg';
import { enqueue, withTenant } from '../src/index.ts';
import { type ActivitySummary, sampleActivity } from './activity-sampler.ts';
import { cpuSecondsByCommand, cpuSecondsSince, machineBusySeconds } from './cpu-time.ts';
import { backlogGroup, checkDeliveries, KEYS_PER_TENANT, LIVE_WRITERS, liveGroup, TENANTS } from './delivery-check.ts';
import { percentile, printTable } from './harness.ts';
import { type RelayChild, type RelayPlan, startChildren, stopChildren } from './relay-children.ts';
import type { ChildResult } from './relays-child.ts';
import type { BenchDatabase } from './setup.ts';

const monotonicMs = () => Number(process.hrtime.bigint()) / 1e6;

interface Latency {
  p50: number;
  p99: number;
  samples: number;
}

export interface RelaysRun extends RelayPlan {
  mode: 'backlog' | 'live';
  events: number;
  /** backlog: first to last sink call; live: the writers' time. */
  seconds: number;
  /** backlog: events drained per second; live: events committed per second. */
  perSecond: number;
  /** live only: writer's COMMIT returned -> sink call (ms). */
  commitToSinkMs?: Latency;
  /** Seconds from the last commit to the last sink call (live) . */
  tailSeconds?: number;
  outOfOrder: number;
  duplicates: number;
  missing: number;
  /** Client-side round trips of the relays' claims and settles (ms), and rows per claim. */
  claimMs: Latency & { rowsPerClaim: number };
  settleMs: Latency;
  /**
   * CPU in cores (CPU seconds / wall seconds) over the measured window: the relay processes
   * together; every process of the Postgres server (all databases, WAL writer, checkpointer);
   * this bench process (its writers, in the live part); the whole machine, which on a shared
   * machine includes other people's work (machine - the rest).
   */
  cpu: { relays: number; perRelay: number; server: number; bench: number; machine: number };
  activity: ActivitySummary;
}

export interface IdleRelays {
  relays: number;
  connectionsPerRelay: number;
  statementsPerSecondPerRelay: number;
}

function summarise(values: number[]): Latency {
  const sorted = [...values].sort((a, b) => a - b);
  return { p50: percentile(sorted, 50), p99: percentile(sorted, 99), samples: sorted.length };
}

async function pendingLeft(admin: pg.Pool): Promise<boolean> {
  return (await admin.query("SELECT 1 FROM once.outbox_events WHERE status = 'pending' LIMIT 1")).rowCount !== 0;
}

/**
 * Measures CPU and activity while `measured` runs (after `before`, if given: the sampler
 * connects and samples meanwhile, so that the relays' backends are seen from the start), then
 * stops the relays.
 */
async function measure(bench: BenchDatabase, children: RelayChild[], measured: () => Promise<void>, before?: () => Promise<void>) {
  const relayUser = decodeURIComponent(new URL(bench.relayUrl).username);
  const sampler = sampleActivity(bench.adminUrl, relayUser);
  await before?.();
  const relayCpu0 = children.map((child) => child.cpuSeconds());
  const server0 = cpuSecondsByCommand('postgres');
  const bench0 = process.cpuUsage();
  const machine0 = machineBusySeconds();
  const started = monotonicMs();
  await measured();
  const wallSeconds = (monotonicMs() - started) / 1_000;
  const relayCpu = children.reduce((sum, child, i) => sum + child.cpuSeconds() - relayCpu0[i]!, 0);
  const machine = machineBusySeconds() - machine0;
  const server = cpuSecondsSince(server0, cpuSecondsByCommand('postgres'));
  const benchUsage = process.cpuUsage(bench0);
  const activity = await sampler.stop();
  const results = await stopChildren(children);
  return {
    results,
    activity,
    cpu: {
      relays: relayCpu / wallSeconds,
      perRelay: relayCpu / wallSeconds / children.length,
      server: server / wallSeconds,
      bench: (benchUsage.user + benchUsage.system) / 1e6 / wallSeconds,
      machine: machine / wallSeconds,
    },
  };
}

/** What every run reports alike: the delivery check, the statements' times, CPU and activity. */
function outcome(
  check: { outOfOrder: number; duplicates: number; missing: number },
  results: ChildResult[],
  { cpu, activity }: { cpu: RelaysRun['cpu']; activity: RelaysRun['activity'] },
) {
  const claims = results.reduce((sum, r) => sum + r.claimMs.length, 0);
  // The children know the claim by its statement name or text (relays-child.ts, kindOf): a relay
  // whose claim changed both would deliver with no claim timed, which must not pass unnoticed.
  if (claims === 0) console.warn('  no claim statement was recognised: update kindOf() in bench/relays-child.ts');
  return {
    outOfOrder: check.outOfOrder,
    duplicates: check.duplicates,
    missing: check.missing,
    claimMs: { ...summarise(results.flatMap((r) => r.claimMs)), rowsPerClaim: results.reduce((sum, r) => sum + r.claimRows, 0) / Math.max(1, claims) },
    settleMs: summarise(results.flatMap((r) => r.settleMs)),
    cpu,
    activity,
  };
}

async function backlogRun(bench: BenchDatabase, admin: pg.Pool, plan: RelayPlan, events: number): Promise<RelaysRun> {
  await admin.query('TRUNCATE once.outbox_events');
  const children = await startChildren(bench, plan);
  // Measured from the commit on: the insert's own CPU is not the relays' cost.
  const measured = await measure(
    bench,
    children,
    async () => {
      while (await pendingLeft(admin)) await new Promise((resolve) => setTimeout(resolve, 20));
    },
    async () => {
      const client = await admin.connect();
      try {
        // Analysed in the same transaction: the relays' first claim plans with the backlog's statistics.
        await client.query('BEGIN');
        await client.query(
          `INSERT INTO once.outbox_events (tenant_id, dedupe_id, topic, ordering_key, payload, payload_text)
         SELECT 'tenant-' || (i % $2::int), 'relays-' || i, 'relays.event',
                CASE WHEN (i / $2::int) % 2 = 0 THEN 'key-' || ((i / (2 * $2::int)) % $3::int) END, p, p::text
           FROM generate_series(0, $1::int - 1) i, LATERAL (SELECT jsonb_build_object('s', i) AS p) payload
          ORDER BY i`,
          [events, TENANTS, KEYS_PER_TENANT],
        );
        await client.query('ANALYZE once.outbox_events');
        await client.query('COMMIT');
      } finally {
        client.release();
      }
    },
  );
  const { results } = measured;
  const check = checkDeliveries(results, events, backlogGroup);
  const seconds = (check.lastAt - check.firstAt) / 1_000;
  return {
    mode: 'backlog',
    ...plan,
    events,
    seconds,
    perSecond: events / seconds,
    ...outcome(check, results, measured),
  };
}

async function liveRun(bench: BenchDatabase, admin: pg.Pool, plan: RelayPlan, rate: number, seconds: number): Promise<RelaysRun> {
  await admin.query('TRUNCATE once.outbox_events');
  await admin.query('ANALYZE once.outbox_events');
  const total = Math.round(rate * seconds);
  const committedAt = new Float64Array(total);
  const db = bench.kysely(LIVE_WRITERS);
  const children = await startChildren(bench, plan);
  let writeSeconds = 0;
  let lastCommit = 0;
  const measured = await measure(bench, children, async () => {
    const started = monotonicMs();
    await Promise.all(
      Array.from({ length: LIVE_WRITERS }, async (_, writer) => {
        for (let seq = writer; seq < total; seq += LIVE_WRITERS) {
          const due = started + (seq * 1_000) / rate;
          const wait = due - monotonicMs();
          if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
          const group = liveGroup(seq);
          await withTenant(db, `tenant-${seq % TENANTS}`, (tx) =>
            enqueue(tx, { topic: 'relays.live', payload: { s: seq }, ...(group ? { orderingKey: group.split('/')[1]! } : {}) }),
          );
          committedAt[seq] = monotonicMs();
        }
      }),
    );
    lastCommit = monotonicMs();
    writeSeconds = (lastCommit - started) / 1_000;
    while (await pendingLeft(admin)) await new Promise((resolve) => setTimeout(resolve, 20));
  });
  const { results } = measured;
  const check = checkDeliveries(results, total, liveGroup);
  // The relay can see a row a hair before the writer's COMMIT returns to it: 0, not negative.
  const latencies = check.deliveries.map((d) => Math.max(0, d.at - committedAt[d.seq]!));
  return {
    mode: 'live',
    ...plan,
    events: total,
    seconds: writeSeconds,
    perSecond: total / writeSeconds,
    commitToSinkMs: summarise(latencies),
    tailSeconds: Math.max(0, (check.lastAt - lastCommit) / 1_000),
    ...outcome(check, results, measured),
  };
}

/** Relays with nothing to do, sweeps on: connections each holds, statements/s each sends. */
async function idleRun(bench: BenchDatabase, admin: pg.Pool, relays: number, idleSeconds: number): Promise<IdleRelays> {
  await admin.query('TRUNCATE once.outbox_events');
  const children = await startChildren(bench, { relays, sinkMs: 0, concurrency: 32 }, true);
  await new Promise((resolve) => setTimeout(resolve, 2_000)); // start-up statements are not idle cost
  for (const child of children) child.send('mark');
  const relayUser = decodeURIComponent(new URL(bench.relayUrl).username);
  const sampler = sampleActivity(bench.adminUrl, relayUser, 200);
  await new Promise((resolve) => setTimeout(resolve, idleSeconds * 1_000));
  const activity = await sampler.stop();
  const results = await stopChildren(children);
  const statements = results.reduce((sum, r) => sum + r.statements / r.seconds, 0);
  return { relays, connectionsPerRelay: activity.relayConnectionsMax / relays, statementsPerSecondPerRelay: statements / relays };
}

export const RELAYS_PARTS = ['backlog', 'live', 'idle'] as const;

export async function runRelaysBench(
  bench: BenchDatabase,
  options: { events: number; liveRate?: number; liveSeconds?: number; counts?: number[]; only?: readonly string[] },
) {
  const counts = options.counts ?? [1, 2, 4];
  const liveRate = options.liveRate ?? 200;
  const liveSeconds = options.liveSeconds ?? 8;
  for (const part of options.only ?? []) {
    if (!(RELAYS_PARTS as readonly string[]).includes(part)) throw new Error(`unknown relays bench part "${part}" (known: ${RELAYS_PARTS.join(', ')})`);
  }
  const wanted = (part: (typeof RELAYS_PARTS)[number]) => !options.only || options.only.includes(part);
  const admin = new pg.Pool({ connectionString: bench.adminUrl, max: 2 });
  admin.on('error', () => {});
  try {
    const backlog: RelaysRun[] = [];
    const live: RelaysRun[] = [];
    const idle: IdleRelays[] = [];
    if (wanted('backlog')) {
      for (const sinkMs of [0, 10]) {
        for (const relays of counts) {
          const run = await backlogRun(bench, admin, { relays, sinkMs, concurrency: 32 }, options.events);
          console.log(
            `  backlog, ${relays} relay(s), ${sinkMs} ms sink: ${Math.round(run.perSecond)} events/s, ${run.outOfOrder} out of order, ${run.duplicates} duplicates, ${run.missing} missing`,
          );
          backlog.push(run);
        }
      }
      // The same 128 delivery slots as 4 relays, in one process.
      const run = await backlogRun(bench, admin, { relays: 1, sinkMs: 10, concurrency: 128 }, options.events);
      console.log(`  backlog, 1 relay at concurrency 128, 10 ms sink: ${Math.round(run.perSecond)} events/s`);
      backlog.push(run);
    }
    if (wanted('live')) {
      for (const sinkMs of [0, 10]) {
        for (const relays of counts) {
          const run = await liveRun(bench, admin, { relays, sinkMs, concurrency: 32 }, liveRate, liveSeconds);
          console.log(
            `  live ${liveRate}/s, ${relays} relay(s), ${sinkMs} ms sink: commit-to-sink p50 ${run.commitToSinkMs!.p50.toFixed(1)} ms, p99 ${run.commitToSinkMs!.p99.toFixed(1)} ms`,
          );
          live.push(run);
        }
      }
    }
    if (wanted('idle')) for (const relays of [1, Math.max(...counts)]) idle.push(await idleRun(bench, admin, relays, 10));
    printRuns(`Backlog of ${options.events.toLocaleString('en-US')} events (8 tenants, half under 128 ordering keys), drained by relay processes`, backlog);
    printRuns(`Live: writers commit ${liveRate} events/s for ${liveSeconds} s`, live);
    if (idle.length > 0) {
      console.log('\nIdle relays (sweeps on): what each costs the database');
      printTable(
        ['relays', 'connections per relay', 'statements/s per relay'],
        idle.map((r) => [String(r.relays), r.connectionsPerRelay, r.statementsPerSecondPerRelay]),
      );
    }
    return { tenants: TENANTS, keysPerTenant: KEYS_PER_TENANT, liveRate, liveSeconds, backlog, live, idle };
  } finally {
    await admin.end();
  }
}

function printRuns(title: string, runs: RelaysRun[]): void {
  if (runs.length === 0) return;
  console.log(`\n${title}`);
  printTable(
    [
      'relays x concurrency, sink',
      'events/s',
      'c2s p50 ms',
      'c2s p99 ms',
      'order errs',
      'dups',
      'claim p50 ms',
      'claim p99 ms',
      'rows/claim',
      'CPU relays',
      'CPU server',
      'CPU bench',
      'CPU machine',
      'active backends',
    ],
    runs.map((r) => [
      `${r.relays} x ${r.concurrency}, ${r.sinkMs} ms`,
      r.perSecond,
      r.commitToSinkMs?.p50 ?? Number.NaN,
      r.commitToSinkMs?.p99 ?? Number.NaN,
      String(r.outOfOrder + r.missing),
      String(r.duplicates),
      r.claimMs.p50,
      r.claimMs.p99,
      r.claimMs.rowsPerClaim,
      r.cpu.relays,
      r.cpu.server,
      r.cpu.bench,
      r.cpu.machine,
      r.activity.activeBackends,
    ]),
  );
  console.log('What the active backends ran / waited for (share of samples, top 4):');
  for (const r of runs) {
    const top = r.activity.shares
      .slice(0, 4)
      .map((s) => `${s.what} ${(s.share * 100).toFixed(0)}%`)
      .join(', ');
    console.log(`  ${r.relays} x ${r.concurrency}, ${r.sinkMs} ms: ${top}`);
  }
}
