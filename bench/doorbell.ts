/**
 * The relay's doorbell (issue 18, "The relay"): commit-to-sink latency with the logical
 * replication wake-up, against the polling default and graphile-worker (which wakes on NOTIFY),
 * and what writers pay for each: throughput of 16 (and 1) writers committing outbox events while
 * a relay delivers them, with the relay polling, with the doorbell ringing, and (for scale) with
 * the writers sending the NOTIFY a LISTENing relay would need.
 *
 * Needs wal_level = logical, which the shared servers do not have (and must not be restarted
 * for): the suite starts an embedded Postgres of its own with wal_level = logical and, unlike
 * the other embedded runs, fsync, synchronous_commit and full_page_writes ON, since the cost
 * of a NOTIFY is in durable commits. Every row of a table comes from that server, in one run.
 */
import { spawn } from 'node:child_process';
import { withTenant, enqueue, type RelayOptions } from '../src/index.ts';
import { sql } from 'kysely';
import pg from 'pg';
import { startEmbeddedPostgres } from '../support/throwaway-postgres.ts';
import { measureThroughput, printTable } from './harness.ts';
import { type Latency, latencyGraphileWorker, latencyPgOnce } from './relay.ts';
import { createBenchDatabase, type BenchDatabase } from './setup.ts';

/** Durable commits, as production runs: what a NOTIFY at commit costs shows only with them. */
const DURABLE = { fsync: 'on', synchronous_commit: 'on', full_page_writes: 'on' };
const LOGICAL = { wal_level: 'logical', max_wal_senders: '10', max_replication_slots: '10' };
const DOORBELL: Partial<RelayOptions> = { wakeup: { logicalReplication: {} } };
/** Interleaved repetitions of each writer measurement; the median is reported. */
const WRITER_ROUNDS = 3;

type WriterMode = 'poll' | 'doorbell' | 'notify';

export interface DoorbellBench {
  latency: { polling: Latency; doorbell: Latency; graphileWorker: Latency };
  /** Writer commits per second (median of WRITER_ROUNDS), by writers and relay wake-up. */
  writers: Record<'1' | '16', Record<WriterMode, number>>;
  /** Every round's rate, in the order measured. */
  writerRounds: Record<'1' | '16', Record<WriterMode, number[]>>;
  ratios: Record<string, number>;
}

export async function runDoorbellBench(seconds: number, latencySeconds: number): Promise<DoorbellBench & { server: string }> {
  const server = await startEmbeddedPostgres({ settings: { ...DURABLE, ...LOGICAL } });
  try {
    const probe = new pg.Client({ connectionString: server.connectionString });
    await probe.connect();
    const { rows } = await probe.query<{ v: string }>("SELECT current_setting('server_version') AS v");
    await probe.end();
    const description = `embedded Postgres ${rows[0]!.v}, wal_level=logical, fsync=on, synchronous_commit=on`;
    console.log(`  server: ${description}`);
    const bench = await createBenchDatabase(server.connectionString);
    const admin = new pg.Pool({ connectionString: bench.adminUrl, max: 2 });
    admin.on('error', () => {});
    try {
      // The relay login as production runs it: not superuser, with REPLICATION for the stream.
      await admin.query(`ALTER ROLE ${new URL(bench.relayUrl).username} REPLICATION`);
      const result = await measure(bench, admin, seconds, latencySeconds);
      print(result);
      return { ...result, server: description };
    } finally {
      await admin.end();
      await bench.drop();
    }
  } finally {
    await server.stop();
  }
}

