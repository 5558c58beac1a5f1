/**
 * A nats-server process of the test's own (JetStream on, file storage in a temporary directory),
 * on a port that can be left empty and later served again: the machine's NATS cannot be stopped,
 * so "NATS unavailable for a while" is this server not running yet, or stopped and restarted on
 * the same port with the same store directory.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function natsServerAvailable(): boolean {
  return spawnSync('nats-server', ['--version'], { stdio: 'ignore' }).status === 0;
}

export interface NatsProcess {
  port: number;
  url: string;
  /** Starts the server (again) on the port, with the same JetStream store. */
  start(): Promise<void>;
  /** SIGTERM (a clean shutdown: JetStream flushes its store) and wait for the exit. */
  stop(): Promise<void>;
  close(): Promise<void>;
}

export async function natsProcess(): Promise<NatsProcess> {
  const port = await freePort();
  const storeDirectory = await mkdtemp(join(tmpdir(), 'pg-once-nats-'));
  let child: ChildProcess | undefined;
  const handle: NatsProcess = {
    port,
    url: `nats://127.0.0.1:${port}`,
    async start() {
      const started = spawn('nats-server', ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', storeDirectory], { stdio: ['ignore', 'ignore', 'pipe'] });
      child = started;
      await new Promise<void>((resolve, reject) => {
        let output = '';
        started.stderr!.on('data', (chunk: Buffer) => {
          output += chunk.toString('utf8');
          if (output.includes('Server is ready')) resolve();
        });
        started.once('exit', (code) => reject(new Error(`nats-server exited (code ${code}): ${output.slice(-500)}`)));
      });
    },
    async stop() {
      const running = child;
      child = undefined;
      if (!running || running.exitCode !== null) return;
      const exited = once(running, 'exit');
      running.kill('SIGTERM');
      await exited;
    },
    async close() {
      await handle.stop();
      await rm(storeDirectory, { recursive: true, force: true });
    },
  };
  return handle;
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
