/**
 * `migrate` checks what pg-once owns on every run, also when there is nothing to apply: one
 * extra permissive policy is OR-ed with the tenant policy and opens every tenant's rows, so a
 * schema that is not exactly as pg-once made it is refused, by name, and nothing is changed.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { InstallationUnsafeError, migrate } from '../src/index.ts';
import { errorOf } from './support/error-of.ts';
import { createTestDatabase, type TestDatabase } from './support/test-database.ts';

const run = promisify(execFile);

let database: TestDatabase | undefined;
afterEach(async () => {
  await database?.drop();
  database = undefined;
});

async function installed() {
  database = await createTestDatabase({ empty: true });
  const { roles } = await migrate(database.adminUrl);
  return { db: database, roles };
}

/** Everything a refused run could have changed: recorded migrations and the policies. */
async function snapshot(db: TestDatabase) {
  const { rows: migrations } = await db.admin.query('SELECT version, name, checksum, applied_at FROM once.migrations ORDER BY version');
  const { rows: policies } = await db.admin.query(
    "SELECT tablename, policyname, roles::text[], qual, with_check FROM pg_policies WHERE schemaname = 'once' ORDER BY 1, 2",
  );
  return { migrations, policies };
}

async function refusal(db: TestDatabase): Promise<InstallationUnsafeError> {
  const before = await snapshot(db);
  const error = await errorOf(migrate(db.adminUrl));
  expect(error).toBeInstanceOf(InstallationUnsafeError);
  expect(error).toMatchObject({ code: 'INSTALLATION_UNSAFE', retryable: false });
  expect(error.message).toContain('nothing was changed');
  expect(await snapshot(db)).toEqual(before);
  return error;
}

describe('migrate refuses a schema that is not as pg-once made it', () => {
  it("an extra permissive policy (which would let one tenant read another's results)", async () => {
    const { db, roles } = await installed();
    await db.admin.query(`CREATE POLICY peek ON once.idempotency_keys FOR SELECT TO ${roles.app} USING (true)`);
    const error = await refusal(db);
    expect(error.problems).toEqual([
      expect.objectContaining({ object: 'policy peek on once.idempotency_keys', fix: 'DROP POLICY peek ON once.idempotency_keys;' }),
    ]);

    // The CLI says the same, exits 1, and says nothing about applying anything.
    const cli = (await run(process.execPath, ['src/cli.ts', 'migrate', '--database-url', db.adminUrl]).catch((e: unknown) => e)) as {
      code: number;
      stdout: string;
      stderr: string;
    };
    expect(cli.code).toBe(1);
    expect(cli.stdout).toBe('');
    expect(cli.stderr).toContain('policy peek on once.idempotency_keys');
    expect(cli.stderr).toContain('[INSTALLATION_UNSAFE]');

    await db.admin.query('DROP POLICY peek ON once.idempotency_keys');
    expect((await migrate(db.adminUrl)).applied).toEqual([]);
  });

  it('a policy of pg-once altered to let everything through', async () => {
    const { db } = await installed();
    await db.admin.query('ALTER POLICY tenant_isolation ON once.outbox_events USING (true)');
    const error = await refusal(db);
    expect(error.problems).toHaveLength(1);
    expect(error.problems[0]).toMatchObject({ object: 'policy tenant_isolation on once.outbox_events' });
    expect(error.problems[0]!.problem).toContain('USING true');
  });

  it('a policy of pg-once moved to another role, or dropped', async () => {
    const { db, roles } = await installed();
    await db.admin.query(`ALTER POLICY relay_reads ON once.outbox_events TO ${roles.app}`);
    await db.admin.query('DROP POLICY relay_sweeps ON once.dedupe_audit');
    const error = await refusal(db);
    expect(error.problems.map((p) => p.object).sort()).toEqual(['policy relay_reads on once.outbox_events', 'policy relay_sweeps on once.dedupe_audit']);
  });

  it('row-level security disabled, or not forced', async () => {
    const { db } = await installed();
    await db.admin.query('ALTER TABLE once.outbox_events NO FORCE ROW LEVEL SECURITY');
    await db.admin.query('ALTER TABLE once.rate_limit_state DISABLE ROW LEVEL SECURITY');
    const error = await refusal(db);
    expect(error.problems).toEqual([
      expect.objectContaining({ object: 'once.outbox_events', fix: 'ALTER TABLE once.outbox_events FORCE ROW LEVEL SECURITY;' }),
      expect.objectContaining({ object: 'once.rate_limit_state', fix: 'ALTER TABLE once.rate_limit_state ENABLE ROW LEVEL SECURITY;' }),
    ]);
  });

  it('a privilege granted to PUBLIC on the schema, a table, a column or a function', async () => {
    const { db } = await installed();
    await db.admin.query(`
      GRANT USAGE ON SCHEMA once TO PUBLIC;
      GRANT SELECT ON once.dedupe_audit TO PUBLIC;
      GRANT SELECT (result) ON once.idempotency_keys TO PUBLIC;
      GRANT EXECUTE ON FUNCTION once.current_tenant() TO PUBLIC`);
    const error = await refusal(db);
    expect(error.problems.map((p) => p.object)).toEqual(['schema once', 'once.dedupe_audit', 'once.idempotency_keys', 'function once.current_tenant()']);
  });

  it('a SECURITY DEFINER function handed to another owner', async () => {
    const { db } = await installed();
    await db.admin.query('ALTER FUNCTION once.execution_counts(double precision) OWNER TO CURRENT_USER');
    const error = await refusal(db);
    expect(error.problems[0]).toMatchObject({ object: 'function once.execution_counts(double precision)' });
  });

  it('an existing schema "once" that pg-once did not install, with a table and a permissive policy', async () => {
    database = await createTestDatabase({ empty: true });
    const db = database;
    await db.admin.query(`
      CREATE SCHEMA once;
      CREATE TABLE once.idempotency_keys (tenant_id text, key text, result jsonb);
      ALTER TABLE once.idempotency_keys ENABLE ROW LEVEL SECURITY;
      CREATE POLICY everyone ON once.idempotency_keys USING (true)`);
    const error = await errorOf(migrate(db.adminUrl));
    expect(error).toBeInstanceOf(InstallationUnsafeError);
    expect(error.problems[0].problem).toContain('was not installed by pg-once');
    const { rows } = await db.admin.query(
      "SELECT to_regclass('once.migrations') AS migrations, (SELECT count(*)::int FROM pg_policies WHERE schemaname = 'once') AS policies",
    );
    expect(rows[0]).toEqual({ migrations: null, policies: 1 });
  });
});