async function measure(bench: BenchDatabase, admin: pg.Pool, seconds: number, latencySeconds: number): Promise<DoorbellBench> {
  const ringing = () => waitForSlot(admin);
  const latency = {
    polling: await latencyPgOnce(bench, admin, latencySeconds, 50),
    doorbell: await latencyPgOnce(bench, admin, latencySeconds, 50, DOORBELL, ringing),
    graphileWorker: await latencyGraphileWorker(bench, admin, latencySeconds, 50),
  };
  console.log(
    `  latency p50: polling ${latency.polling.p50.toFixed(2)} ms, doorbell ${latency.doorbell.p50.toFixed(2)} ms, graphile-worker ${latency.graphileWorker.p50.toFixed(2)} ms`,
  );
  const writers = { '1': { poll: [], doorbell: [], notify: [] }, '16': { poll: [], doorbell: [], notify: [] } } as Record<
    '1' | '16',
    Record<WriterMode, number[]>
  >;
  for (let round = 0; round < WRITER_ROUNDS; round += 1) {
    for (const mode of ['poll', 'doorbell', 'notify'] as const) {
      for (const concurrency of [16, 1] as const) {
        const rate = await writerThroughput(bench, admin, mode, concurrency, seconds);
        writers[String(concurrency) as '1' | '16'][mode].push(rate);
        console.log(`  writers x${concurrency}, relay ${mode}: ${Math.round(rate)} commits/s`);
      }
    }
  }
  const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
  const summary = Object.fromEntries(
    Object.entries(writers).map(([count, modes]) => [count, Object.fromEntries(Object.entries(modes).map(([mode, rates]) => [mode, median(rates)]))]),
  ) as DoorbellBench['writers'];
  return {
    latency,
    writers: summary,
    writerRounds: writers,
    ratios: {
      'doorbell p50 / graphile-worker p50': latency.doorbell.p50 / latency.graphileWorker.p50,
      'doorbell p50 / polling p50': latency.doorbell.p50 / latency.polling.p50,
      '16 writers: doorbell / polling (target >= 1.0 within noise)': summary['16'].doorbell / summary['16'].poll,
      '16 writers: NOTIFY / polling': summary['16'].notify / summary['16'].poll,
      '1 writer: doorbell / polling': summary['1'].doorbell / summary['1'].poll,
    },
  };
}

/** Until the relay's doorbell slot streams (it connects after startRelay returns). */
async function waitForSlot(admin: pg.Pool): Promise<void> {
  for (let tries = 0; tries < 200; tries += 1) {
    const { rowCount } = await admin.query("SELECT 1 FROM pg_replication_slots WHERE slot_name LIKE 'once\\_doorbell\\_%' AND active");
    if (rowCount) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error('the doorbell did not start (wal_level? REPLICATION?)');
}

/**
 * Writers each committing one outbox event per transaction (their own tenant) while a relay, in a
 * process of its own (doorbell-relay-child.ts), delivers to a no-op sink: `poll` the default relay, `doorbell` with the wake-up on, `notify`
 * the default relay with each writer also running `NOTIFY once_outbox` in its transaction.
 */
async function writerThroughput(bench: BenchDatabase, admin: pg.Pool, mode: WriterMode, concurrency: number, seconds: number): Promise<number> {
  await admin.query('TRUNCATE once.outbox_events');
  const relay = spawn(process.execPath, [new URL('./doorbell-relay-child.ts', import.meta.url).pathname], {
    env: { ...process.env, DATABASE_URL: bench.relayUrl, WAKEUP: mode === 'doorbell' ? 'logical' : 'poll' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise<void>((resolve) => relay.on('exit', () => resolve()));
  try {
    await new Promise<void>((resolve, reject) => {
      relay.stdout!.on('data', (data: Buffer) => data.toString().includes('READY') && resolve());
      relay.on('exit', (code) => reject(new Error(`relay child exited with ${code}`)));
    });
    if (mode === 'doorbell') await waitForSlot(admin);
    const db = bench.kysely(concurrency);
    const result = await measureThroughput(
      (worker, iteration) =>
        withTenant(db, `writer-${worker}`, async (tx) => {
          await enqueue(tx, { topic: 'writers', payload: { iteration } });
          if (mode === 'notify') await sql`NOTIFY once_outbox`.execute(tx);
        }),
      { concurrency, seconds },
    );
    await db.destroy();
    return result.opsPerSecond;
  } finally {
    relay.kill('SIGTERM');
    await exited;
  }
}

function print(result: DoorbellBench): void {
  const { latency, writers } = result;
  console.log('\nDoorbell: commit-to-sink latency at 50 events/s (ms), same server');
  printTable(
    ['', 'p50', 'p99', 'samples'],
    [
      ['pg-once relay, polling (default)', latency.polling.p50, latency.polling.p99, latency.polling.samples],
      ['pg-once relay, doorbell (target p50 <= 1)', latency.doorbell.p50, latency.doorbell.p99, latency.doorbell.samples],
      ['graphile-worker (add_job: NOTIFY at commit)', latency.graphileWorker.p50, latency.graphileWorker.p99, latency.graphileWorker.samples],
    ],
  );
  console.log(`\nWriters: commits/s with a relay delivering beside them (median of ${WRITER_ROUNDS} interleaved rounds)`);
  printTable(
    ['relay wakes on', '16 writers', 'x polling', '1 writer', 'x polling'],
    (['poll', 'doorbell', 'notify'] as const).map((mode) => [
      mode === 'poll' ? 'polling (default)' : mode === 'doorbell' ? 'doorbell (logical replication)' : 'NOTIFY in every writer',
      writers['16'][mode],
      writers['16'][mode] / writers['16'].poll,
      writers['1'][mode],
      writers['1'][mode] / writers['1'].poll,
    ]),
  );
}
