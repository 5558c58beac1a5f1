/**
 * The core benchmark (issues "The core" and 18, "The write path"): ops/s at 1 and 16 callers,
 * each variant as a multiple of the floor measured in the same run:
 *   floor       a bare transaction inserting the business row (BEGIN, tenant, INSERT, COMMIT),
 *   hand        the protocol written by hand: BEGIN, tenant, claim INSERT, business INSERT,
 *               outbox INSERT, result UPDATE, COMMIT,
 *   handReplay  the same key again, by hand (claim INSERT finds the row, SELECT of the result),
 *   once        withTenant + runIdempotent + the business insert,
 *   onceEvent   the same with one enqueue,
 *   onceReplay  the same key again through pg-once (a replay, audited),
 *   worker      graphile-worker's add_job in the business transaction (it dedupes only the job),
 * and (f) 16 concurrent callers of one key (time until all 16 have the result), pg-once vs the
 * hand-written protocol. Also counts the statements each call sends (round trips).
 *
 * Three rounds over all variants, interleaved, reporting each one's median: on a shared 2-core
 * machine a single run is at the mercy of whatever else wakes up, and a variant measured only
 * while a neighbour was busy must not decide a ratio.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { sql, type Kysely, type Transaction } from 'kysely';
import { enqueue, runIdempotent, withTenant } from '../src/index.ts';
import { withSession } from '../src/internal/session.ts';
import { measureThroughput, percentile, printTable, type Throughput } from './harness.ts';
import type { BenchDatabase } from './setup.ts';

const TENANTS = 16;
const ROUNDS = 3;
const tenantOf = (worker: number) => `tenant-${worker % TENANTS}`;
let runId = 0;

type Call = (db: Kysely<any>, tenant: string, key: string) => Promise<unknown>;

async function insertOrder(tx: Transaction<any>, key: string) {
  await sql`INSERT INTO orders (key, amount) VALUES (${key}, 100)`.execute(tx);
  return { orderId: key, amount: 100, currency: 'EUR' };
}

/** The transaction a hand-written version would open: READ COMMITTED, tenant set for RLS. */
function handTransaction<T>(db: Kysely<any>, tenant: string, fn: (tx: Transaction<any>) => Promise<T>): Promise<T> {
  return db
    .transaction()
    .setIsolationLevel('read committed')
    .execute(async (tx) => {
      await sql`SELECT set_config('once.tenant_id', ${tenant}, true)`.execute(tx);
      return fn(tx);
    });
}

const floor: Call = (db, tenant, key) => handTransaction(db, tenant, (tx) => insertOrder(tx, key));

/**
 * The protocol written by hand, as a careful engineer would without pg-once: claim with INSERT ...
 * ON CONFLICT DO NOTHING (a duplicate blocks until the first commits), then either read the stored
 * result or do the work, write the outbox event and store the result. No wait bound, no audit, no
 * fingerprint check on replay, no rate limit, no re-entrancy check.
 */
const hand: Call = (db, tenant, key) =>
  handTransaction(db, tenant, async (tx) => {
    const fingerprint = createHash('sha256')
      .update(JSON.stringify({ key, amount: 100 }))
      .digest();
    const claimed = await sql`
      INSERT INTO once.idempotency_keys (key, version, tool, fingerprint, status, expires_at)
      VALUES (${key}, '', 'create_order', ${fingerprint}, 'in_progress', now() + interval '24 hours')
      ON CONFLICT DO NOTHING RETURNING 1`.execute(tx);
    if (claimed.rows.length === 0) {
      const { rows } = await sql<{ result: string | null }>`
        SELECT result_text AS result FROM once.idempotency_keys WHERE tenant_id = ${tenant} AND key = ${key} AND version = ''`.execute(tx);
      return rows[0]?.result == null ? undefined : JSON.parse(rows[0].result);
    }
    const result = await insertOrder(tx, key);
    const payload = JSON.stringify(result);
    await sql`
      INSERT INTO once.outbox_events (dedupe_id, topic, payload, payload_text)
      VALUES (${`${tenant}:${key}:0`}, 'orders.created', ${payload}::jsonb, ${payload})`.execute(tx);
    const text = JSON.stringify(result);
    await sql`
      UPDATE once.idempotency_keys SET status = 'completed', result = ${text}::jsonb, result_text = ${text}, completed_at = now()
       WHERE tenant_id = ${tenant} AND key = ${key} AND version = ''`.execute(tx);
    return result;
  });

