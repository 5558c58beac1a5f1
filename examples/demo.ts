/**
 * `npm run demo`, for now: migrates pg-once into a real Postgres (embedded, started here, when
 * DATABASE_URL is unset; else the given database) and says what it did. The full multi-tenant
 * agent demo replaces this once the core and relay exist.
 */
import { parseArgs } from 'node:util';
import pg from 'pg';
import { migrate } from '../src/index.ts';
import { startPostgres } from '../support/throwaway-postgres.ts';

const { values } = parseArgs({
  options: { 'database-url': { type: 'string' }, keep: { type: 'boolean', default: false } },
});

const started = Date.now();
const server = await startPostgres({ databaseUrl: values['database-url'] ?? process.env.DATABASE_URL, keep: values.keep });
console.log(
  server.kind === 'embedded'
    ? `Started an embedded Postgres (nothing installed) at ${server.connectionString}`
    : `Using the database at ${server.connectionString.replace(/\/\/[^@]*@/, '//***@')}`,
);
try {
  const result = await migrate(server.connectionString, { onLog: (line) => console.log(`  ${line}`) });
  const client = new pg.Client({ connectionString: server.connectionString });
  await client.connect();
  const { rows } = await client.query<{ table: string }>(
    "SELECT c.relname AS table FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'once' AND c.relkind = 'r' ORDER BY 1",
  );
  await client.end();
  console.log(
    `Migrated to version ${result.version} (${result.applied.length} file(s) applied now); ` +
      `schema "once" holds: ${rows.map((row) => row.table).join(', ')}; graphile-worker schema ${result.workerSchema}.`,
  );
  console.log(`Done in ${Date.now() - started} ms.`);
} finally {
  await server.stop();
  if (server.kind === 'embedded' && values.keep) console.log(`Kept the data directory: ${server.dataDirectory}`);
}
