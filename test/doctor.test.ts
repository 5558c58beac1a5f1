/**
 * doctor() and `pg-once doctor`: each finding against a real database, as the logins that run it
 * (relay, application, a login holding no pg-once role, a BYPASSRLS login, the superuser), and
 * the exit status: non-zero on a failure only.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, expectTypeOf, inject, it } from 'vitest';
import type { z } from 'zod';
import { doctor, type DoctorFinding, type DoctorOptions, type DoctorReport, enqueue, startRelay, sweep, withTenant } from '../src/index.ts';
import type { doctorOptionsSchema } from '../src/ops/doctor.ts';
import { clockFinding } from '../src/ops/doctor/clock-finding.ts';
import type { DatabaseFacts } from '../src/ops/doctor/database-facts.ts';
import { loginFindings } from '../src/ops/doctor/login-findings.ts';
import { databaseUrlFor, quoteIdentifier } from './support/database-url.ts';
import { createTestDatabase, type TestDatabase } from './support/test-database.ts';
import { migrationFiles } from '../src/ops/migrate/migration-files.ts';
import type { RoleNames } from '../src/internal/role-names.ts';
import { SHIPPED_FOR_NEW_DATABASE } from './support/shipped-migrations.ts';

const run = promisify(execFile);
interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}
const cli = (args: string[]): Promise<CliResult> =>
  run(process.execPath, ['src/cli.ts', 'doctor', ...args]).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (error: CliResult) => ({ code: error.code, stdout: error.stdout, stderr: error.stderr }),
  );

let db: TestDatabase;
let roles: RoleNames;
let relayUrl: string;
let appUrl: string;
/** LOGIN roles this file creates outside createLoginRole: dropped in afterAll. */
const extraLogins: string[] = [];

async function createLogin(suffix: string, attributes: string, grant?: string): Promise<{ name: string; url: string }> {
  const name = `${db.name}_${suffix}`;
  const password = randomBytes(12).toString('hex');
  await db.admin.query(`CREATE ROLE ${quoteIdentifier(name)} LOGIN ${attributes} PASSWORD '${password}'`);
  extraLogins.push(name);
  if (grant) await db.admin.query(`GRANT ${quoteIdentifier(grant)} TO ${quoteIdentifier(name)}`);
  return { name, url: databaseUrlFor(inject('adminUrl'), db.name, { user: name, password }) };
}

beforeAll(async () => {
  db = await createTestDatabase();
  roles = (await db.roles())!;
  relayUrl = await db.createLoginRole('relay');
  appUrl = await db.createLoginRole('app');
});
afterAll(async () => {
  await db?.drop();
  const { default: pg } = await import('pg');
  const server = new pg.Client({ connectionString: inject('adminUrl') });
  await server.connect();
  for (const login of extraLogins) await server.query(`DROP ROLE IF EXISTS ${quoteIdentifier(login)}`);
  await server.end();
});

const of = (report: DoctorReport, check: DoctorFinding['check']) => report.findings.filter((f) => f.check === check);
const one = (report: DoctorReport, check: DoctorFinding['check']) => {
  const found = of(report, check);
  expect(found, `findings of ${check}`).toHaveLength(1);
  return found[0]!;
};

