/**
 * A database of this test file's own, cloned from the migrated template, plus login roles to
 * reach it as the application or the relay (granted the database's app or relay role: a clone
 * keeps the template's roles, which its policies name). Those roles are neither
 * superuser nor BYPASSRLS: superusers bypass row-level security, so isolation tests through them
 * would prove nothing. Everything is dropped by `drop()`.
 */
import { randomBytes } from 'node:crypto';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { inject } from 'vitest';
import { installedRoleNames, type RoleNames } from '../../src/internal/role-names.ts';
import { databaseUrlFor, quoteIdentifier } from './database-url.ts';

export interface TestDatabase {
  name: string;
  /** Superuser connection string to this database (bypasses RLS: setup and inspection only). */
  adminUrl: string;
  /** A superuser pool on this database, for setup and for checking what is really stored. */
  admin: pg.Pool;
  /** Creates a LOGIN role (NOSUPERUSER NOBYPASSRLS) granted the database's `kind` role; returns its connection string. */
  createLoginRole(kind: 'app' | 'relay'): Promise<string>;
  /** The database's pg-once roles (undefined for an empty database before it is migrated). */
  roles(): Promise<RoleNames | undefined>;
  /** A Kysely instance on a pool, closed by `drop()`. */
  kysely<DB = any>(url: string, poolOptions?: pg.PoolConfig): Kysely<DB>;
  drop(): Promise<void>;
}

export interface TestDatabaseOptions {
  /** An empty database (not cloned from the migrated template), for migration tests. */
  empty?: boolean;
}

/**
 * A pg.Pool with error listeners for idle AND checked-out connections (see docs/getting-started.md, "Connect"): a
 * test database is dropped WITH (FORCE) right after its pools end, and pool.end() resolves before
 * the sockets close, so a terminated connection must not surface as an uncaught exception.
 */
export function testPool(config: pg.PoolConfig): pg.Pool {
  const pool = new pg.Pool(config);
  pool.on('error', () => {});
  pool.on('connect', (client) => client.on('error', () => {}));
  return pool;
}

export async function createTestDatabase(options: TestDatabaseOptions = {}): Promise<TestDatabase> {
  const serverUrl = inject('adminUrl');
  const template = options.empty ? 'template0' : inject('templateDatabase');
  const name = `once_test_${randomBytes(6).toString('hex')}`;
  const server = new pg.Client({ connectionString: serverUrl });
  await server.connect();
  try {
    await server.query(`CREATE DATABASE ${quoteIdentifier(name)} TEMPLATE ${quoteIdentifier(template)}`);
  } finally {
    await server.end();
  }

  const adminUrl = databaseUrlFor(serverUrl, name);
  const admin = testPool({ connectionString: adminUrl, max: 4 });
  const roles: string[] = [];
  const instances: Kysely<unknown>[] = [];

  return {
    name,
    adminUrl,
    admin,
    roles: () => installedRoleNames(admin),
    async createLoginRole(kind) {
      const group = (await installedRoleNames(admin))?.[kind];
      if (!group) throw new Error(`test database ${name} has no pg-once roles yet: migrate it first`);
      const user = `${name}_${kind}${roles.length}`;
      const password = randomBytes(12).toString('hex');
      await admin.query(`CREATE ROLE ${quoteIdentifier(user)} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD '${password}'`);
      roles.push(user);
      await admin.query(`GRANT ${quoteIdentifier(group)} TO ${quoteIdentifier(user)}`);
      return databaseUrlFor(serverUrl, name, { user, password });
    },
    kysely<DB>(url: string, poolOptions: pg.PoolConfig = {}) {
      const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool: testPool({ connectionString: url, max: 10, ...poolOptions }) }) });
      instances.push(db as Kysely<unknown>);
      return db;
    },
    async drop() {
      await Promise.all(instances.map((db) => db.destroy()));
      // An empty database migrated by its test got group roles of its own; a clone shares the
      // template's, which global-setup drops.
      const groups = options.empty ? await installedRoleNames(admin).catch(() => undefined) : undefined;
      await admin.end();
      const server = new pg.Client({ connectionString: serverUrl });
      await server.connect();
      try {
        await server.query(`DROP DATABASE IF EXISTS ${quoteIdentifier(name)} WITH (FORCE)`);
        // Roles are cluster-wide: drop them too, or a shared DATABASE_URL server collects them.
        for (const role of roles) await server.query(`DROP ROLE IF EXISTS ${quoteIdentifier(role)}`);
        for (const group of groups ? [groups.app, groups.relay, groups.maintenance] : []) {
          await server.query(`DROP ROLE IF EXISTS ${quoteIdentifier(group)}`);
        }
      } finally {
        await server.end();
      }
    },
  };
}
