/**
 * A database for one benchmark run: migrated, with a business table `orders` under per-tenant RLS
 * (as a user's schema would be) and an application login role that does not bypass RLS.
 */
import { randomBytes } from 'node:crypto';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { migrate } from '../src/index.ts';
import type { RoleNames } from '../src/internal/role-names.ts';
import { ordersTableSql } from '../support/orders-table.ts';

export interface BenchDatabase {
  adminUrl: string;
  appUrl: string;
  /** A login role granted the database's relay role. */
  relayUrl: string;
  /** The database's pg-once group roles (app, relay, maintenance). */
  roles: RoleNames;
  /** A Kysely on a pool of `poolSize` connections as the application role. */
  kysely(poolSize: number): Kysely<any>;
  /** A Kysely whose connections count every statement they send (`counter.statements`). */
  countingKysely(counter: { statements: number }): Kysely<any>;
  drop(): Promise<void>;
}

export async function createBenchDatabase(serverUrl: string, extraSql = ''): Promise<BenchDatabase> {
  const name = `once_bench_${randomBytes(4).toString('hex')}`;
  const role = `${name}_app`;
  const relayRole = `${name}_relay`;
  const password = randomBytes(12).toString('hex');
  const server = new pg.Client({ connectionString: serverUrl });
  await server.connect();
  await server.query(`CREATE DATABASE ${name}`);
  const adminUrl = withDatabase(serverUrl, name);
  const { roles } = await migrate(adminUrl);
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(ordersTableSql(roles.app));
  await admin.query(`
    CREATE ROLE ${role} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '${password}';
    GRANT ${roles.app} TO ${role};
    CREATE ROLE ${relayRole} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '${password}';
    GRANT ${roles.relay} TO ${relayRole};
    ${extraSql}`);
  await admin.end();
  const appUrl = withDatabase(serverUrl, name, role, password);
  const instances: Kysely<any>[] = [];
  const make = (pool: pg.Pool) => {
    // Idle connections are terminated when the database is dropped; that is expected, not fatal.
    pool.on('error', () => {});
    pool.on('connect', (client) => client.on('error', () => {}));
    const db = new Kysely<any>({ dialect: new PostgresDialect({ pool }) });
    instances.push(db);
    return db;
  };
  return {
    adminUrl,
    appUrl,
    relayUrl: withDatabase(serverUrl, name, relayRole, password),
    roles,
    kysely: (poolSize) => make(new pg.Pool({ connectionString: appUrl, max: poolSize })),
    countingKysely(counter) {
      const pool = new pg.Pool({ connectionString: appUrl, max: 1 });
      pool.on('connect', (client) => {
        const query = client.query.bind(client) as (...args: unknown[]) => unknown;
        (client as { query: unknown }).query = (...args: unknown[]) => {
          counter.statements += 1;
          return query(...args);
        };
      });
      return make(pool);
    },
    async drop() {
      await Promise.all(instances.map((db) => db.destroy()));
      await server.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await server.query(`DROP ROLE IF EXISTS ${role}`);
      await server.query(`DROP ROLE IF EXISTS ${relayRole}`);
      // The database's own group roles (named after it by migrate) go with it.
      for (const group of [roles.app, roles.relay, roles.maintenance]) await server.query(`DROP ROLE IF EXISTS ${group}`);
      await server.end();
    },
  };
}

function withDatabase(url: string, database: string, user?: string, password?: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  if (user) parsed.username = user;
  if (password) parsed.password = password;
  return parsed.toString();
}
