/**
 * Relays in child processes, killed with SIGKILL: a poison event that kills every relay touching
 * it is declared dead after maxAttempts kills (and holds nothing else back), and events a killed
 * relay had claimed but not started are soon delivered by another relay.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import { enqueue, withTenant } from '../src/index.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { fillOutbox, waitForOutbox } from './support/outbox-helpers.ts';

let fx: AppFixture;
let relayUrl: string;
const children: ChildProcess[] = [];

beforeAll(async () => {
  fx = await createAppFixture(4);
  relayUrl = await fx.database.createLoginRole('once_relay');
});
afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  await fx?.close();
});
beforeEach(async () => {
  await fx.database.admin.query('DELETE FROM once.outbox_events');
});

interface RelayChild {
  child: ChildProcess;
  /** Resolves with the first line printed that starts with `prefix`. */
  line(prefix: string): Promise<string>;
  kill(): Promise<void>;
}

function startRelayChild(env: Record<string, string>): RelayChild {
  const child = spawn(process.execPath, ['test/fixtures/relay-poison.ts'], {
    env: { ...process.env, DATABASE_URL: relayUrl, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  const lines: string[] = [];
  const waiters: { prefix: string; resolve: (line: string) => void }[] = [];
  createInterface({ input: child.stdout! }).on('line', (line) => {
    lines.push(line);
    for (const waiter of waiters.filter((w) => line.startsWith(w.prefix))) waiter.resolve(line);
  });
  const exited = once(child, 'exit');
  return {
    child,
    line: (prefix) =>
      new Promise((resolve) => {
        const seen = lines.find((line) => line.startsWith(prefix));
        if (seen) resolve(seen);
        else waiters.push({ prefix, resolve });
      }),
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

async function enqueuePoison(): Promise<string> {
  return withTenant(fx.app, 'tenant-0', async (tx) => (await enqueue(tx, { topic: 'poison', payload: 'kills relays' })).id);
}

it('a poison event that kills every relay delivering it is dead after maxAttempts kills; all others are delivered', async () => {
  await fillOutbox(fx.app, { count: 30, tenants: 2 });
  const poison = await enqueuePoison();
  await fillOutbox(fx.app, { count: 30, tenants: 2 });
  const poisonRow = async () => (await fx.database.admin.query('SELECT status, attempts, last_error FROM once.outbox_events WHERE id = $1', [poison])).rows[0];

  let restarts = 0;
  for (; restarts < 5 && (await poisonRow()).status !== 'dead'; restarts += 1) {
    const relay = startRelayChild({ LEASE_MS: '500', MAX_ATTEMPTS: '3' });
    // Either this relay takes the poison (and is killed in the middle of delivering it), or it
    // finds the poison out of attempts and declares it dead.
    const outcome = await Promise.race([
      relay.line('POISON').then(() => 'poison' as const),
      (async () => {
        while ((await poisonRow()).status !== 'dead') await new Promise((resolve) => setTimeout(resolve, 50));
        return 'dead' as const;
      })(),
    ]);
    if (outcome === 'dead') {
      await waitForOutbox(fx.database.admin, (c) => c.delivered === 60);
    }
    await relay.kill();
  }
  expect(await poisonRow()).toEqual({
    status: 'dead',
    attempts: 3,
    last_error: expect.stringContaining('ended without an outcome'),
  });
  expect(restarts).toBeLessThanOrEqual(5);
  expect(await waitForOutbox(fx.database.admin, () => true)).toEqual({ pending: 0, delivered: 60, dead: 1 });
});
