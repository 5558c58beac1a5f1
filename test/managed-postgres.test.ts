/**
 * Installing pg-once where real teams run Postgres: no superuser (RDS, Cloud SQL, Azure, Supabase,
 * Neon give the database owner CREATEROLE at most), an administrator who creates roles up front,
 * and several databases on one server. Every migrate here runs as a NOSUPERUSER NOBYPASSRLS owner
 * unless the test says otherwise, and every call as a login granted the database's roles.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  enqueue,
  listRateLimits,
  migrate,
  NotInstalledError,
  RolesConflictError,
  rolesSql,
  runIdempotent,
  startRelay,
  status,
  sweep,
  withTenant,
  WrongRoleError,
} from '../src/index.ts';
import { applyPending } from '../src/ops/migrate.ts';
import { migrationFiles } from '../src/ops/migrate/migration-files.ts';
import { errorOf } from './support/error-of.ts';
import { SHIPPED_FOR_NEW_DATABASE } from './support/shipped-migrations.ts';
import { type ServerScratch, serverScratch } from './support/server-roles.ts';

const run = promisify(execFile);
const cli = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  run(process.execPath, ['src/cli.ts', ...args], { env: { ...process.env, ...env } }).catch(
    (error: { code: number; stdout: string; stderr: string }) => error,
  ) as Promise<{ code?: number; stdout: string; stderr: string }>;

let scratch: ServerScratch;
beforeEach(() => {
  scratch = serverScratch();
});
afterEach(async () => {
  await scratch.drop();
});

/** One idempotent call with a business row and an outbox event, as the app login; returns what it stored. */
async function callOnce(appUrl: string, tenant: string, key: string) {
  return withTenant(scratch.kysely(appUrl), tenant, (tx) =>
    runIdempotent.detailed(tx, key, async (t) => {
      const event = await enqueue(t, { topic: 'orders.created', payload: { key } });
      return { charged: 42, event: event.id };
    }),
  );
}

/** An owner like a managed server's: LOGIN, CREATEDB, maybe CREATEROLE, never superuser. */
async function ownedDatabase(createRole: boolean) {
  const owner = scratch.name('once_owner');
  const password = await scratch.login(owner, `CREATEDB ${createRole ? 'CREATEROLE' : 'NOCREATEROLE'}`);
  const database = scratch.name('once_managed');
  await scratch.database(database, owner);
  return { owner, database, ownerUrl: scratch.url(database, owner, password) };
}

