/**
 * Two paths reach the current schema: a database that applied 0001-0004 (pg-once 0.1, with the
 * cluster-wide roles once_app, once_relay and once_maintenance) moves on with 0005; a new database
 * is installed from sql/baseline/0005_baseline.sql alone. Both must end in the same catalog, with
 * the roles' names mapped to their kind: tables, columns, indexes, policies, privileges down to
 * columns, function bodies and owners, and the database's CONNECT grants.
 */
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { migrate, withTenant, runIdempotent, WrongRoleError } from '../src/index.ts';
import { applyPending } from '../src/ops/migrate.ts';
import { grantWorkerSchema } from '../src/ops/migrate/grant-worker-schema.ts';
import { migrationFiles } from '../src/ops/migrate/migration-files.ts';
import { LEGACY_ROLE_NAMES } from '../src/internal/role-names.ts';
import { errorOf } from './support/error-of.ts';
import { numberedAfter } from './support/shipped-migrations.ts';
import { type ServerScratch, serverScratch } from './support/server-roles.ts';

let scratch: ServerScratch;
afterEach(async () => {
  await scratch.drop();
});

/** The database as pg-once 0.1 left it: 0001-0004 applied verbatim, graphile-worker granted to once_relay. */
async function legacyDatabase(name: string): Promise<void> {
  await scratch.database(name);
  const client = new pg.Client({ connectionString: scratch.url(name) });
  await client.connect();
  try {
    const applied = await applyPending(client, await migrationFiles(), { useBaseline: false, toVersion: 4 });
    expect(applied.applied.map((m) => m.name)).toEqual(['0001_schema_rls_roles', '0002_rate_limits', '0003_claim_function', '0004_operations']);
    await client.query('CREATE SCHEMA graphile_worker; CREATE TABLE graphile_worker.probe (id int)');
    await grantWorkerSchema(client, 0x6f6e6365, LEGACY_ROLE_NAMES.relay);
  } finally {
    await client.end();
  }
}

/** The catalog of one database, every role name replaced by its kind (app, relay, maintenance, owner). */
async function catalog(database: string): Promise<Record<string, unknown>> {
  const client = new pg.Client({ connectionString: scratch.url(database) });
  await client.connect();
  try {
    const { rows: kinds } = await client.query<{ kind: string; name: string }>('SELECT kind, name FROM once.roles');
    const { rows: owner } = await client.query<{ owner: string }>("SELECT pg_get_userbyid(nspowner) AS owner FROM pg_namespace WHERE nspname = 'once'");
    const names = new Map(kinds.map((row) => [row.name, row.kind]));
    names.set(owner[0]!.owner, 'owner');
    const kind = (role: string) => names.get(role) ?? (role === '-' ? 'PUBLIC' : `other:${role}`);
    const query = async (text: string) => (await client.query(text)).rows;
    const columns = await query(`
      SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull, a.attidentity,
             pg_get_expr(d.adbin, d.adrelid) AS default
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
       WHERE n.nspname = 'once' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped AND c.relname <> 'migrations'
       ORDER BY 1, a.attnum`);
    const indexes = await query(`SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'once' ORDER BY 1, 2`);
    const constraints = await query(`
      SELECT c.conrelid::regclass::text AS table, pg_get_constraintdef(c.oid) AS def
        FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = 'once' ORDER BY 1, 2`);
    const rls = await query(`
      SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname = 'once' AND c.relkind = 'r' ORDER BY 1`);
    const policies = (
      await query(`
      SELECT schemaname, tablename, policyname, permissive, cmd, roles::text[] AS roles, qual, with_check
        FROM pg_policies WHERE schemaname IN ('once', 'graphile_worker') ORDER BY 1, 2, 3`)
    ).map((row) => ({
      ...row,
      roles: (row.roles as string[]).map(kind),
    }));
    const privileges = (
      await query(`
      SELECT n.nspname || '.' || c.relname AS object, NULL AS column, pg_get_userbyid(a.grantee) AS grantee, a.privilege_type
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
       WHERE n.nspname IN ('once', 'graphile_worker') AND c.relname <> 'migrations'
      UNION ALL
      SELECT n.nspname || '.' || c.relname, att.attname, pg_get_userbyid(a.grantee), a.privilege_type
        FROM pg_attribute att JOIN pg_class c ON c.oid = att.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace,
             aclexplode(att.attacl) a
       WHERE n.nspname IN ('once', 'graphile_worker')
      UNION ALL
      SELECT 'schema ' || n.nspname, NULL, pg_get_userbyid(a.grantee), a.privilege_type
        FROM pg_namespace n, aclexplode(n.nspacl) a WHERE n.nspname IN ('once', 'graphile_worker')
      UNION ALL
      SELECT p.oid::regprocedure::text, NULL, pg_get_userbyid(a.grantee), a.privilege_type
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
       WHERE n.nspname = 'once'
      UNION ALL
      SELECT 'database', NULL, pg_get_userbyid(a.grantee), a.privilege_type
        FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = current_database() AND a.grantee <> d.datdba`)
    ).map((row) => `${row.object}${row.column ? `(${row.column})` : ''}: ${kind(row.grantee)} ${row.privilege_type}`);
    const functions = (
      await query(`
      SELECT p.oid::regprocedure::text AS name, md5(p.prosrc) AS body, p.prosecdef, p.proconfig, p.provolatile,
             pg_get_userbyid(p.proowner) AS owner
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'once' ORDER BY 1`)
    ).map((row) => ({
      ...row,
      owner: kind(row.owner),
    }));
    return { columns, indexes, constraints, rls, policies, privileges: privileges.sort(), functions };
  } finally {
    await client.end();
  }
}

