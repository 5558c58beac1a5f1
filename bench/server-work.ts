/**
 * `npm run bench -- serverwork`: the server's work per delivered event, counted in instructions,
 * pg-once's relay statements against graphile-worker's in the same run. Throughput on a shared
 * 2-core machine moves by up to 2x between runs; an instruction count of the same code moves by
 * less than 0.01%, so a change of a few percent in what the database does per event shows here
 * when no drain could show it (docs/performance.md, "Server work per event, counted").
 *
 * A PostgreSQL of the machine's (its `postgres` and `initdb`: `PG_BINDIR`, else `pg_config
 * --bindir`, else the newest /usr/lib/postgresql/N/bin) runs under `valgrind --tool=callgrind`
 * in a fresh data directory (fsync on, autovacuum off, as a user other than root), one callgrind
 * file per backend. For each side, `count` events (jobs) of 10 tenants are written and analysed,
 * then one connection claims them in batches and another settles each batch until none is left:
 * - pg-once: `claimEvents` (limit 512) and `markDelivered`, the relay's own functions and
 *   statements, on connections with the relay's session settings;
 * - graphile-worker: its batched get_jobs statement (batch 500, as its local queue asks) and its
 *   complete_jobs DELETE.
 * The two backends' instruction totals over `count` are the claim's and the settle's work per
 * event. Needs valgrind; not in the default set (it runs for about two minutes).
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { runMigrations } from 'graphile-worker';
import pg from 'pg';
import { type RelayDatabase, relayConnectionConfig } from '../src/outbox/relay-pool.ts';
import { claimEvents } from '../src/outbox/sql/claim-events.ts';
import { markDelivered } from '../src/outbox/sql/mark-delivered.ts';
import { printTable } from './harness.ts';
import { createBenchDatabase } from './setup.ts';

const execFileAsync = promisify(execFile);

export interface ServerWork {
  /** Thousands of instructions per event, by statement. */
  pgOnce: { claim: number; settle: number; total: number };
  graphileWorker: { claim: number; settle: number; total: number };
  /** pg-once's total over graphile-worker's (lower is less work). */
  ratio: number;
  /** The counted server's version (not DATABASE_URL's). */
  postgres: string;
}

/** A TCP port nothing listens on now. */
async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as { port: number };
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

async function postgresBinaries(): Promise<string> {
  if (process.env.PG_BINDIR) return process.env.PG_BINDIR;
  try {
    const { stdout } = await execFileAsync('pg_config', ['--bindir']);
    if (existsSync(join(stdout.trim(), 'initdb'))) return stdout.trim();
  } catch {
    // no pg_config on PATH
  }
  const versions = existsSync('/usr/lib/postgresql') ? (await readdir('/usr/lib/postgresql')).sort((a, b) => Number(b) - Number(a)) : [];
  for (const version of versions) if (existsSync(`/usr/lib/postgresql/${version}/bin/initdb`)) return `/usr/lib/postgresql/${version}/bin`;
  throw new Error('serverwork: no PostgreSQL binaries found (set PG_BINDIR to the directory of initdb and postgres)');
}

/** Runs as `postgres` when we are root (initdb and postgres refuse root). */
function asServerUser(command: string, args: string[]): [string, string[]] {
  return userInfo().uid === 0 ? ['runuser', ['-u', 'postgres', '--', command, ...args]] : [command, args];
}

/** Instruction totals (callgrind's summary line) by backend pid. */
async function instructionsByPid(directory: string): Promise<Map<number, number>> {
  const totals = new Map<number, number>();
  for (const file of await readdir(directory)) {
    const pid = /^cg\.(\d+)$/.exec(file)?.[1];
    if (!pid) continue;
    const text = await readFile(join(directory, file), 'utf8');
    const total = /^(?:summary|totals): (\d+)/m.exec(text)?.[1];
    if (total) totals.set(Number(pid), Number(total));
  }
  return totals;
}