describe('a healthy database', () => {
  it('as the relay login: every check passes or says why it could not; exit 0', async () => {
    const report = await doctor(relayUrl);
    expect(report).toMatchObject({ database: db.name, roles, healthy: true });
    expect(one(report, 'login')).toMatchObject({ severity: 'ok', message: expect.stringContaining('neither superuser nor BYPASSRLS') });
    expect(one(report, 'roles')).toMatchObject({ severity: 'ok', message: expect.stringContaining(`holds ${roles.relay}`) });
    expect(of(report, 'legacy-roles')).toEqual([]);
    expect(one(report, 'installed')).toMatchObject({ severity: 'ok', message: expect.stringContaining(`roles ${roles.app}, ${roles.relay}`) });
    // The relay's login may read once.migrations (sql/0008), so it sees what is pending.
    expect(one(report, 'migrations')).toEqual({
      check: 'migrations',
      severity: 'ok',
      message: `no migration pending (newest recorded: ${SHIPPED_FOR_NEW_DATABASE.at(-1)})`,
    });
    expect(one(report, 'installation').severity).toBe('ok');
    // A clone of the test template shares the template's roles: exactly what the check is for.
    expect(one(report, 'shared-roles')).toMatchObject({ severity: 'warn', message: expect.stringContaining(inject('templateDatabase')) });
    expect(one(report, 'clock')).toMatchObject({ severity: 'ok', message: expect.stringMatching(/agree within \d+ ms/) });
    expect(one(report, 'sweep')).toMatchObject({ severity: 'warn', message: expect.stringContaining('no sweep has run yet') });
    expect(one(report, 'relays')).toMatchObject({
      severity: 'warn',
      message: 'no relay seen in the last 120 s: events written now would wait until one starts',
    });

    const { code, stdout } = await cli(['--database-url', relayUrl]);
    expect(code).toBe(0);
    const lines = stdout.trim().split('\n');
    expect(lines[0]).toBe(`pg-once doctor: database ${db.name} as ${report.login}`);
    expect(lines).toContain(`✓ login ${report.login} holds ${roles.relay}: the relay's and operators' role (outbox events of every tenant, no results)`);
    expect(lines.at(-1)).toMatch(/^0 failure\(s\), \d+ warning\(s\), 0 not checked$/);
  });

  it('as the application login: its role, and what only the relay may see', async () => {
    const report = await doctor(appUrl);
    expect(report.healthy).toBe(true);
    expect(one(report, 'roles')).toMatchObject({ severity: 'ok', message: expect.stringContaining(`holds ${roles.app}: the application's role`) });
    expect(one(report, 'installation').severity).toBe('ok');
    expect(one(report, 'relays')).toMatchObject({ severity: 'unknown', fix: `run pg-once doctor as a login granted ${roles.relay}` });
    expect(one(report, 'sweep')).toMatchObject({ severity: 'unknown', message: expect.stringContaining('may not read the record of sweeps') });
    expect((await cli(['--database-url', appUrl])).code).toBe(0);
  });

  it('as the superuser: warns that RLS does not apply, and reads the migrations', async () => {
    const report = await doctor(db.adminUrl);
    expect(report.healthy).toBe(true);
    expect(one(report, 'login')).toMatchObject({
      severity: 'warn',
      message: 'login postgres is a superuser: row-level security does not apply to it; fine for migrate and doctor, never for the application or the relay',
      fix: `connect the application and the relay as logins granted ${roles.app} / ${roles.relay}, not as postgres`,
    });
    expect(one(report, 'migrations')).toEqual({
      check: 'migrations',
      severity: 'ok',
      message: `no migration pending (newest recorded: ${SHIPPED_FOR_NEW_DATABASE.at(-1)})`,
    });
    expect(one(report, 'relays').severity).toBe('warn');
  });
});

