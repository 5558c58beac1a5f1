/**
 * A PgBouncer of the test file's own, in front of whatever Postgres the suite uses (embedded or
 * DATABASE_URL): a generated ini on a free port, started here and stopped by `stop()`.
 *
 * Each entry of `databases` becomes a PgBouncer database (an alias) that logs in to Postgres as
 * that connection string's user, with its password: the embedded server wants SCRAM, and PgBouncer
 * cannot pass on a password its clients never sent (auth_type = any ignores the client's user and
 * takes the alias's). So each login role a test uses is one alias, one pool of server connections.
 *
 * PgBouncer refuses to run as root: as root it is started with `-u postgres` (the ini and its
 * directory are made readable to that user).
 *
 * Without PgBouncer (PGBOUNCER, else `pgbouncer` in /usr/sbin or on PATH) the suites are skipped,
 * unless CI or ONCE_REQUIRE_SERVICES is set: then they fail, so a CI run cannot go green by
 * silently testing nothing.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { accessSync, constants } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { delimiter, join } from 'node:path';

/** How long PgBouncer may take to listen, in milliseconds. */
const START_TIMEOUT_MILLISECONDS = 15_000;

function findBinary(): string | undefined {
  const candidates = process.env.PGBOUNCER
    ? [process.env.PGBOUNCER]
    : ['/usr/sbin', ...(process.env.PATH ?? '').split(delimiter)].filter(Boolean).map((dir) => join(dir, 'pgbouncer'));
  return candidates.find((path) => {
    try {
      accessSync(path, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

export const pgbouncerBinary = findBinary();
export const pgbouncerAvailable = pgbouncerBinary !== undefined;
export const pgbouncerRequired = Boolean(process.env.CI || process.env.ONCE_REQUIRE_SERVICES);

export function requirePgbouncer(): void {
  if (!pgbouncerAvailable) {
    throw new Error('PgBouncer is not installed, and CI/ONCE_REQUIRE_SERVICES requires it: `apt-get install -y pgbouncer`, or set PGBOUNCER to its binary.');
  }
}

export interface PgbouncerOptions {
  /** Alias -> the Postgres connection string (user and password included) it logs in with. */
  databases: Record<string, string>;
  /** PgBouncer's pool_mode. (Default: 'transaction') */
  poolMode?: 'session' | 'transaction' | 'statement';
  /** Server connections per alias (default_pool_size). (Default: 2) */
  poolSize?: number;
  /** Server connections of particular aliases, instead of poolSize. */
  aliasPoolSizes?: Record<string, number>;
  /** Startup parameters PgBouncer ignores instead of refusing. (Default: none) */
  ignoreStartupParameters?: string[];
}

export interface Pgbouncer {
  /** A connection string to `alias` through PgBouncer. */
  url(alias: string): string;
  /** What PgBouncer wrote to stderr so far (its log). */
  log(): string;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  server.close();
  await once(server, 'close');
  return port;
}

/** A value of PgBouncer's connection-string syntax, single-quoted. */
function quoted(value: string): string {
  return `'${value.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;
}

function databaseLine(alias: string, url: string, poolSize: number | undefined): string {
  const target = new URL(url);
  const parts = [
    `host=${target.hostname.replace(/^\[|\]$/gu, '')}`,
    `port=${target.port || '5432'}`,
    `dbname=${quoted(decodeURIComponent(target.pathname.slice(1)))}`,
    `user=${quoted(decodeURIComponent(target.username))}`,
    ...(target.password ? [`password=${quoted(decodeURIComponent(target.password))}`] : []),
    ...(poolSize === undefined ? [] : [`pool_size=${poolSize}`]),
  ];
  return `${alias} = ${parts.join(' ')}`;
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

export async function startPgbouncer(options: PgbouncerOptions): Promise<Pgbouncer> {
  requirePgbouncer();
  const directory = await mkdtemp(join(tmpdir(), 'once-pgbouncer-'));
  await chmod(directory, 0o755);
  const port = await freePort();
  const ini = join(directory, 'pgbouncer.ini');
  await writeFile(
    ini,
    [
      '[databases]',
      ...Object.entries(options.databases).map(([alias, url]) => databaseLine(alias, url, options.aliasPoolSizes?.[alias])),
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      'unix_socket_dir =',
      'auth_type = any',
      `pool_mode = ${options.poolMode ?? 'transaction'}`,
      `default_pool_size = ${options.poolSize ?? 2}`,
      'max_client_conn = 200',
      `ignore_startup_parameters = ${(options.ignoreStartupParameters ?? []).join(',')}`,
      // Quiet: connections come and go by the hundred in a test file.
      'log_connections = 0',
      'log_disconnections = 0',
      '',
    ].join('\n'),
  );
  await chmod(ini, 0o644);
  const args = userInfo().uid === 0 ? ['-u', 'postgres', ini] : [ini];
  const child: ChildProcess = spawn(pgbouncerBinary!, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (log += chunk));
  let exited = false;
  const exit = once(child, 'exit').then(() => (exited = true));

  const deadline = Date.now() + START_TIMEOUT_MILLISECONDS;
  while (!(await listening(port))) {
    if (exited || Date.now() > deadline) {
      child.kill('SIGKILL');
      await rm(directory, { recursive: true, force: true });
      throw new Error(`PgBouncer did not start on port ${port}:\n${log}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }

  return {
    url: (alias) => `postgres://pgbouncer_client@127.0.0.1:${port}/${encodeURIComponent(alias)}`,
    log: () => log,
    async stop() {
      // SIGTERM: immediate shutdown (SIGINT would wait for every client to leave).
      if (!exited) child.kill('SIGTERM');
      await exit;
      await rm(directory, { recursive: true, force: true });
    },
  };
}
