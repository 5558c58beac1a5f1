/**
 * The soak benchmark (issue 20, first part): writers and a relay running while simulated days
 * pass, to see whether pg-once's cost stays flat as its tables churn.
 *
 * - A simulated day is a fixed number of calls (`perDay`, 20,000 x --scale). 8 concurrent writers
 *   each do withTenant + runIdempotent (fresh key) + a business insert + one enqueue, over 8
 *   tenants; half the events carry an ordering key (16 per tenant).
 * - A relay (startRelay, instant function sink, its own cron sweep off) delivers them as they
 *   commit. Commit-to-sink latency is measured as in bench/relay.ts: from the writer's COMMIT
 *   returning to the sink call.
 * - ttl and retention are one simulated day: the keys' ttl is 0.9 x the previous day's wall time
 *   (day 1: estimated from a short warm-up), and at the end of each day sweep() runs, in the
 *   background while the next day's writers run, with outboxRetention = auditRetention = the wall
 *   time of the day that just ended. The business table (orders) is trimmed to the same window,
 *   so only pg-once's own tables change from day to day.
 * - At the end of each day (writers stopped, relay drained, before the sweep): table and index
 *   sizes, live and dead tuples, autovacuum counts of once.outbox_events and once.idempotency_keys,
 *   and the server time of the relay's claim statement on the day's table (EXPLAIN ANALYZE with
 *   nothing due: what every poll costs; best of 5).
 */
import { sql } from 'kysely';
import pg from 'pg';
import { writeFile } from 'node:fs/promises';
import * as viaPg from '../src/drivers/pg.ts';
import { enqueue, runIdempotent, startRelay, sweep, withTenant, type SweepResult } from '../src/index.ts';
import { CLAIM_EVENTS_TEXT } from '../src/outbox/sql/claim-events.ts';
import { percentile, printTable } from './harness.ts';
import type { BenchDatabase } from './setup.ts';
import { type TableStats, tableStats } from './soak-stats.ts';

const WRITERS = 8;
const TENANTS = 8;
const KEYS_PER_TENANT = 16;

export interface SoakDay {
  day: number;
  writes: number;
  writeSeconds: number;
  callsPerSecond: number;
  /** Writer call time (ms). */
  callMs: { p50: number; p99: number };
  /** Writer COMMIT returned -> sink call (ms). */
  commitToSinkMs: { p50: number; p99: number; samples: number };
  /** Server time of the claim statement with nothing due, at the day's end (ms, best of 5). */
  claimPollMs: number;
  /** Server time of the claim statement while the writers run (ms; one sample a second). */
  claimUnderLoadMs: { p50: number; p99: number; samples: number };
  /** Seconds from the last write to the last delivery. */
  drainSeconds: number;
  ttlMs: number;
  outbox: TableStats;
  keys: TableStats;
  /** The sweep started at the end of the previous day (it ran during this day). */
  sweepDuringDay?: SweepResult & { seconds: number };
}

/**
 * `writer`: the library the writers call pg-once through: Kysely (the default) or node-postgres
 * (pg-once/pg: named statements, about a third less server CPU per call), which lets a long run
 * reach its 10 million calls sooner; the tables see the same rows either way.
 * `partialFile`: rewritten after every day, so a long run cut short still leaves its days.
 */