describe('findings that fail', () => {
  it('a BYPASSRLS login granted the application role: fails, exit 1, with the fix', async () => {
    const login = await createLogin('bypass', 'NOSUPERUSER BYPASSRLS', roles.app);
    const report = await doctor(login.url);
    expect(report.healthy).toBe(false);
    expect(one(report, 'login')).toMatchObject({
      severity: 'fail',
      message: expect.stringMatching(new RegExp(`^login ${login.name} is BYPASSRLS and holds ${roles.app}: row-level security does not apply to it`)),
      fix: `ALTER ROLE ${quoteIdentifier(login.name)} NOBYPASSRLS;`,
    });
    const { code, stdout } = await cli(['--database-url', login.url]);
    expect(code).toBe(1);
    expect(stdout).toContain(`✗ login ${login.name} is BYPASSRLS and holds ${roles.app}`);
    expect(stdout).toContain(`— fix: ALTER ROLE ${quoteIdentifier(login.name)} NOBYPASSRLS;`);
  });

  it('an added permissive policy: fails, names it, gives the DROP; a login without USAGE on once sees it too', async () => {
    const bare = await createLogin('bare', 'NOSUPERUSER NOBYPASSRLS');
    await db.admin.query('CREATE POLICY extra ON once.outbox_events FOR SELECT TO PUBLIC USING (true)');
    try {
      const { code, stdout } = await cli(['--database-url', relayUrl]);
      expect(code).toBe(1);
      expect(stdout).toContain(
        '✗ policy extra on once.outbox_events was not created by pg-once (permissive SELECT to public using true) — fix: DROP POLICY extra ON once.outbox_events;',
      );
      // Catalogs only: a login holding no pg-once role (and no USAGE on schema once) finds it too.
      const report = await doctor(bare.url);
      expect(report.healthy).toBe(false);
      expect(of(report, 'installation')).toEqual([
        {
          check: 'installation',
          severity: 'fail',
          message: 'policy extra on once.outbox_events was not created by pg-once (permissive SELECT to public using true)',
          fix: 'DROP POLICY extra ON once.outbox_events;',
        },
      ]);
      expect(one(report, 'roles')).toMatchObject({
        severity: 'warn',
        message: `login ${bare.name} holds neither ${roles.app} (application) nor ${roles.relay} (relay): pg-once refuses it as either`,
      });
    } finally {
      await db.admin.query('DROP POLICY extra ON once.outbox_events');
    }
    expect((await cli(['--database-url', relayUrl])).code).toBe(0);
  });

  it('migrations: pending files are a warning (a baseline row covers its versions), an edited record a failure', async () => {
    const shipped = await migrationFiles();
    const baseline = shipped.baselines.at(-1)!;
    const record = async (files: readonly { version: number; name: string; checksum: string }[]) => {
      await db.admin.query('DELETE FROM once.migrations');
      await db.admin.query('INSERT INTO once.migrations (version, name, checksum) SELECT * FROM unnest($1::int[], $2::text[], $3::text[])', [
        files.map((f) => f.version),
        files.map((f) => f.name),
        files.map((f) => f.checksum),
      ]);
    };
    const installed = (
      await db.admin.query<{ version: number; name: string; checksum: string }>('SELECT version, name, checksum FROM once.migrations ORDER BY version')
    ).rows;
    try {
      // As 0.1 left a database: 0001-0004 recorded one by one, so 0005 onwards is pending.
      await record(shipped.files.filter((f) => f.version <= 4));
      const pending = shipped.files.filter((f) => f.version > 4).map((f) => f.name);
      expect(one(await doctor(db.adminUrl), 'migrations')).toEqual({
        check: 'migrations',
        severity: 'warn',
        message: `${pending.length} migration(s) pending: ${pending.join(', ')}`,
        fix: 'pg-once migrate',
      });
      await record([{ ...baseline, checksum: 'edited' }]);
      const edited = one(await doctor(db.adminUrl), 'migrations');
      expect(edited.severity).toBe('fail');
      expect(edited.message).toContain(baseline.name);
      expect(edited.message).toContain('edited');
    } finally {
      await record(installed);
    }
    expect(one(await doctor(db.adminUrl), 'migrations').severity).toBe('ok');
  });

  it('a database without pg-once: not installed, exit 1', async () => {
    const empty = await createTestDatabase({ empty: true });
    try {
      const report = await doctor(empty.adminUrl);
      expect(report).toMatchObject({ database: empty.name, roles: null, healthy: false });
      expect(one(report, 'installed')).toEqual({
        check: 'installed',
        severity: 'fail',
        message: `pg-once is not installed in database ${empty.name} (no schema once)`,
        fix: 'pg-once migrate  (as the database owner)',
      });
      // Nothing that needs pg-once's roles is checked; the rest still is.
      expect(report.findings.map((f) => f.check)).toEqual(['login', 'installed', 'connect', 'clock']);
      const { code, stdout } = await cli(['--database-url', empty.adminUrl]);
      expect(code).toBe(1);
      expect(stdout).toContain(`✗ pg-once is not installed in database ${empty.name} (no schema once) — fix: pg-once migrate`);
    } finally {
      await empty.drop();
    }
  });
});