describe('migrate as a non-superuser database owner', () => {
  it('(b) with CREATEROLE, the managed-Postgres case: installs, is a no-op the second time, and the owner grants the roles', async () => {
    const { database, ownerUrl } = await ownedDatabase(true);
    const first = await migrate(ownerUrl);
    expect(first.applied.map((m) => m.name)).toEqual(SHIPPED_FOR_NEW_DATABASE);
    expect(first.roles.app).toBe(`once_${database}_app`);
    const second = await migrate(ownerUrl);
    expect(second.applied).toEqual([]);

    // The owner (not a superuser) creates the logins and grants them, as it would on RDS.
    const app = scratch.name('once_login');
    const relay = scratch.name('once_login');
    const appPassword = 'app-password-1';
    const relayPassword = 'relay-password-1';
    const owned = new pg.Client({ connectionString: ownerUrl });
    await owned.connect();
    try {
      await owned.query(`CREATE ROLE ${app} LOGIN PASSWORD '${appPassword}'; GRANT ${first.roles.app} TO ${app}`);
      await owned.query(`CREATE ROLE ${relay} LOGIN PASSWORD '${relayPassword}'; GRANT ${first.roles.relay} TO ${relay}`);
    } finally {
      await owned.end();
    }
    scratch.forget(app, relay);

    const result = await callOnce(scratch.url(database, app, appPassword), 'tenant-a', 'charge:1');
    expect(result).toMatchObject({ outcome: 'executed', value: { charged: 42 } });
    const replay = await callOnce(scratch.url(database, app, appPassword), 'tenant-a', 'charge:1');
    expect(replay).toMatchObject({ outcome: 'replayed', value: { charged: 42 } });

    const relayUrl = scratch.url(database, relay, relayPassword);
    expect((await sweep(relayUrl)).idempotencyKeys).toBe(0);
    expect((await status(relayUrl)).outbox.pending).toBe(1);
    // graphile-worker's schema was installed by the owner and granted to the relay role.
    const delivered: string[] = [];
    const relayProcess = await startRelay({
      connectionString: relayUrl,
      sinks: { 'orders.*': async (event) => void delivered.push(event.dedupeId) },
      handleSignals: false,
    });
    try {
      await expect.poll(() => delivered.length, { timeout: 10_000 }).toBe(1);
    } finally {
      await relayProcess.stop();
    }
  });

  it('(c) without CREATEROLE: fails saying nothing was applied and what to run; after the administrator runs `pg-once roles --sql`, installs and serves calls', async () => {
    const { owner, database, ownerUrl } = await ownedDatabase(false);

    const refused = await cli(['migrate', '--database-url', ownerUrl]);
    expect(refused.code).toBe(1);
    expect(refused.stdout).not.toContain('applied');
    expect(refused.stderr).toContain('nothing was applied');
    expect(refused.stderr).toContain('pg-once roles --sql');
    expect(refused.stderr).toContain('MIGRATION_FAILED');
    const { rows: left } = await scratch.admin("SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = 'once'", database);
    expect(left[0].n).toBe(0);

    const app = scratch.name('once_login');
    const appPassword = await scratch.login(app);
    // What the administrator runs: printed by the CLI from the owner's URL, nothing connects.
    const printed = await cli(['roles', '--sql', '--app-login', app], { DATABASE_URL: ownerUrl });
    expect(printed.code).toBeUndefined();
    expect(printed.stdout).toBe(rolesSql({ database, owner, appLogins: [app] }));
    await scratch.admin(printed.stdout, database);
    await scratch.admin(printed.stdout, database); // safe to run twice

    const first = await cli(['migrate'], { DATABASE_URL: ownerUrl });
    expect(first.stderr).toBe('');
    expect(first.stdout).toContain('applied baseline/0005_baseline');
    expect((await cli(['migrate'], { DATABASE_URL: ownerUrl })).stdout).toContain('up to date');

    const result = await callOnce(scratch.url(database, app, appPassword), 'tenant-c', 'charge:1');
    expect(result).toMatchObject({ outcome: 'executed', value: { charged: 42 } });
  });
});

