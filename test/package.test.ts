/**
 * The published package, as an application gets it: `npm pack` (which builds through prepack),
 * installed with kysely and pg into an empty ESM project, then used only through what was
 * installed: `pg-once migrate` from node_modules/.bin, and `import ... from 'pg-once'`.
 *
 * The database is set up the way managed Postgres allows: migrated by its owner, a role with
 * LOGIN CREATEROLE but neither SUPERUSER nor BYPASSRLS, which also creates the tool server's
 * login role. The application role to grant is read from the catalog (the role the tenant
 * isolation policy applies to), not assumed from its name.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { databaseUrlFor, quoteIdentifier } from './support/database-url.ts';

const run = promisify(execFile);
const REPOSITORY = join(import.meta.dirname, '..');
const NPM_FLAGS = ['--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'];
const suffix = randomBytes(4).toString('hex');
const database = `once_package_${suffix}`;
const owner = { user: `once_package_owner_${suffix}`, password: randomBytes(12).toString('hex') };
const login = { user: `once_package_login_${suffix}`, password: randomBytes(12).toString('hex') };

let work: string;
let project: string;
const serverUrl = inject('adminUrl');
const superuserUrl = databaseUrlFor(serverUrl, database);
const ownerUrl = databaseUrlFor(serverUrl, database, owner);

async function query<Row extends pg.QueryResultRow>(url: string, text: string): Promise<Row[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<Row>(text)).rows;
  } finally {
    await client.end();
  }
}

/** Runs a file of the installed project (or its bin) on the Node running the tests (the pinned 24). */
function node(args: string[], env: Record<string, string>) {
  return run(process.execPath, args, { cwd: project, env: { ...process.env, ...env } });
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pg-once-package-'));
  project = join(work, 'app');
  await mkdir(project);
  const packed = await run('npm', ['pack', '--json', '--pack-destination', work, ...NPM_FLAGS], { cwd: REPOSITORY, maxBuffer: 64 * 1024 * 1024 });
  const [{ filename }] = JSON.parse(packed.stdout) as [{ filename: string }];
  await writeFile(join(project, 'package.json'), JSON.stringify({ name: 'pg-once-package-test', private: true, type: 'module' }));
  // The lowest kysely the peer range admits, so the range's floor is exercised somewhere; the
  // rest of the suite runs on the repository's own (newest) kysely.
  const manifest = JSON.parse(await readFile(join(REPOSITORY, 'package.json'), 'utf8')) as { peerDependencies: { kysely: string } };
  const kyselyFloor = /^>=(\S+)/.exec(manifest.peerDependencies.kysely)?.[1];
  expect(kyselyFloor, 'peerDependencies.kysely should read ">=<floor> <next>"').toBeDefined();
  await run('npm', ['install', join(work, filename), `kysely@${kyselyFloor}`, 'pg', ...NPM_FLAGS], { cwd: project });

  await query(serverUrl, `CREATE ROLE ${quoteIdentifier(owner.user)} LOGIN CREATEROLE NOSUPERUSER NOBYPASSRLS PASSWORD '${owner.password}'`);
  await query(serverUrl, `CREATE DATABASE ${quoteIdentifier(database)} OWNER ${quoteIdentifier(owner.user)}`);
}, 180_000);

afterAll(async () => {
  // Roles are cluster-wide. Those the migration granted on schema once are dropped too when no
  // other database still uses them (Postgres refuses with 2BP01 otherwise, e.g. shared role names).
  const granted = await query<{ role: string }>(
    superuserUrl,
    `SELECT DISTINCT grantee::regrole::text AS role FROM pg_namespace, aclexplode(nspacl)
      WHERE nspname = 'once' AND grantee <> 0 AND grantee <> nspowner`,
  ).catch(() => []);
  await query(serverUrl, `DROP DATABASE IF EXISTS ${quoteIdentifier(database)} WITH (FORCE)`);
  for (const role of [login.user, ...granted.map((row) => row.role), owner.user]) {
    await query(serverUrl, `DROP ROLE IF EXISTS ${role.startsWith('"') ? role : quoteIdentifier(role)}`).catch((error: { code?: string }) => {
      if (error.code !== '2BP01') throw error;
    });
  }
  if (work) await rm(work, { recursive: true, force: true });
});