describe('operations', () => {
  it('the last sweep: ok when on schedule, a warning when overdue; a sweep run by hand counts', async () => {
    const swept = (ago: string) => db.admin.query(`INSERT INTO once.sweeps (at, deleted, truncated) VALUES (now() - $1::interval, '{}', false)`, [ago]);
    try {
      await swept('1 hour');
      expect(one(await doctor(relayUrl), 'sweep')).toMatchObject({
        severity: 'warn',
        message: expect.stringContaining('no relay with sweeps on has run since'),
      });
      // The schedule the relays run decides what is overdue.
      expect(one(await doctor(relayUrl, { sweepSchedule: '0 0 1 1 *' }), 'sweep').severity).toBe('ok');
      // `pg-once sweep` by hand leaves its record too.
      await sweep(relayUrl);
      expect(one(await doctor(relayUrl), 'sweep')).toMatchObject({
        severity: 'ok',
        message: expect.stringMatching(/^last sweep ran at .*; next due .* \(\*\/5 \* \* \* \*\)$/),
      });
      const { rows } = await db.admin.query('SELECT by_role, deleted FROM once.sweeps ORDER BY at DESC LIMIT 1');
      expect(rows[0]).toEqual({ by_role: expect.stringContaining('_relay'), deleted: { idempotencyKeys: 0, outboxEvents: 0, dedupeAudit: 0 } });
    } finally {
      await db.admin.query('DELETE FROM once.sweeps');
    }
  });

  it('relays: seen by their registry row, stopped ones not; a running relay records itself', async () => {
    const relay = await startRelay({ connectionString: relayUrl, handleSignals: false, sweep: false, sinks: { '>': async () => {} } });
    try {
      const seen = one(await doctor(relayUrl), 'relays');
      expect(seen.severity).toBe('ok');
      expect(seen.message).toContain(relay.id);
    } finally {
      await relay.stop();
    }
    const { rows } = await db.admin.query('SELECT stopped_at IS NOT NULL AS stopped FROM once.relays WHERE relay_id = $1', [relay.id]);
    expect(rows).toEqual([{ stopped: true }]);
    expect(one(await doctor(relayUrl), 'relays').severity).toBe('warn');
    await db.admin.query('DELETE FROM once.relays');
  });

  it('relays: delivering now from live leases; a warning when due events wait', async () => {
    const app = db.kysely(appUrl);
    await withTenant(app, 'acme', async (tx) => {
      await enqueue(tx, { topic: 'a', payload: null });
      await enqueue(tx, { topic: 'b', payload: null });
    });
    try {
      await db.admin.query("UPDATE once.outbox_events SET locked_by = 'host-1:42:abcd1234', next_attempt_at = now() + interval '1 minute'");
      expect(one(await doctor(relayUrl), 'relays')).toEqual({ check: 'relays', severity: 'ok', message: '1 relay(s) delivering now: host-1:42:abcd1234' });
      await db.admin.query("UPDATE once.outbox_events SET next_attempt_at = now() - interval '5 minutes'");
      const finding = one(await doctor(relayUrl), 'relays');
      expect(finding).toMatchObject({
        severity: 'warn',
        message:
          '2 pending event(s) became due over 60 s ago and no relay has taken them (relay host-1:42:abcd1234 stopped renewing its leases): no relay is delivering, or the relays cannot keep up',
      });
      expect(finding.fix).toContain(`start pg-once relay as a login granted ${quoteIdentifier(roles.relay)}`);
    } finally {
      await db.admin.query('DELETE FROM once.outbox_events');
    }
  });

  it('the clock: which side is ahead, past one second', () => {
    expect(clockFinding({ offsetMs: 1_500, roundTripMs: 4 })).toMatchObject({
      severity: 'warn',
      message: expect.stringMatching(/^the database is 1\.5 s ahead \(±2 ms\)/),
    });
    expect(clockFinding({ offsetMs: -2_000, roundTripMs: 1 })).toMatchObject({
      severity: 'warn',
      message: expect.stringMatching(/^this host is 2\.0 s ahead/),
    });
    expect(clockFinding({ offsetMs: -300, roundTripMs: 1 })).toMatchObject({
      severity: 'ok',
      message: "this host's clock and the database's agree within 300 ms (±1 ms)",
    });
  });

  it("roles held: both app and relay, the maintenance role, and 0.1's cluster-wide roles each warn", () => {
    const facts = (held: string[], schemaOwner = 'owner'): DatabaseFacts => ({
      database: 'shop',
      login: 'svc',
      superuser: false,
      bypassRls: false,
      held: ['svc', ...held],
      schemaOwner,
      roles: { app: 'once_shop_app', relay: 'once_shop_relay', maintenance: 'once_shop_maintenance' },
    });
    const warnings = (held: string[], schemaOwner?: string) =>
      loginFindings(facts(held, schemaOwner))
        .filter((f) => f.severity !== 'ok')
        .map((f) => `${f.check}: ${f.fix}`);
    expect(warnings(['once_shop_app', 'once_shop_relay'])).toEqual(['roles: REVOKE "once_shop_relay" FROM "svc";  -- and run the relay as a login of its own']);
    expect(warnings(['once_shop_app', 'once_shop_maintenance'])).toEqual(['roles: REVOKE "once_shop_maintenance" FROM "svc";']);
    expect(warnings(['once_shop_app', 'once_app', 'once_maintenance'])).toEqual([
      'legacy-roles: REVOKE "once_app", "once_maintenance" FROM "svc";  -- once every database has run pg-once migrate',
    ]);
    // The owner keeps 0.1's maintenance role (and this database's) until every database is migrated.
    expect(warnings(['once_maintenance', 'once_shop_maintenance'], 'svc')).toEqual([]);
  });

  it('DoctorOptions, written by hand for its doc comments, matches its schema', () => {
    expectTypeOf<DoctorOptions>().toEqualTypeOf<z.input<typeof doctorOptionsSchema>>();
  });

  it('--json prints the report doctor() returns; --help explains', async () => {
    const { code, stdout } = await cli(['--json', '--database-url', relayUrl]);
    expect(code).toBe(0);
    const printed = JSON.parse(stdout) as DoctorReport & { checkedAt: string };
    const report = await doctor(relayUrl);
    // The clock's figures move between two runs; everything else is the same.
    const steady = (findings: DoctorFinding[]) => findings.map((f) => (f.check === 'clock' ? { ...f, message: '' } : f));
    expect(steady(printed.findings)).toEqual(steady(report.findings));
    expect({ ...printed, findings: [], checkedAt: '' }).toEqual({ ...report, findings: [], checkedAt: '' });
    expect(new Date(printed.checkedAt).getTime()).toBeLessThanOrEqual(report.checkedAt.getTime());

    const help = await cli(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('Usage: pg-once doctor [--database-url <url>]');
    expect(help.stdout).toContain('Exit status: 1 when any finding is a failure');
  });

  it('PUBLIC CONNECT: a warning with the REVOKE and the grants the roles lack; ok once revoked', async () => {
    const database = quoteIdentifier(db.name);
    const before = one(await doctor(relayUrl), 'connect');
    // A clone does not inherit the template's database ACL: the roles hold no CONNECT of their own.
    expect(before).toEqual({
      check: 'connect',
      severity: 'warn',
      message: `PUBLIC may connect to ${db.name}: every login of the server can open it and read what row-level security does not cover`,
      fix:
        `REVOKE CONNECT ON DATABASE ${database} FROM PUBLIC; GRANT CONNECT ON DATABASE ${database} TO ` +
        `${[roles.app, roles.relay].sort().map(quoteIdentifier).join(', ')};  -- and GRANT CONNECT to any other login that needs it`,
    });
    await db.admin.query(before.fix!.replace(/ {2}--.*$/, ''));
    // The relay's login still connects, through its role's grant.
    expect(one(await doctor(relayUrl), 'connect')).toMatchObject({ severity: 'ok', message: expect.stringContaining(`PUBLIC may not connect to ${db.name}`) });
  });
});