describe('roles belong to one database', () => {
  it('a login of database A reads nothing of database B by any path, and once PUBLIC CONNECT is revoked cannot even connect', async () => {
    const a = scratch.name('once_db_a');
    const b = scratch.name('once_db_b');
    await scratch.database(a);
    await scratch.database(b);
    const rolesA = (await migrate(scratch.url(a))).roles;
    const rolesB = (await migrate(scratch.url(b))).roles;
    expect(new Set([...Object.values(rolesA), ...Object.values(rolesB)]).size).toBe(6);

    const appA = scratch.name('once_login');
    const relayA = scratch.name('once_login');
    const appB = scratch.name('once_login');
    const [appAPassword, relayAPassword, appBPassword] = [await scratch.login(appA), await scratch.login(relayA), await scratch.login(appB)];
    await scratch.admin(`GRANT ${rolesA.app} TO ${appA}; GRANT ${rolesA.relay} TO ${relayA}; GRANT ${rolesB.app} TO ${appB}`);

    // B holds a secret result and event.
    await callOnce(scratch.url(b, appB, appBPassword), 'victim', 'charge:secret');

    // A's application login, pointed at B.
    const intoB = new pg.Client({ connectionString: scratch.url(b, appA, appAPassword) });
    await intoB.connect();
    try {
      const denied = async (query: string) => {
        const error = await errorOf(intoB.query(query));
        return error.code;
      };
      expect(await denied(`SELECT set_config('once.tenant_id', 'victim', false)`).catch(() => 'no error')).toBe('no error');
      expect(await denied('SELECT result FROM once.idempotency_keys')).toBe('42501');
      expect(await denied('SELECT payload FROM once.outbox_events')).toBe('42501');
      expect(await denied('SELECT * FROM once.dedupe_audit')).toBe('42501');
      expect(await denied(`SELECT * FROM once.claim('charge:secret', '', NULL, NULL, 1000, 10)`)).toBe('42501');
      expect(await denied(`SELECT * FROM once.execution_counts(1e9)`)).toBe('42501');
      expect(await denied(`SET ROLE ${rolesB.app}`)).toBe('42501');
      expect(await denied(`SET ROLE ${rolesB.relay}`)).toBe('42501');
      expect(await denied(`SET ROLE ${rolesB.maintenance}`)).toBe('42501');
    } finally {
      await intoB.end();
    }

    // Through pg-once's API the refusals are coded and name the role needed.
    const wrongApp = await errorOf(withTenant(scratch.kysely(scratch.url(b, appA, appAPassword)), 'victim', async () => 1));
    expect(wrongApp).toBeInstanceOf(WrongRoleError);
    expect(wrongApp).toMatchObject({ code: 'WRONG_ROLE', neededRole: rolesB.app });
    const wrongRelay = await errorOf(status(scratch.url(b, relayA, relayAPassword)));
    expect(wrongRelay).toMatchObject({ code: 'WRONG_ROLE', neededRole: rolesB.relay });

    // With CONNECT revoked from PUBLIC (what `pg-once doctor` recommends), A's logins cannot
    // connect to B at all, while B's login still can: migrate granted CONNECT to B's roles.
    await scratch.admin(`REVOKE CONNECT ON DATABASE ${b} FROM PUBLIC`);
    const shut = await errorOf(new pg.Client({ connectionString: scratch.url(b, appA, appAPassword) }).connect());
    expect(shut.code).toBe('42501');
    const result = await callOnce(scratch.url(b, appB, appBPassword), 'victim', 'charge:secret');
    expect(result.outcome).toBe('replayed');
  });

  it('refuses to give a second database the roles of another (a reused --role-prefix), creating nothing', async () => {
    const a = scratch.name('once_db_a');
    const c = scratch.name('once_db_c');
    await scratch.database(a);
    await scratch.database(c);
    const prefix = scratch.name('once_shared');
    await migrate(scratch.url(a), { rolePrefix: prefix });
    const error = await errorOf(migrate(scratch.url(c), { rolePrefix: prefix }));
    expect(error).toBeInstanceOf(RolesConflictError);
    expect(error.message).toContain(`already serves database ${a}`);
    const { rows } = await scratch.admin("SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = 'once'", c);
    expect(rows[0].n).toBe(0);
    // And a later run of A with another prefix is refused rather than silently ignored.
    expect(await errorOf(migrate(scratch.url(a), { rolePrefix: 'other_prefix' }))).toMatchObject({ code: 'ROLES_CONFLICT' });
  });
});

