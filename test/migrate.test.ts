import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Kysely, PostgresDialect } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { InvalidOptionsError, migrate, MigrationChecksumError, MigrationDatabaseAheadError } from '../src/index.ts';
import { LATEST_VERSION, SHIPPED_FOR_NEW_DATABASE } from './support/shipped-migrations.ts';
import { createTestDatabase, testPool, type TestDatabase } from './support/test-database.ts';

const run = promisify(execFile);
// A database without pg-once starts from the newest baseline (see sql/baseline/ and
// test/migrate-paths.test.ts for the databases that applied 0001-0004).
const SHIPPED = SHIPPED_FOR_NEW_DATABASE;

let database: TestDatabase | undefined;
afterEach(async () => {
  await database?.drop();
  database = undefined;
});

async function freshDatabase() {
  database = await createTestDatabase({ empty: true });
  return database;
}

async function recordedMigrations(db: TestDatabase) {
  const { rows } = await db.admin.query<{ version: number; name: string; checksum: string }>(
    'SELECT version, name, checksum FROM once.migrations ORDER BY version',
  );
  return rows;
}

describe('migrate', () => {
  it("installs a fresh database from the baseline, with roles of its own and graphile-worker's schema", async () => {
    const db = await freshDatabase();
    const result = await migrate(db.adminUrl);
    expect(result.applied.map((m) => m.name)).toEqual(SHIPPED);
    expect(result.version).toBe(LATEST_VERSION);
    expect(result.workerSchema).toBe('installed');
    // Named after the database (roles are cluster-wide; each database gets its own).
    expect(result.roles).toEqual({ app: `once_${db.name}_app`, relay: `once_${db.name}_relay`, maintenance: `once_${db.name}_maintenance` });

    const rows = await recordedMigrations(db);
    expect(rows.map((r) => r.name)).toEqual(SHIPPED);
    expect(rows[0]?.checksum).toMatch(/^[0-9a-f]{64}$/);

    const { rows: tables } = await db.admin.query<{ table: string; rls: boolean; forced: boolean }>(`
      SELECT c.relname AS table, c.relrowsecurity AS rls, c.relforcerowsecurity AS forced
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = 'once' AND c.relkind = 'r' AND c.relname NOT IN ('migrations', 'roles', 'relays', 'sweeps', 'operator_actions') ORDER BY 1`);
    expect(tables).toEqual([
      { table: 'dedupe_audit', rls: true, forced: true },
      { table: 'idempotency_keys', rls: true, forced: true },
      { table: 'outbox_events', rls: true, forced: true },
      // Operator tables (managed by the schema owner): RLS for the application role, not forced.
      { table: 'rate_limit_state', rls: true, forced: false },
      { table: 'rate_limits', rls: true, forced: false },
    ]);

    // tenant_id leads every primary key, so the schema can later be distributed by tenant.
    const { rows: keys } = await db.admin.query<{ table: string; first: string }>(`
      SELECT c.relname AS table, a.attname AS first
      FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0]
      WHERE n.nspname = 'once' AND i.indisprimary AND c.relname NOT IN ('migrations', 'roles', 'relays', 'sweeps', 'operator_actions') ORDER BY 1`);
    expect(keys.every((k) => k.first === 'tenant_id')).toBe(true);
    expect(keys).toHaveLength(5);

    const { rows: worker } = await db.admin.query("SELECT 1 FROM pg_namespace WHERE nspname = 'graphile_worker'");
    expect(worker).toHaveLength(1);
  });

  it('is a no-op the second time', async () => {
    const db = await freshDatabase();
    await migrate(db.adminUrl);
    const before = await recordedMigrations(db);
    const again = await migrate(db.adminUrl);
    expect(again.applied).toEqual([]);
    expect(await recordedMigrations(db)).toEqual(before);
  });

  it('lets five concurrent runs succeed, leaving one row per file', async () => {
    const db = await freshDatabase();
    const results = await Promise.all(Array.from({ length: 5 }, () => migrate(db.adminUrl)));
    // Exactly one run applied the files; the others found nothing pending.
    expect(results.filter((r) => r.applied.length > 0)).toHaveLength(1);
    expect((await recordedMigrations(db)).map((r) => r.name)).toEqual(SHIPPED);
  });

  it('accepts a pg.Pool and a Kysely instance as the target', async () => {
    const db = await freshDatabase();
    const pool = testPool({ connectionString: db.adminUrl, max: 2 });
    try {
      expect((await migrate(pool)).applied).toHaveLength(SHIPPED.length);
    } finally {
      await pool.end();
    }
    const kysely = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: testPool({ connectionString: db.adminUrl, max: 2 }) }) });
    try {
      const result = await migrate(kysely);
      expect(result.applied).toEqual([]);
      expect(result.workerSchema).toBe('installed');
    } finally {
      await kysely.destroy();
    }
  });

  it("installs graphile-worker's schema through a Kysely instance", async () => {
    const db = await freshDatabase();
    const kysely = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: testPool({ connectionString: db.adminUrl, max: 1 }) }) });
    try {
      await migrate(kysely);
    } finally {
      await kysely.destroy();
    }
    const { rows } = await db.admin.query<{ count: string }>('SELECT count(*) FROM graphile_worker.migrations');
    expect(Number(rows[0]?.count)).toBeGreaterThan(0);
  });

  it('refuses, and changes nothing, when an applied file was edited', async () => {
    const db = await freshDatabase();
    await migrate(db.adminUrl);
    // Equivalent to editing the file after it ran: the recorded checksum no longer matches.
    await db.admin.query("UPDATE once.migrations SET checksum = repeat('0', 64) WHERE version = 5");
    const error = await migrate(db.adminUrl).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MigrationChecksumError);
    expect(error).toMatchObject({ code: 'MIGRATION_CHECKSUM_MISMATCH', version: 5, retryable: false });
    expect((await recordedMigrations(db))[0]?.checksum).toBe('0'.repeat(64));
  });

  it('refuses a database migrated by a newer pg-once', async () => {
    const db = await freshDatabase();
    await migrate(db.adminUrl);
    await db.admin.query("INSERT INTO once.migrations (version, name, checksum) VALUES (9999, '9999_future', 'x')");
    const error = await migrate(db.adminUrl).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MigrationDatabaseAheadError);
    expect(error).toMatchObject({ code: 'MIGRATION_DATABASE_AHEAD', versions: [9999] });
  });

  it('rejects bad options with the zod issues attached, before touching the database', async () => {
    const error = await migrate('postgres://nobody@127.0.0.1:1/none', { installWorkerSchema: 'yes' } as never).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidOptionsError);
    expect(error).toMatchObject({ code: 'INVALID_OPTIONS', httpStatus: 400 });
    expect((error as InvalidOptionsError).issues[0]?.path).toEqual(['installWorkerSchema']);

    const unknownKey = await migrate('postgres://nobody@127.0.0.1:1/none', { dryRun: true } as never).catch((e: unknown) => e);
    expect(unknownKey).toBeInstanceOf(InvalidOptionsError);
  });
});

describe('pg-once migrate (CLI)', () => {
  const cli = ['src/cli.ts'];

  it('migrates the database given by --database-url, then reports it up to date', async () => {
    const db = await freshDatabase();
    const first = await run(process.execPath, [...cli, 'migrate', '--database-url', db.adminUrl]);
    expect(first.stdout).toContain('applied baseline/0005_baseline');
    expect(first.stdout).toContain(`once_${db.name}_app`);
    const second = await run(process.execPath, [...cli, 'migrate'], { env: { ...process.env, DATABASE_URL: db.adminUrl } });
    expect(second.stdout).toContain('up to date');
  });

  it('exits 2 with a clear message when no database is given', async () => {
    const env = { ...process.env };
    delete env.DATABASE_URL;
    const error = (await run(process.execPath, [...cli, 'migrate'], { env }).catch((e: unknown) => e)) as {
      code: number;
      stderr: string;
    };
    expect(error.code).toBe(2);
    expect(error.stderr).toContain('DATABASE_URL');
    expect(error.stderr).toContain('INVALID_OPTIONS');
  });
});