export async function runSoakBench(bench: BenchDatabase, options: { days: number; perDay: number; writer?: 'kysely' | 'pg'; partialFile?: URL }) {
  const { days, perDay, writer = 'kysely', partialFile } = options;
  const total = days * perDay;
  const admin = new pg.Pool({ connectionString: bench.adminUrl, max: 2 });
  admin.on('error', () => {});
  const db = bench.kysely(WRITERS);
  const pool = new pg.Pool({ connectionString: bench.appUrl, max: WRITERS });
  pool.on('error', () => {});
  // Indexed by seq: when the writer's COMMIT returned (performance.now(), 0 = not yet), and
  // whether the sink has seen the event (duplicates are counted, never expected).
  const committedAt = new Float64Array(total);
  const delivered = new Uint8Array(total);
  let deliveredCount = 0;
  let duplicates = 0;
  let dayLatencies: number[] = [];
  let lastDeliveryAt = 0;

  const relay = await startRelay({
    connectionString: bench.relayUrl,
    handleSignals: false,
    sweep: false,
    sinks: {
      '>': async (event) => {
        const seq = (event.payload as { seq: number }).seq;
        if (seq >= total) return; // the warm-up's
        const at = performance.now();
        lastDeliveryAt = at;
        if (delivered[seq]) {
          duplicates += 1;
          return;
        }
        delivered[seq] = 1;
        deliveredCount += 1;
        // The relay can see the row a hair before the writer's COMMIT returns to it.
        queueMicrotask(() => setImmediate(() => dayLatencies.push(Math.max(0, at - (committedAt[seq] || at)))));
      },
    },
  });

  let next = 0;
  const call = async (seq: number, ttlMs: number, label = 'soak') => {
    const tenant = `tenant-${seq % TENANTS}`;
    const key = `${label}-${seq}`;
    const event = {
      topic: 'orders.created',
      payload: { seq, key },
      ...(seq % 2 === 0 ? { orderingKey: `order-${Math.floor(seq / TENANTS) % KEYS_PER_TENANT}` } : {}),
    };
    const callOptions = { tool: 'create_order', request: { key, amount: 100 }, ttl: ttlMs };
    if (writer === 'pg') {
      await viaPg.withTenant(pool, tenant, (client) =>
        viaPg.runIdempotent(
          client,
          key,
          async (c) => {
            await c.query('INSERT INTO orders (key, amount) VALUES ($1, 100)', [key]);
            await viaPg.enqueue(c, event);
            return { orderId: key };
          },
          callOptions,
        ),
      );
      return;
    }
    await withTenant(db, tenant, (tx) =>
      runIdempotent(
        tx,
        key,
        async (t) => {
          await sql`INSERT INTO orders (key, amount) VALUES (${key}, 100)`.execute(t);
          await enqueue(t, event);
          return { orderId: key };
        },
        callOptions,
      ),
    );
  };

  try {
    // Warm-up (not counted; its events are delivered but not measured): the calls per second
    // that set day 1's ttl.
    const warmStart = performance.now();
    let warmStarted = 0;
    let warmDone = 0;
    await Promise.all(
      Array.from({ length: WRITERS }, async () => {
        while (performance.now() - warmStart < 2_000) {
          await call(total + warmStarted++, 2_000, 'warm');
          warmDone += 1;
        }
      }),
    );
    let dayWallMs = (perDay / (warmDone / ((performance.now() - warmStart) / 1_000))) * 1_000;
    console.log(
      `  warm-up: ${warmDone} calls in ${((performance.now() - warmStart) / 1_000).toFixed(1)} s; day 1 estimated at ${(dayWallMs / 1_000).toFixed(1)} s`,
    );

    const results: SoakDay[] = [];
    let sweepRunning: Promise<SweepResult & { seconds: number }> | undefined;
    let ordersCut = 0;
    for (let day = 1; day <= days; day += 1) {
      const ttlMs = Math.max(1_000, Math.round(dayWallMs * 0.9));
      const dayStart = performance.now();
      const dayEnd = day * perDay;
      dayLatencies = [];
      const callTimes: number[] = [];
      let errors = 0;
      let firstError: unknown;
      // The claim statement's server time while the writers run (sampled every second, rolled
      // back: it takes nothing from the relay for longer than the sample).
      const claimSamples: number[] = [];
      let writing = true;
      const sampler = (async () => {
        while (writing) {
          await new Promise((resolve) => setTimeout(resolve, 1_000));
          if (writing) claimSamples.push(await claimTime(admin));
        }
      })();
      await Promise.all(
        Array.from({ length: WRITERS }, async () => {
          while (next < dayEnd) {
            const seq = next++;
            const started = performance.now();
            try {
              await call(seq, ttlMs);
              committedAt[seq] = performance.now();
              callTimes.push(committedAt[seq] - started);
            } catch (error) {
              errors += 1;
              firstError ??= error;
              delivered[seq] = 1; // never committed: nothing to wait for
              deliveredCount += 1;
            }
          }
        }),
      );
      const writeSeconds = (performance.now() - dayStart) / 1_000;
      writing = false;
      await sampler;
      claimSamples.sort((a, b) => a - b);
      if (errors > 0) console.error(`  day ${day}: ${errors} writer errors, first:`, firstError);
      const writesDone = performance.now();
      while (deliveredCount < dayEnd) await new Promise((resolve) => setTimeout(resolve, 10));
      const drainSeconds = Math.max(0, (lastDeliveryAt - writesDone) / 1_000);
      await new Promise((resolve) => setTimeout(resolve, 20)); // let the latency samples land
      const sweepDuringDay = sweepRunning ? await sweepRunning : undefined;
      dayWallMs = performance.now() - dayStart;

      const [outbox, keys] = await Promise.all([tableStats(admin, 'once.outbox_events'), tableStats(admin, 'once.idempotency_keys')]);
      const claimPollMs = await claimPoll(admin);
      const sorted = dayLatencies.sort((a, b) => a - b);
      callTimes.sort((a, b) => a - b);
      const result: SoakDay = {
        day,
        writes: perDay - errors,
        writeSeconds,
        callsPerSecond: (perDay - errors) / writeSeconds,
        callMs: { p50: percentile(callTimes, 50), p99: percentile(callTimes, 99) },
        commitToSinkMs: { p50: percentile(sorted, 50), p99: percentile(sorted, 99), samples: sorted.length },
        claimPollMs,
        claimUnderLoadMs: { p50: percentile(claimSamples, 50), p99: percentile(claimSamples, 99), samples: claimSamples.length },
        drainSeconds,
        ttlMs,
        outbox,
        keys,
        ...(sweepDuringDay ? { sweepDuringDay } : {}),
      };
      results.push(result);
      if (partialFile) await writeFile(partialFile, `${JSON.stringify({ writer, perDay, daysPlanned: days, days: results }, null, 2)}\n`);
      console.log(
        `  day ${day}: ${Math.round(result.callsPerSecond)} calls/s, commit-to-sink p50 ${result.commitToSinkMs.p50.toFixed(1)} ms ` +
          `p99 ${result.commitToSinkMs.p99.toFixed(1)} ms, outbox ${outbox.rows.toLocaleString('en-US')} rows / ` +
          `${outbox.deadTuples.toLocaleString('en-US')} dead, keys ${keys.rows.toLocaleString('en-US')} rows / ${keys.deadTuples.toLocaleString('en-US')} dead`,
      );

      // Retention = the day that just ended: the sweep deletes what was delivered (and expired)
      // before it began, while the next day's writers run. The business table is trimmed alike.
      const retentionMs = Math.round(performance.now() - dayStart);
      const { rows } = await admin.query<{ max: string | null }>('SELECT max(id)::text AS max FROM orders');
      const cut = ordersCut;
      ordersCut = Number(rows[0]?.max ?? 0);
      const sweepStarted = performance.now();
      sweepRunning =
        day === days
          ? undefined
          : (async () => {
              const swept = await sweep(bench.relayUrl, { outboxRetention: retentionMs, auditRetention: retentionMs });
              await admin.query('DELETE FROM orders WHERE id <= $1', [cut]);
              return { ...swept, seconds: (performance.now() - sweepStarted) / 1_000 };
            })();
    }

    const first = results[0]!;
    const last = results.at(-1)!;
    const steady = results[Math.min(1, results.length - 1)]!; // day 2: the first day with a full window
    const ratios = {
      'throughput last/first (goal >= 0.9)': last.callsPerSecond / first.callsPerSecond,
      'commit-to-sink p50 last/first (goal <= 1.1)': last.commitToSinkMs.p50 / first.commitToSinkMs.p50,
      'commit-to-sink p99 last/first (goal <= 1.1)': last.commitToSinkMs.p99 / first.commitToSinkMs.p99,
      'claim under load p50 last/first (goal <= 1.1)': last.claimUnderLoadMs.p50 / first.claimUnderLoadMs.p50,
      'idle claim poll last/first (goal <= 1.1)': last.claimPollMs / first.claimPollMs,
      'writer call p99 last/first (goal <= 1.1)': last.callMs.p99 / first.callMs.p99,
    };
    // Bounded by the retention window: at a day's end the tables hold at most that day and the
    // one before (the previous sweep removed the rest), so live rows <= 2 days (+ 10% for ttl
    // slack), and the heap no bigger than on day 2, the first day with a full window (+ 10%).
    const bounded = {
      outboxLiveRowsWithin2Days: last.outbox.rows <= 2.2 * perDay,
      keysLiveRowsWithin2Days: last.keys.rows <= 2.2 * perDay,
      outboxTableBytesVsDay2: last.outbox.tableBytes / steady.outbox.tableBytes,
      keysTableBytesVsDay2: last.keys.tableBytes / steady.keys.tableBytes,
      outboxIndexBytesVsDay2: last.outbox.indexBytes / steady.outbox.indexBytes,
      keysIndexBytesVsDay2: last.keys.indexBytes / steady.keys.indexBytes,
    };
    const isBounded =
      bounded.outboxLiveRowsWithin2Days &&
      bounded.keysLiveRowsWithin2Days &&
      [bounded.outboxTableBytesVsDay2, bounded.keysTableBytesVsDay2, bounded.outboxIndexBytesVsDay2, bounded.keysIndexBytesVsDay2].every((r) => r <= 1.1);

    const mb = (bytes: number) => bytes / 1_048_576;
    console.log(
      `\nSoak: ${days} simulated days of ${perDay.toLocaleString('en-US')} calls (${WRITERS} writers, runIdempotent + insert + enqueue), relay with an instant sink`,
    );
    printTable(
      [
        'day',
        'calls/s',
        'call p99 ms',
        'c2s p50 ms',
        'c2s p99 ms',
        'drain after s',
        'claim p50 ms',
        'claim max ms',
        'idle poll ms',
        'swept ev/keys',
        'sweep s',
      ],
      results.map((r) => [
        String(r.day),
        r.callsPerSecond,
        r.callMs.p99,
        r.commitToSinkMs.p50,
        r.commitToSinkMs.p99,
        r.drainSeconds,
        r.claimUnderLoadMs.p50,
        r.claimUnderLoadMs.p99,
        r.claimPollMs,
        r.sweepDuringDay ? `${r.sweepDuringDay.outboxEvents}/${r.sweepDuringDay.idempotencyKeys}` : '-',
        r.sweepDuringDay?.seconds ?? Number.NaN,
      ]),
    );
    console.log("\nTables at each day's end (before its sweep): MB, tuples, autovacuum runs");
    printTable(
      ['day', 'outbox heap', 'outbox idx', 'outbox rows', 'outbox dead', 'outbox av', 'keys heap', 'keys idx', 'keys rows', 'keys dead', 'keys av'],
      results.map((r) => [
        String(r.day),
        mb(r.outbox.tableBytes),
        mb(r.outbox.indexBytes),
        r.outbox.rows,
        r.outbox.deadTuples,
        String(r.outbox.autovacuumCount),
        mb(r.keys.tableBytes),
        mb(r.keys.indexBytes),
        r.keys.rows,
        r.keys.deadTuples,
        String(r.keys.autovacuumCount),
      ]),
    );
    console.log(`\nLast day vs first day (duplicates delivered: ${duplicates}):`);
    for (const [name, value] of Object.entries(ratios)) console.log(`  ${name}: ${value.toFixed(2)}`);
    console.log(
      `Bounded by the retention window (rows <= 2 days, heap and indexes <= 1.1 x day 2): ${isBounded ? 'yes' : 'no'} ` +
        `(outbox heap ${bounded.outboxTableBytesVsDay2.toFixed(2)}, idx ${bounded.outboxIndexBytesVsDay2.toFixed(2)}; ` +
        `keys heap ${bounded.keysTableBytesVsDay2.toFixed(2)}, idx ${bounded.keysIndexBytesVsDay2.toFixed(2)} x day 2)`,
    );
    return { days, perDay, writer, writers: WRITERS, tenants: TENANTS, duplicates, results, ratios, bounded: { ...bounded, isBounded } };
  } finally {
    await relay.stop();
    await admin.end();
    await pool.end();
  }
}

/** The relay's claim statement with nothing due, run and rolled back: server time, best of 5. */
async function claimPoll(admin: pg.Pool): Promise<number> {
  const times: number[] = [];
  for (let round = 0; round < 5; round += 1) times.push(await claimTime(admin));
  return Math.min(...times);
}

/** One run of the relay's claim statement (parameters as in bench/relay.ts), rolled back: server ms. */
async function claimTime(admin: pg.Pool): Promise<number> {
  const client = await admin.connect();
  try {
    await client.query('BEGIN');
    await client.query('SET LOCAL jit = off'); // as on the relay's own connections
    const { rows } = await client.query(`EXPLAIN (ANALYZE, TIMING OFF) ${CLAIM_EVENTS_TEXT}`, [512, 750, 'soak', 25, '', 63]);
    const plan = rows.map((row: Record<string, string>) => row['QUERY PLAN']).join('\n');
    return Number(/Execution Time: ([\d.]+)/.exec(plan)![1]);
  } finally {
    await client.query('ROLLBACK');
    client.release();
  }
}
