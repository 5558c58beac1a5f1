/**
 * `npm run bench [-- core|relay|doorbell|sweep|drivers|http|soak|relays|serverwork] [--seconds N] [--only drain,key] [--days N] [--scale X] [--writer kysely|pg]`: runs the benchmarks on a real Postgres (DATABASE_URL,
 * else an embedded one started here), prints tables with ratios against baselines measured in the
 * same run, and saves everything as JSON in bench/results/. `soak` and `relays` are not in the
 * default set (they run for minutes): ask for them by name; --days sets soak's simulated days
 * (default 3) and --scale (or BENCH_SCALE) its calls per day (20,000 x scale); `relays` drains
 * backlogs of 20,000 x scale events with 1, 2 and 4 relay processes (--only backlog,live,idle);
 * `serverwork` counts the server's instructions per delivered event under valgrind (server-work.ts).
 */
import { rm, writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { startPostgres } from '../support/throwaway-postgres.ts';
import { runCoreBench } from './core.ts';
import { runDoorbellBench } from './doorbell.ts';
import { runDriversBench } from './drivers.ts';
import { runHttpBench } from './http.ts';
import { runRelayBench } from './relay.ts';
import { runRelaysBench } from './relays.ts';
import { runServerWorkBench } from './server-work.ts';
import { runSoakBench } from './soak.ts';
import { runSweepBench } from './sweep.ts';
import { createBenchDatabase } from './setup.ts';

const { values, positionals } = parseArgs({
  options: {
    seconds: { type: 'string', default: process.env.BENCH_SECONDS ?? '3' },
    'database-url': { type: 'string' },
    /** Relay and relays suites: a comma-separated list of their parts (RELAY_PARTS, RELAYS_PARTS). */
    only: { type: 'string' },
    /** Soak suite: simulated days (bench/soak.ts). */
    days: { type: 'string', default: '3' },
    /** Soak suite: the writers' library, kysely (default) or pg (pg-once/pg). */
    writer: { type: 'string', default: 'kysely' },
    /** Sizes of the suites that have one (default: BENCH_SCALE, else 1). */
    scale: { type: 'string', default: process.env.BENCH_SCALE ?? '1' },
  },
  allowPositionals: true,
});
const seconds = Number(values.seconds);
const SUITES = ['core', 'relay', 'doorbell', 'sweep', 'drivers', 'http'];
/** Run only when named. */
const ON_REQUEST = ['soak', 'relays', 'serverwork'];
const suites = positionals.length > 0 ? positionals : SUITES;
const scale = Number(values.scale);
const days = Number(values.days);
if (!(scale > 0) || !Number.isInteger(days) || days < 1) throw new Error('--scale must be > 0 and --days a whole number >= 1');
const writer = values.writer;
if (writer !== 'kysely' && writer !== 'pg') throw new Error('--writer must be kysely or pg');

const server = await startPostgres({ databaseUrl: values['database-url'] ?? process.env.DATABASE_URL });
const probe = new pg.Client({ connectionString: server.connectionString });
await probe.connect();
const { rows } = await probe.query<{ server_version: string; settings: string }>(
  `SELECT current_setting('server_version') AS server_version,
          string_agg(name || '=' || setting, ' ' ORDER BY name) AS settings
     FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'max_connections', 'shared_buffers', 'autovacuum', 'autovacuum_naptime')`,
);
await probe.end();
const environment = {
  date: new Date().toISOString(),
  node: process.version,
  cpus: cpus().length,
  cpuModel: cpus()[0]?.model,
  memoryGiB: Math.round(totalmem() / 2 ** 30),
  postgres: rows[0]?.server_version,
  postgresSettings: rows[0]?.settings,
  server: server.kind,
  secondsPerMeasurement: seconds,
};
console.log(
  `pg-once bench: Node ${environment.node}, ${environment.cpus} CPUs, Postgres ${environment.postgres} (${server.kind}; ${environment.postgresSettings})`,
);

try {
  for (const suite of suites) {
    if (!SUITES.includes(suite) && !ON_REQUEST.includes(suite))
      throw new Error(`unknown bench suite "${suite}" (known: ${[...SUITES, ...ON_REQUEST].join(', ')})`);
    const database = await createBenchDatabase(server.connectionString);
    try {
      console.log(`\n== ${suite}`);
      const result =
        suite === 'core'
          ? await runCoreBench(database, seconds)
          : suite === 'drivers'
            ? await runDriversBench(database, seconds)
            : suite === 'http'
              ? await runHttpBench(database, seconds)
              : suite === 'relays'
                ? await runRelaysBench(database, { events: Math.round(20_000 * scale), only: values.only?.split(',') })
                : suite === 'soak'
                  ? await runSoakBench(database, {
                      days,
                      perDay: Math.round(20_000 * scale),
                      writer,
                      // Rewritten after each day: what a long run cut short leaves (removed when it completes).
                      partialFile: new URL('./results/soak.partial.json', import.meta.url),
                    })
                  : suite === 'doorbell'
                    ? await runDoorbellBench(seconds, seconds * 2) // on a server of its own: wal_level = logical
                    : suite === 'serverwork'
                      ? await runServerWorkBench(Math.round(20_000 * scale)) // on a server of its own, under valgrind
                      : suite === 'relay'
                        ? await runRelayBench(database, {
                            events: Math.round(20_000 * scale),
                            rssEvents: Math.round(100_000 * scale),
                            latencySeconds: seconds * 2,
                            only: values.only?.split(','),
                          })
                        : await runSweepBench(database, { keys: Math.round(200_000 * scale) });
      // A partial run (--only) would replace the saved figures with some of them: not saved.
      if (values.only === undefined) {
        const file = new URL(`./results/${suite}.json`, import.meta.url);
        await writeFile(file, `${JSON.stringify({ environment, ...result }, null, 2)}\n`);
        console.log(`\nSaved ${file.pathname}`);
        if (suite === 'soak') await rm(new URL('./results/soak.partial.json', import.meta.url), { force: true });
      }
    } finally {
      await database.drop();
    }
  }
} finally {
  await server.stop();
}