describe('a database of pg-once 0.1 (0001-0004) and a new one end in the same schema', () => {
  it('0005 moves every privilege, policy and function off the cluster-wide roles, keeps the data, and tells which logins to re-grant', async () => {
    scratch = serverScratch();
    const legacy = scratch.name('once_legacy');
    const fresh = scratch.name('once_fresh');
    await legacyDatabase(legacy);

    // A 0.1 application: a login granted the cluster-wide once_app, with a stored result.
    const login = scratch.name('once_login');
    const password = await scratch.login(login);
    await scratch.admin(`GRANT once_app TO ${login}`);
    // Its call, as 0.1's runIdempotent made it (once.claim, then the result stored as jsonb):
    // the code of this version needs once.claim_key (0007), so it runs after `migrate`.
    const before = { charged: 7 };
    const old = new pg.Client({ connectionString: scratch.url(legacy, login, password) });
    await old.connect();
    try {
      await old.query("BEGIN; SELECT set_config('once.tenant_id', 'tenant-1', true)");
      await old.query(`SELECT * FROM once.claim('charge:1', '', NULL, NULL, 86400000, 1000)`);
      await old.query(`UPDATE once.idempotency_keys SET status = 'completed', result = $1::jsonb, completed_at = now() WHERE key = 'charge:1'`, [
        JSON.stringify(before),
      ]);
      await old.query('COMMIT');
    } finally {
      await old.end();
    }

    const lines: string[] = [];
    const upgrade = await migrate(scratch.url(legacy), { onLog: (line) => lines.push(line) });
    expect(upgrade.applied.map((m) => m.name)).toEqual(['0005_per_database_roles', ...numberedAfter(5)]);
    expect(upgrade.roles.app).toBe(`once_${legacy}_app`);
    expect(lines).toContain(
      `role ${login} holds the cluster-wide once_app, which no longer opens this database; if it should: GRANT ${upgrade.roles.app} TO ${login};`,
    );
    expect((await migrate(scratch.url(legacy))).applied).toEqual([]);

    await scratch.database(fresh);
    await migrate(scratch.url(fresh));
    const [upgraded, installed] = [await catalog(legacy), await catalog(fresh)];
    // graphile-worker's schema differs in content between the two (a probe table here); compare pg-once's part.
    const onlyOnce = (c: Record<string, unknown>) => ({
      ...c,
      policies: (c.policies as { schemaname: string }[]).filter((p) => p.schemaname === 'once'),
      privileges: (c.privileges as string[]).filter((p) => !p.startsWith('graphile_worker.') && p !== 'schema graphile_worker'),
    });
    expect(onlyOnce(upgraded)).toEqual(onlyOnce(installed));
    expect(JSON.stringify(upgraded)).not.toMatch(/other:once_(app|relay|maintenance)/);
    // graphile-worker's grants and policies moved to the new relay role too.
    expect((upgraded.privileges as string[]).filter((p) => p.startsWith('graphile_worker.probe: relay'))).toEqual([
      'graphile_worker.probe: relay DELETE',
      'graphile_worker.probe: relay INSERT',
      'graphile_worker.probe: relay SELECT',
      'graphile_worker.probe: relay UPDATE',
    ]);

    // The 0.1 login is shut out (the cluster-wide role opens nothing here now) with a coded error
    // naming the role to grant; granted it, the same login replays the result stored before.
    const shutOut = await errorOf(withTenant(scratch.kysely(scratch.url(legacy, login, password)), 'tenant-1', async () => 1));
    expect(shutOut).toBeInstanceOf(WrongRoleError);
    expect(shutOut.neededRole).toBe(upgrade.roles.app);
    await scratch.admin(`GRANT ${upgrade.roles.app} TO ${login}`);
    const after = await withTenant(scratch.kysely(scratch.url(legacy, login, password)), 'tenant-1', (tx) =>
      runIdempotent.detailed(tx, 'charge:1', async () => ({ charged: 8 })),
    );
    expect(after).toEqual({ value: before, outcome: 'replayed', waited: false });
  });
});