it('installed from its tarball, migrates as a non-superuser database owner and runs a tool call once', async () => {
  const migrated = await node(['node_modules/.bin/pg-once', 'migrate'], { DATABASE_URL: ownerUrl });
  expect(migrated.stdout).toMatch(/applied \d+ migration/);

  const [policy, ...others] = await query<{ role: string }>(
    ownerUrl,
    `SELECT DISTINCT unnest(roles)::text AS role FROM pg_policies
      WHERE schemaname = 'once' AND tablename = 'idempotency_keys' AND policyname = 'tenant_isolation'`,
  );
  expect(others).toEqual([]);
  const applicationRole = policy!.role;
  // The owner (CREATEROLE, no superuser) creates the tool server's login and grants it the role.
  await query(ownerUrl, `CREATE ROLE ${quoteIdentifier(login.user)} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '${login.password}'`);
  await query(ownerUrl, `GRANT ${quoteIdentifier(applicationRole)} TO ${quoteIdentifier(login.user)}`);

  await writeFile(
    join(project, 'tool-call.js'),
    `import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { enqueue, runIdempotent, withTenant } from 'pg-once';

const db = new Kysely({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: process.env.DATABASE_URL }) }) });
try {
  const result = await withTenant(db, 'tenant-a', (tx) =>
    runIdempotent(tx, 'run-1:step-1:charge_card', async (tx) => {
      const event = await enqueue(tx, { topic: 'payments.charged', payload: { amount: 42 } });
      return { charged: 42, eventId: event.id };
    }, { tool: 'charge_card', request: { amount: 42 } }),
  );
  console.log(JSON.stringify(result));
} finally {
  await db.destroy();
}
`,
  );
  const called = await node(['tool-call.js'], { DATABASE_URL: databaseUrlFor(serverUrl, database, login) });
  const result = JSON.parse(called.stdout) as { charged: number; eventId: string };
  expect(result.charged).toBe(42);

  const keys = await query(superuserUrl, 'SELECT tenant_id, key, tool, status, result FROM once.idempotency_keys');
  expect(keys).toEqual([{ tenant_id: 'tenant-a', key: 'run-1:step-1:charge_card', tool: 'charge_card', status: 'completed', result }]);
  const events = await query(superuserUrl, 'SELECT tenant_id, id::text, topic, payload FROM once.outbox_events');
  expect(events).toEqual([{ tenant_id: 'tenant-a', id: result.eventId, topic: 'payments.charged', payload: { amount: 42 } }]);
}, 60_000);

it('ships the sources its source maps and declaration maps point to', async () => {
  const dist = join(project, 'node_modules', 'pg-once', 'dist');
  const maps = (await readdir(dist, { recursive: true })).filter((file) => file.endsWith('.map'));
  expect(maps.length).toBeGreaterThan(0);
  const missing: string[] = [];
  for (const map of maps) {
    const { sources } = JSON.parse(await readFile(join(dist, map), 'utf8')) as { sources: string[] };
    for (const source of sources) if (!existsSync(resolve(dirname(join(dist, map)), source))) missing.push(`${map} -> ${source}`);
  }
  expect(missing).toEqual([]);
});

it('resolves pg-once/graphile-worker, whose only dependency ships with pg-once', async () => {
  await writeFile(
    join(project, 'graphile-worker-subpath.js'),
    `import { OUTBOX_TASKS, outboxCronItems, outboxCrontab, outboxTasks } from 'pg-once/graphile-worker';
import { drainOnce } from 'pg-once';
console.log(JSON.stringify({ tasks: Object.values(OUTBOX_TASKS), functions: [outboxTasks, outboxCronItems, outboxCrontab, drainOnce].map((f) => typeof f), crontab: outboxCrontab().split('\\n').length }));
`,
  );
  const { stdout } = await node(['graphile-worker-subpath.js'], {});
  expect(JSON.parse(stdout)).toEqual({
    tasks: ['once_deliver', 'once_deliver_watchdog', 'once_sweep'],
    functions: ['function', 'function', 'function', 'function'],
    crontab: 2,
  });
});

it('ships the built files of every subpath export, and imports those whose library is installed here', async () => {
  const installed = join(project, 'node_modules', 'pg-once');
  const { exports } = JSON.parse(await readFile(join(installed, 'package.json'), 'utf8')) as {
    exports: Record<string, string | { types: string; default: string }>;
  };
  const missing: string[] = [];
  for (const [subpath, target] of Object.entries(exports)) {
    for (const file of typeof target === 'string' ? [target] : [target.types, target.default]) {
      if (!existsSync(join(installed, file))) missing.push(`${subpath}: ${file}`);
    }
  }
  expect(missing).toEqual([]);
  // kysely and pg are installed in this project: the root, the dashboard and the pg adapter load.
  await writeFile(
    join(project, 'subpaths.js'),
    `const loaded = await Promise.all(['pg-once', 'pg-once/dashboard', 'pg-once/pg'].map((name) => import(name)));
console.log(JSON.stringify(loaded.map((module) => Object.keys(module).length > 0)));
`,
  );
  const { stdout } = await node(['subpaths.js'], {});
  expect(JSON.parse(stdout)).toEqual([true, true, true]);
});