describe('every use with the wrong role is a coded error naming the role needed', () => {
  it('the relay with the app role, operator commands with the relay role, an app login without the app role, a database without pg-once', async () => {
    const database = scratch.name('once_roles');
    await scratch.database(database);
    const roles = (await migrate(scratch.url(database))).roles;
    const [app, relay, stranger] = [scratch.name('once_login'), scratch.name('once_login'), scratch.name('once_login')];
    const [appPassword, relayPassword, strangerPassword] = [await scratch.login(app), await scratch.login(relay), await scratch.login(stranger)];
    await scratch.admin(`GRANT ${roles.app} TO ${app}; GRANT ${roles.relay} TO ${relay}`);
    const appUrl = scratch.url(database, app, appPassword);
    const relayUrl = scratch.url(database, relay, relayPassword);

    const relayAsApp = await errorOf(startRelay({ connectionString: appUrl, sinks: { '*': async () => {} }, handleSignals: false, sweep: false }));
    expect(relayAsApp).toMatchObject({ code: 'WRONG_ROLE', neededRole: roles.relay });
    expect(relayAsApp.message).toContain(`GRANT ${roles.relay} TO ${app}`);

    const sweepAsApp = await errorOf(sweep(appUrl));
    expect(sweepAsApp).toMatchObject({ code: 'WRONG_ROLE', neededRole: roles.relay });

    const limitsAsRelay = await errorOf(listRateLimits(relayUrl));
    expect(limitsAsRelay).toMatchObject({ code: 'WRONG_ROLE' });
    expect(limitsAsRelay.message).toContain('owner of schema once');

    const strangerDb = scratch.kysely(scratch.url(database, stranger, strangerPassword));
    const strangerCall = await errorOf(withTenant(strangerDb, 't', async () => 1));
    expect(strangerCall).toMatchObject({ code: 'WRONG_ROLE', neededRole: roles.app });
    // Fixed while the application runs (the error says how): the same pool works at once.
    await scratch.admin(`GRANT ${roles.app} TO ${stranger}`);
    expect(await withTenant(strangerDb, 't', async () => 1)).toBe(1);

    // The CLI prints the coded message, no stack trace, and exits 1.
    const secret = `whsec_${Buffer.alloc(32, 7).toString('base64')}`;
    const cliRelay = await cli(['relay', '--database-url', appUrl, '--http', 'http://127.0.0.1:9/', '--webhook-secret', secret]);
    expect(cliRelay.code).toBe(1);
    expect(cliRelay.stderr).toContain('[WRONG_ROLE]');
    expect(cliRelay.stderr).not.toMatch(/\n\s+at /);
    const cliLimits = await cli(['limits', 'list', '--database-url', relayUrl]);
    expect(cliLimits.code).toBe(1);
    expect(cliLimits.stderr).toContain('[WRONG_ROLE]');

    const empty = scratch.name('once_empty');
    await scratch.database(empty);
    const notInstalled = await errorOf(withTenant(scratch.kysely(scratch.url(empty)), 't', async () => 1, { allowRlsBypass: false }));
    // A superuser is refused for bypassing RLS first; a plain login learns pg-once is missing.
    expect(notInstalled.code).toBe('RLS_BYPASS');
    const plain = scratch.name('once_login');
    const plainPassword = await scratch.login(plain);
    expect(await errorOf(withTenant(scratch.kysely(scratch.url(empty, plain, plainPassword)), 't', async () => 1))).toBeInstanceOf(NotInstalledError);
  });
});

describe('a schema older than the package', () => {
  // 5: before once.claim_key (sql/0007); 8: before outbox_events.payload_text (sql/0009);
  // 11: before the application role could reserve outbox ids (sql/0013); 14: before
  // once.record_audit and once.charge_rate_limit (sql/0015).
  it.each([5, 8, 11, 14])('at version %i is a coded NOT_INSTALLED saying to run migrate, not a bare "does not exist" error', async (version) => {
    const database = scratch.name('once_old');
    await scratch.database(database);
    const client = new pg.Client({ connectionString: scratch.url(database) });
    await client.connect();
    let roles: Awaited<ReturnType<typeof applyPending>>['roles'];
    try {
      // The schema as an older release left it.
      roles = (await applyPending(client, await migrationFiles(), { useBaseline: true, toVersion: version })).roles;
    } finally {
      await client.end();
    }
    const app = scratch.name('once_login');
    const password = await scratch.login(app);
    await scratch.admin(`GRANT ${roles.app} TO ${app}`);
    const error = await errorOf(callOnce(scratch.url(database, app, password), 't', 'k'));
    expect(error).toBeInstanceOf(NotInstalledError);
    expect(error.message).toContain('older than this package');
    await migrate(scratch.url(database));
    expect((await callOnce(scratch.url(database, app, password), 't', 'k')).outcome).toBe('executed');
  });
});
