/**
 * Once per `vitest run`: find or start a real Postgres (support/throwaway-postgres.ts), migrate
 * pg-once into a TEMPLATE database, and hand its name to the test files, which each clone it into
 * a database of their own (test/support/test-database.ts). Cloning a migrated template takes
 * milliseconds, where migrating per file would take a second each.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { migrate } from '../../src/ops/migrate.ts';
import { startPostgres } from '../../support/throwaway-postgres.ts';
import { databaseUrlFor, quoteIdentifier } from './database-url.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Superuser connection string to the server's maintenance database. */
    adminUrl: string;
    /** The migrated template database every test file clones. */
    templateDatabase: string;
    /** Which kind of server the run uses. */
    serverKind: string;
  }
}

export default async function setup(project: TestProject) {
  const server = await startPostgres();
  const admin = new pg.Client({ connectionString: server.connectionString });
  await admin.connect();
  const templateDatabase = `once_template_${randomBytes(4).toString('hex')}`;
  // The template's group roles (migrate names them after it; every clone shares them).
  let groups: string[] = [];
  try {
    await admin.query(`CREATE DATABASE ${quoteIdentifier(templateDatabase)}`);
    const { roles } = await migrate(databaseUrlFor(server.connectionString, templateDatabase));
    groups = [roles.app, roles.relay, roles.maintenance];
  } catch (error) {
    await admin.end();
    await server.stop();
    throw error;
  }
  const { rows } = await admin.query<{ server_version: string }>('SHOW server_version');
  console.log(`[pg-once tests] Postgres ${rows[0]?.server_version} (${server.kind}); template ${templateDatabase}`);

  project.provide('adminUrl', server.connectionString);
  project.provide('templateDatabase', templateDatabase);
  project.provide('serverKind', server.kind);

  return async () => {
    // WITH (FORCE) ends stragglers' connections (PG 13+); a shared DATABASE_URL server is left
    // as it was found.
    await admin.query(`DROP DATABASE IF EXISTS ${quoteIdentifier(templateDatabase)} WITH (FORCE)`);
    // Roles are cluster-wide: a shared DATABASE_URL server must not collect them. A clone a
    // crashed test file left behind still holds them; say so rather than fail the run.
    for (const group of groups) {
      await admin.query(`DROP ROLE IF EXISTS ${quoteIdentifier(group)}`).catch((error: Error) => {
        console.warn(`[pg-once tests] role ${group} left behind: ${error.message}`);
      });
    }
    await admin.end();
    await server.stop();
  };
}