const once: Call = (db, tenant, key) =>
  withTenant(db, tenant, (tx) => runIdempotent(tx, key, (t) => insertOrder(t, key), { tool: 'create_order', request: { key, amount: 100 } }));

const onceEvent: Call = (db, tenant, key) =>
  withTenant(db, tenant, (tx) =>
    runIdempotent(
      tx,
      key,
      async (t) => {
        const result = await insertOrder(t, key);
        await enqueue(t, { topic: 'orders.created', payload: result });
        return result;
      },
      { tool: 'create_order', request: { key, amount: 100 } },
    ),
  );

/** graphile-worker's way: the job added in the business transaction (add_job also NOTIFYs). */
const worker: Call = (db, tenant, key) =>
  handTransaction(db, tenant, async (tx) => {
    const result = await insertOrder(tx, key);
    await sql`SELECT graphile_worker.add_job('orders_created', ${JSON.stringify(result)}::json)`.execute(tx);
    return result;
  });

/** (f): all 16 duplicates wait for the first call's result, as the hand-written ones do. */
const onceSameKey: Call = (db, tenant, key) =>
  withTenant(db, tenant, (tx) => runIdempotent(tx, key, (t) => insertOrder(t, key), { tool: 'create_order', request: { key, amount: 100 }, maxWaiting: 16 }));

/**
 * add_job as the application role: graphile-worker's schema granted as migrate grants it to the
 * relay role, with a policy of the bench's own on each of its row-level-secured tables.
 */
async function grantWorkerToApp(bench: BenchDatabase): Promise<void> {
  const app = `"${bench.roles.app}"`;
  await withSession(bench.adminUrl, (session) =>
    session.query(`
      GRANT USAGE ON SCHEMA graphile_worker TO ${app};
      GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA graphile_worker TO ${app};
      GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA graphile_worker TO ${app};
      GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA graphile_worker TO ${app};
      DO $$
      DECLARE t record;
      BEGIN
        FOR t IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = 'graphile_worker' AND c.relkind = 'r' AND c.relrowsecurity LOOP
          EXECUTE format('CREATE POLICY bench_app_worker ON graphile_worker.%I TO ${app} USING (true) WITH CHECK (true)', t.relname);
        END LOOP;
      END
      $$`),
  );
}

/** Clock ticks per second of /proc/<pid>/stat (USER_HZ, 100 on Linux). */
const USER_HZ = 100;

/** CPU seconds a local process has used so far, or undefined when it cannot be read (a remote server). */
async function processCpuSeconds(pid: number): Promise<number | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / USER_HZ;
  } catch {
    return undefined;
  }
}

export interface CallCost {
  /** Client (this process) CPU per call, microseconds: query building, parsing, driver. */
  clientCpuUs: number;
  /** The server backend's CPU per call, microseconds (undefined when the server is not local). */
  serverCpuUs: number | undefined;
  /** Wall time per call at one caller, microseconds. */
  wallUs: number;
}

/**
 * Where one call's time goes, at one caller on one connection: this process's CPU and the
 * backend's (read from /proc, so only for a server on this machine), per call.
 */
