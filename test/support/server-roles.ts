/**
 * Databases and roles made directly on the test server, for tests of installing pg-once as
 * production does (a non-superuser owner, an administrator's roles, several databases): unlike
 * test-database.ts these are not clones of the migrated template. Everything made through one
 * `ServerScratch` is dropped by `drop()`, databases first, then roles (roles are cluster-wide,
 * and a shared DATABASE_URL server must not collect them).
 */
import { randomBytes } from 'node:crypto';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { inject } from 'vitest';
import { installedRoleNames, LEGACY_ROLE_NAMES } from '../../src/internal/role-names.ts';
import { databaseUrlFor, quoteIdentifier } from './database-url.ts';
import { testPool } from './test-database.ts';

export interface ServerScratch {
  /** A unique lower-case name with this prefix. */
  name(prefix: string): string;
  /** Runs SQL as the server's superuser, on `database` (default: the server's own). */
  admin(sql: string, database?: string): Promise<pg.QueryResult>;
  /** A LOGIN role (never superuser or BYPASSRLS) with extra attributes; returns its password. */
  login(name: string, attributes?: string): Promise<string>;
  /** A database owned by `owner`. */
  database(name: string, owner?: string): Promise<void>;
  /** Connection string for `user` (with `password`) on `database`. */
  url(database: string, user?: string, password?: string): string;
  kysely(url: string): Kysely<any>;
  /** Roles to drop at the end that this scratch did not create itself (e.g. made by migrate). */
  forget(...roles: string[]): void;
  drop(): Promise<void>;
}

export function serverScratch(): ServerScratch {
  const serverUrl = inject('adminUrl');
  const databases: string[] = [];
  const roles: string[] = [];
  const instances: Kysely<any>[] = [];
  const admin = async (sql: string, database?: string) => {
    const client = new pg.Client({ connectionString: database ? databaseUrlFor(serverUrl, database) : serverUrl });
    await client.connect();
    try {
      return await client.query(sql);
    } finally {
      await client.end();
    }
  };
  return {
    name: (prefix) => `${prefix}_${randomBytes(5).toString('hex')}`,
    admin,
    async login(name, attributes = '') {
      const password = randomBytes(12).toString('hex');
      await admin(`CREATE ROLE ${quoteIdentifier(name)} LOGIN NOSUPERUSER NOBYPASSRLS ${attributes} PASSWORD '${password}'`);
      roles.push(name);
      return password;
    },
    async database(name, owner) {
      await admin(`CREATE DATABASE ${quoteIdentifier(name)}${owner ? ` OWNER ${quoteIdentifier(owner)}` : ''}`);
      databases.push(name);
    },
    url: (database, user, password) => databaseUrlFor(serverUrl, database, user ? { user, password: password ?? '' } : undefined),
    kysely(url) {
      const db = new Kysely<any>({ dialect: new PostgresDialect({ pool: testPool({ connectionString: url, max: 4 }) }) });
      instances.push(db);
      return db;
    },
    forget: (...names) => roles.unshift(...names),
    async drop() {
      await Promise.all(instances.map((db) => db.destroy()));
      const groups: string[] = [];
      for (const database of databases) {
        const client = new pg.Client({ connectionString: databaseUrlFor(serverUrl, database) });
        await client.connect();
        const installed = await installedRoleNames(client).catch(() => undefined);
        await client.end();
        if (installed) groups.push(installed.app, installed.relay, installed.maintenance);
        await admin(`DROP DATABASE IF EXISTS ${quoteIdentifier(database)} WITH (FORCE)`);
      }
      // Group roles first: a login that created them (CREATEROLE) is their grantor. The
      // cluster-wide roles of 0.1 may serve other databases: never dropped here.
      const legacy = new Set(Object.values(LEGACY_ROLE_NAMES));
      for (const role of [...new Set([...groups, ...roles])].filter((name) => !legacy.has(name))) {
        await admin(`DROP ROLE IF EXISTS ${quoteIdentifier(role)}`);
      }
    },
  };
}
