/**
 * The demo's database: a real Postgres (embedded in a temp directory unless a URL is given), a
 * scratch database on it, pg-once migrated in, the business tables, and two login roles that are
 * NOT superusers (superusers bypass row-level security; withTenant refuses them):
 *   app   granted the database's app role    the tool server: its own tenant's rows only
 *   relay granted the database's relay role  the relay: every tenant's outbox events, no idempotency results
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { migrate } from '../../src/index.ts';
import { startPostgres, type PostgresServer } from '../../support/throwaway-postgres.ts';
import { businessSchema } from './business-schema.ts';
import { quietPool } from './quiet-pool.ts';

export interface DemoDatabase {
  server: PostgresServer;
  /** e.g. 'PostgreSQL 18.1 (embedded)'. */
  description: string;
  name: string;
  /** Superuser pool on the scratch database: setup, and checking what is really stored. */
  admin: pg.Pool;
  appUrl: string;
  relayUrl: string;
  /** Drops the scratch database and roles (unless kept) and stops a server started here. */
  close(): Promise<string | undefined>;
}

export async function openDemoDatabase(options: { databaseUrl: string | undefined; keep: boolean }): Promise<DemoDatabase> {
  const server = await startPostgres({ databaseUrl: options.databaseUrl, keep: options.keep });
  const suffix = randomBytes(4).toString('hex');
  const name = `once_demo_${suffix}`;
  const roles = { app: `${name}_app`, relay: `${name}_relay` };
  const passwords = { app: randomBytes(12).toString('hex'), relay: randomBytes(12).toString('hex') };
  let admin: pg.Pool | undefined;
  // The database's own group roles, named by migrate; dropped with it.
  let groups: string[] = [];
  const close = async (): Promise<string | undefined> => {
    await admin?.end();
    let kept: string | undefined;
    if (options.keep) {
      kept = server.kind === 'embedded' ? `data directory ${server.dataDirectory}, database ${name}` : `database ${name}, roles ${roles.app}, ${roles.relay}`;
    } else if (server.kind !== 'embedded') {
      // On a server we did not start, leave nothing behind: roles are cluster-wide.
      await withClient(server.connectionString, async (client) => {
        await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
        await client.query(`DROP ROLE IF EXISTS ${roles.app}`);
        await client.query(`DROP ROLE IF EXISTS ${roles.relay}`);
        for (const group of groups) await client.query(`DROP ROLE IF EXISTS ${group}`);
      });
    }
    await server.stop();
    return kept;
  };

  try {
    let version = '';
    await withClient(server.connectionString, async (client) => {
      version = (await client.query<{ server_version: string }>('SHOW server_version')).rows[0]!.server_version.split(' ')[0]!;
      await client.query(`CREATE DATABASE ${name}`);
    });
    const adminUrl = urlFor(server.connectionString, name);
    const installed = (await migrate(adminUrl)).roles;
    groups = [installed.app, installed.relay, installed.maintenance];
    admin = quietPool(adminUrl, 4);
    await admin.query(businessSchema(installed.app));
    for (const [role, group] of [
      [roles.app, installed.app],
      [roles.relay, installed.relay],
    ] as const) {
      const password = role === roles.app ? passwords.app : passwords.relay;
      await admin.query(`CREATE ROLE ${role} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD '${password}'`);
      await admin.query(`GRANT ${group} TO ${role}`);
    }
    return {
      server,
      description: `PostgreSQL ${version} (${server.kind === 'database-url' ? 'your server' : server.kind})`,
      name,
      admin,
      appUrl: urlFor(server.connectionString, name, roles.app, passwords.app),
      relayUrl: urlFor(server.connectionString, name, roles.relay, passwords.relay),
      close,
    };
  } catch (error) {
    await close().catch(() => {});
    throw error;
  }
}

async function withClient(connectionString: string, fn: (client: pg.Client) => Promise<void>): Promise<void> {
  const client = new pg.Client({ connectionString });
  await client.connect();
  try {
    await fn(client);
  } finally {
    await client.end();
  }
}

/** The same server as `url`, another database and optionally another login. */
function urlFor(url: string, database: string, user?: string, password?: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  if (user !== undefined && password !== undefined) {
    parsed.username = user;
    parsed.password = password;
  }
  return parsed.toString();
}