async function measureCost(db: Kysely<any>, calls: number, call: (i: number) => Promise<unknown>): Promise<CallCost> {
  const { rows } = await sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`.execute(db);
  const pid = rows[0]!.pid;
  for (let i = 0; i < 50; i += 1) await call(-1 - i);
  const serverBefore = await processCpuSeconds(pid);
  const clientBefore = process.cpuUsage();
  const started = performance.now();
  for (let i = 0; i < calls; i += 1) await call(i);
  const wallUs = ((performance.now() - started) * 1_000) / calls;
  const client = process.cpuUsage(clientBefore);
  const serverAfter = await processCpuSeconds(pid);
  return {
    clientCpuUs: (client.user + client.system) / calls,
    serverCpuUs: serverBefore === undefined || serverAfter === undefined ? undefined : ((serverAfter - serverBefore) * 1e6) / calls,
    wallUs,
  };
}

export interface CoreBenchResult {
  throughput: Record<
    string,
    { label: string; c1: Throughput; c16: Throughput; statementsPerCall: number; c1xFloor: number; c16xFloor: number; cost: CallCost }
  >;
  sameKey16: { pgOnceMs: { p50: number; mean: number }; handWrittenMs: { p50: number; mean: number }; rounds: number };
  ratios: Record<string, number>;
}

export async function runCoreBench(bench: BenchDatabase, seconds: number): Promise<CoreBenchResult> {
  const db1 = bench.kysely(1);
  const db16 = bench.kysely(16);
  const run = ++runId;
  await grantWorkerToApp(bench);

  // Replays need existing records: one per (worker, slot), created up front, by each protocol.
  const REPLAY_SLOTS = 200;
  const replayKey = (prefix: string, worker: number, iteration: number) => `${prefix}-${run}-${worker}-${iteration % REPLAY_SLOTS}`;
  for (let w = 0; w < 16; w += 1) {
    await Promise.all(
      Array.from({ length: REPLAY_SLOTS }, async (_, i) => {
        await once(db16, tenantOf(w), replayKey('r', w, i));
        await hand(db16, tenantOf(w), replayKey('hr', w, i));
      }),
    );
  }

  const variants: Array<[string, string, (db: Kysely<any>, worker: number, iteration: number, c: number) => Promise<unknown>]> = [
    ['floor', 'floor: bare transaction + business insert', (db, w, i, c) => floor(db, tenantOf(w), `a-${run}-${c}-${w}-${i}`)],
    ['hand', 'hand-written: claim, business, outbox, result', (db, w, i, c) => hand(db, tenantOf(w), `b-${run}-${c}-${w}-${i}`)],
    ['handReplay', 'hand-written, same key again (replay)', (db, w, i) => hand(db, tenantOf(w), replayKey('hr', w, i))],
    ['once', 'pg-once: runIdempotent + business insert', (db, w, i, c) => once(db, tenantOf(w), `c-${run}-${c}-${w}-${i}`)],
    ['onceEvent', 'pg-once: + one enqueue', (db, w, i, c) => onceEvent(db, tenantOf(w), `e-${run}-${c}-${w}-${i}`)],
    ['onceReplay', 'pg-once: same key again (replay)', (db, w, i) => once(db, tenantOf(w), replayKey('r', w, i))],
    ['worker', 'graphile-worker add_job in the transaction', (db, w, i, c) => worker(db, tenantOf(w), `g-${run}-${c}-${w}-${i}`)],
  ];

  // Cost per call first, on one connection of its own (its backend's CPU is read from /proc).
  const COST_CALLS = Math.max(200, Math.round(seconds * 300));
  const costs = new Map<string, CallCost>();
  const single = bench.kysely(1);
  for (const [id, , call] of variants) {
    costs.set(id, await measureCost(single, COST_CALLS, (i) => call(single, 0, i < 0 ? -i : i, i < 0 ? 9_000 : 9_001)));
  }

  const samples = new Map<string, { c1: Throughput[]; c16: Throughput[]; statementsPerCall: number }>();
  for (let round = 0; round < ROUNDS; round += 1) {
    for (const [id, label, call] of variants) {
      // Count the statements of one call (a fresh key in each round, except for replays).
      const counter = { statements: 0 };
      const counting = bench.countingKysely(counter);
      // Warm the connection: the handle's first transaction learns its role; the next checks the
      // connection's backend and prepares pg-once's statements on it, one by one.
      await call(counting, 0, 0, -1 - round);
      await call(counting, 0, 2, -1 - round);
      counter.statements = 0;
      await call(counting, 0, id.endsWith('Replay') ? 0 : 1, -1 - round);
      const c1 = await measureThroughput((w, i) => call(db1, w, i, 1 + 100 * round), { concurrency: 1, seconds });
      const c16 = await measureThroughput((w, i) => call(db16, w, i, 16 + 100 * round), { concurrency: 16, seconds });
      const entry = samples.get(id) ?? { c1: [], c16: [], statementsPerCall: counter.statements };
      entry.c1.push(c1);
      entry.c16.push(c16);
      samples.set(id, entry);
      console.log(`  round ${round + 1} (${id}) ${label}: ${Math.round(c1.opsPerSecond)} ops/s at c=1, ${Math.round(c16.opsPerSecond)} ops/s at c=16`);
    }
  }
  const median = (runs: Throughput[]) => [...runs].sort((x, y) => x.opsPerSecond - y.opsPerSecond)[Math.floor(runs.length / 2)]!;
  const throughput: CoreBenchResult['throughput'] = {};
  const floorC1 = median(samples.get('floor')!.c1).opsPerSecond;
  const floorC16 = median(samples.get('floor')!.c16).opsPerSecond;
  for (const [id, label] of variants) {
    const entry = samples.get(id)!;
    const c1 = median(entry.c1);
    const c16 = median(entry.c16);
    throughput[id] = {
      label,
      c1,
      c16,
      statementsPerCall: entry.statementsPerCall,
      c1xFloor: c1.opsPerSecond / floorC1,
      c16xFloor: c16.opsPerSecond / floorC16,
      cost: costs.get(id)!,
    };
  }

  // (f) 16 callers of one key at once: time until all 16 have the result.
  const rounds = Math.max(10, Math.round(seconds * 10));
  const timeRounds = async (call: Call, label: string) => {
    const times: number[] = [];
    for (let round = 0; round < rounds; round += 1) {
      const key = `f-${label}-${run}-${round}`;
      const started = performance.now();
      await Promise.all(Array.from({ length: 16 }, () => call(db16, 'tenant-f', key)));
      times.push(performance.now() - started);
    }
    times.sort((x, y) => x - y);
    return { p50: percentile(times, 50), mean: times.reduce((sum, t) => sum + t, 0) / times.length };
  };
  const handWrittenMs = await timeRounds(hand, 'hand');
  const pgOnceMs = await timeRounds(onceSameKey, 'once');

  const x = (id: string, c: 'c1' | 'c16') => throughput[id]![c].opsPerSecond;
  const ratios = {
    'onceEvent/hand at c=1 (target >= 1.0)': x('onceEvent', 'c1') / x('hand', 'c1'),
    'onceEvent/hand at c=16 (target >= 1.0)': x('onceEvent', 'c16') / x('hand', 'c16'),
    'onceReplay/floor at c=1 (target >= 0.9)': x('onceReplay', 'c1') / x('floor', 'c1'),
    'onceReplay/floor at c=16 (target >= 0.9)': x('onceReplay', 'c16') / x('floor', 'c16'),
    'f: pg-once / hand-written time, 16 callers of one key (target <= 1.5)': pgOnceMs.mean / handWrittenMs.mean,
  };

  console.log(`\nCore: ops/s (higher is better), median of ${ROUNDS} rounds, as multiples of the floor measured in this run`);
  printTable(
    ['variant', 'c=1 ops/s', 'x floor', 'c=16 ops/s', 'x floor', 'round trips/call', 'client CPU us', 'server CPU us', 'wall us (c=1)'],
    variants.map(([id, label]) => {
      const row = throughput[id]!;
      return [
        label,
        row.c1.opsPerSecond,
        row.c1xFloor,
        row.c16.opsPerSecond,
        row.c16xFloor,
        row.statementsPerCall,
        row.cost.clientCpuUs,
        row.cost.serverCpuUs ?? Number.NaN,
        row.cost.wallUs,
      ];
    }),
  );
  console.log(
    `\n(f) 16 concurrent callers of one key, ${rounds} rounds: pg-once mean ${pgOnceMs.mean.toFixed(1)} ms (p50 ${pgOnceMs.p50.toFixed(1)}), ` +
      `hand-written mean ${handWrittenMs.mean.toFixed(1)} ms (p50 ${handWrittenMs.p50.toFixed(1)})`,
  );
  console.log('\nRatios:');
  for (const [name, value] of Object.entries(ratios)) console.log(`  ${name}: ${value.toFixed(2)}`);
  return { throughput, sameKey16: { pgOnceMs, handWrittenMs, rounds }, ratios };
}