async function backendPid(client: pg.Client): Promise<number> {
  return (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
}

/** pg-once: the relay's claim on one connection, its settle on another, until nothing is pending. */
async function drainPgOnce(url: string, count: number): Promise<[number, number]> {
  const bench = await createBenchDatabase(url);
  const admin = new pg.Client({ connectionString: bench.adminUrl });
  await admin.connect();
  await admin.query(
    `INSERT INTO once.outbox_events (tenant_id, dedupe_id, topic, payload)
     SELECT 'tenant-' || (i % 10), 'work-' || i, 'bench.event', jsonb_build_object('i', i) FROM generate_series(1, $1) i`,
    [count],
  );
  await admin.query('VACUUM ANALYZE once.outbox_events');
  await admin.end();
  const claimer = new pg.Client(relayConnectionConfig(bench.relayUrl, 600_000));
  const settler = new pg.Client(relayConnectionConfig(bench.relayUrl, 600_000));
  await claimer.connect();
  await settler.connect();
  const pids: [number, number] = [await backendPid(claimer), await backendPid(settler)];
  const claims: RelayDatabase = { query: (config) => claimer.query(config) };
  const settles: RelayDatabase = { query: (config) => settler.query(config) };
  let after = '';
  let delivered = 0;
  for (;;) {
    const claim = await claimEvents(claims, { limit: 512, leaseMs: 60_000, relayId: 'work', maxAttempts: 25, after, runFollowers: 64 });
    if (claim.events.length === 0) break;
    after = claim.lastTenant;
    await markDelivered(settles, claim.events, 'work');
    delivered += claim.events.length;
  }
  await claimer.end();
  await settler.end();
  await bench.drop();
  if (delivered !== count) throw new Error(`serverwork: pg-once delivered ${delivered} of ${count}`);
  return pids;
}

/** graphile-worker 0.16's batched get_jobs (worker/getJobs: strategy 2, batch > 1) and complete_jobs. */
function getJobsText(schema: string, batch: number): string {
  return `with j_raw as (
  select jobs.job_queue_id, jobs.priority, jobs.run_at, jobs.id from ${schema}._private_jobs as jobs
   where jobs.is_available = true and run_at <= now() and task_id = any($2::int[])
     and (jobs.job_queue_id is null or jobs.job_queue_id in (
       select id from ${schema}._private_job_queues as job_queues where job_queues.is_available = true for update skip locked))
   order by priority asc, run_at asc limit ${batch} for update skip locked
), j as (
  select distinct on (job_queue_id, case when job_queue_id is null then id end) job_queue_id, priority, run_at, id from j_raw
   order by job_queue_id, case when job_queue_id is null then id end, priority asc, run_at asc
), q as (
  update ${schema}._private_job_queues as job_queues set locked_by = $1::text, locked_at = now() from j where job_queues.id = j.job_queue_id
)
update ${schema}._private_jobs as jobs set attempts = jobs.attempts + 1, locked_by = $1::text, locked_at = now()
  from j where jobs.id = j.id returning *`;
}

async function drainGraphileWorker(url: string, count: number): Promise<[number, number]> {
  const bench = await createBenchDatabase(url);
  await runMigrations({ connectionString: bench.adminUrl });
  const admin = new pg.Client({ connectionString: bench.adminUrl });
  await admin.connect();
  await admin.query(
    `SELECT graphile_worker.add_jobs(array_agg(row('noop', json_build_object('i', i), null, null, null, null, null, null)::graphile_worker.job_spec))
       FROM generate_series(1, $1) i`,
    [count],
  );
  await admin.query('VACUUM ANALYZE graphile_worker._private_jobs');
  const taskIds = (await admin.query<{ ids: number[] }>('SELECT array_agg(id) AS ids FROM graphile_worker._private_tasks')).rows[0]!.ids;
  await admin.end();
  const claimer = new pg.Client({ connectionString: bench.adminUrl });
  const settler = new pg.Client({ connectionString: bench.adminUrl });
  await claimer.connect();
  await settler.connect();
  const pids: [number, number] = [await backendPid(claimer), await backendPid(settler)];
  const text = getJobsText('graphile_worker', 500);
  let done = 0;
  for (;;) {
    const { rows } = await claimer.query<{ id: string }>({ name: 'get_jobs', text, values: ['work', taskIds] });
    if (rows.length === 0) break;
    await settler.query({
      name: 'complete_jobs',
      text: 'delete from graphile_worker._private_jobs as jobs using unnest($1::bigint[]) n(n) where id = n',
      values: [rows.map((row) => row.id)],
    });
    done += rows.length;
  }
  await claimer.end();
  await settler.end();
  await bench.drop();
  if (done !== count) throw new Error(`serverwork: graphile-worker completed ${done} of ${count}`);
  return pids;
}

async function waitForServer(url: string, deadline: number, abandoned: AbortSignal): Promise<void> {
  while (!abandoned.aborted) {
    const client = new pg.Client({ connectionString: url });
    client.on('error', () => {});
    try {
      await client.connect();
      await client.end();
      return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }
}

export async function runServerWorkBench(count: number): Promise<ServerWork> {
  const bin = await postgresBinaries();
  const directory = await mkdtemp(join(tmpdir(), 'pg-once-serverwork-'));
  await chmod(directory, 0o777); // the server's user writes its data and the callgrind files here
  const data = join(directory, 'data');
  const [initdb, initArgs] = asServerUser(join(bin, 'initdb'), ['-D', data, '-A', 'trust', '-U', 'postgres', '--locale=C.UTF-8']);
  await execFileAsync(initdb, initArgs).catch(async (error: Error) => {
    await rm(directory, { recursive: true, force: true });
    throw new Error(`serverwork: initdb failed (set PG_BINDIR to a PostgreSQL installation's bin directory): ${error.message}`);
  });
  const port = await freePort();
  const [valgrind, valgrindArgs] = asServerUser('valgrind', [
    '--tool=callgrind',
    '--trace-children=yes',
    `--callgrind-out-file=${directory}/cg.%p`,
    join(bin, 'postgres'),
    ...['-D', data, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', `unix_socket_directories=${directory}`],
    ...['-c', 'fsync=on', '-c', 'autovacuum=off', '-c', 'shared_buffers=128MB'],
  ]);
  const server = spawn(valgrind, valgrindArgs, { stdio: 'ignore' });
  const exited = new Promise((resolve) => server.on('exit', resolve).on('error', resolve));
  // valgrind missing, or the server dying at start-up: a clear error, not two minutes of retries.
  const gone = new Promise<never>((_, reject) => {
    server.on('error', (error) => reject(new Error(`serverwork: could not start valgrind (is it installed?): ${error.message}`)));
    server.on('exit', (code) => reject(new Error(`serverwork: the server under valgrind exited (code ${code})`)));
  });
  gone.catch(() => {}); // awaited only until the server answers
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  try {
    const waiting = new AbortController();
    await Promise.race([waitForServer(url, Date.now() + 120_000, waiting.signal), gone]).finally(() => waiting.abort());
    const version = new pg.Client({ connectionString: url });
    await version.connect();
    const postgres = (await version.query<{ v: string }>("SELECT current_setting('server_version') AS v")).rows[0]!.v;
    await version.end();
    const pgOncePids = await drainPgOnce(url, count);
    const workerPids = await drainGraphileWorker(url, count);
    // A backend writes its callgrind file when it exits; give the last ones a moment.
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    const totals = await instructionsByPid(directory);
    const perEvent = (pid: number) => {
      const total = totals.get(pid);
      if (total === undefined) throw new Error(`serverwork: no callgrind count for backend ${pid}`);
      return total / count / 1_000;
    };
    const side = ([claim, settle]: [number, number]) => {
      const figures = { claim: perEvent(claim), settle: perEvent(settle) };
      return { ...figures, total: figures.claim + figures.settle };
    };
    const pgOnce = side(pgOncePids);
    const graphileWorker = side(workerPids);
    const result = { pgOnce, graphileWorker, ratio: pgOnce.total / graphileWorker.total, postgres };
    console.log(`\nServer work per delivered event, ${count.toLocaleString('en-US')} events, Postgres ${postgres} under callgrind (thousands of instructions)`);
    printTable(
      ['', 'claim', 'settle', 'total', 'x graphile-worker'],
      [
        ['pg-once relay statements', pgOnce.claim, pgOnce.settle, pgOnce.total, result.ratio],
        ['graphile-worker get_jobs + complete_jobs', graphileWorker.claim, graphileWorker.settle, graphileWorker.total, 1],
      ],
    );
    return result;
  } finally {
    // Stopped through its pid file: a signal to `runuser` would not reach the server.
    const [pgCtl, stopArgs] = asServerUser(join(bin, 'pg_ctl'), ['-D', data, 'stop', '-m', 'fast']);
    await execFileAsync(pgCtl, stopArgs).catch(() => server.kill('SIGKILL'));
    await exited;
    await rm(directory, { recursive: true, force: true });
  }
}
