/**
 * The Redis the stream tests use (REDIS_URL, default the machine's 127.0.0.1:6379), whether it
 * answers, and a redis-server of a test's own on a free port (`startRedisServer`): one the test may
 * kill and restart, with AOF on disk, without touching the machine's.
 *
 * Without a server (or the redis-server binary) the suites are skipped, unless CI or
 * ONCE_REQUIRE_SERVICES is set: then they fail, so a CI run cannot go green by silently testing
 * nothing.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
export const redisRequired = Boolean(process.env.CI || process.env.ONCE_REQUIRE_SERVICES);

async function answers(url: string): Promise<boolean> {
  const redis = new Redis(url, { lazyConnect: true, connectTimeout: 2_000, retryStrategy: () => null, maxRetriesPerRequest: 0 });
  redis.on('error', () => {});
  try {
    await redis.connect();
    return (await redis.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    redis.disconnect();
  }
}

export const redisAvailable = (await answers(REDIS_URL)) && spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;

export function requireRedis(): void {
  if (!redisAvailable) {
    throw new Error(
      `Redis is not reachable at ${REDIS_URL} (or redis-server is not installed), and CI/ONCE_REQUIRE_SERVICES requires it: ` +
        'start one with `redis-server --daemonize yes --port 6379 --save ""`, or set REDIS_URL.',
    );
  }
}

export interface OwnRedisServer {
  url: string;
  /** Kills the server with SIGKILL (a crash: no shutdown save), then starts it again on the same port and files. */
  crashAndRestart(downMs: number): Promise<void>;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/**
 * A redis-server with AOF and appendfsync always, in a directory of its own: what it acknowledged
 * survives a crash, as the stream sink's guarantee assumes of a production Redis.
 */
export async function startRedisServer(): Promise<OwnRedisServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'once-redis-'));
  const url = `redis://127.0.0.1:${port}`;
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'yes', '--appendfsync', 'always'];
  let child: ChildProcess | undefined;
  const launch = async () => {
    child = spawn('redis-server', args, { stdio: 'ignore' });
    const deadline = Date.now() + 10_000;
    while (!(await answers(url))) {
      if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not start`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };
  const kill = async () => {
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    await exited;
  };
  await launch();
  return {
    url,
    async crashAndRestart(downMs) {
      await kill();
      await new Promise((resolve) => setTimeout(resolve, downMs));
      await launch();
    },
    async stop() {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
