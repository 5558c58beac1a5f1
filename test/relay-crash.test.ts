/**
 * Relays in child processes, killed with SIGKILL: a poison event that kills every relay touching
 * it is declared dead after maxAttempts kills (and holds nothing else back), and events a killed
 * relay had claimed but not started are soon delivered by another relay.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { afterAll, beforeEach, expect, it } from 'vitest';
import { enqueue, startRelay, withTenant } from '../src/index.ts';
import { QUIET_RELAY, useRelayFixture } from './support/relay-fixture.ts';
import { fillOutbox, waitForOutbox } from './support/outbox-helpers.ts';

const setting = useRelayFixture();
const children: ChildProcess[] = [];

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
});
beforeEach(async () => {
  await setting.fx.database.admin.query('DELETE FROM once.outbox_events');
});

interface RelayChild {
  child: ChildProcess;
  /** Resolves with the first line printed that starts with `prefix`. */
  line(prefix: string): Promise<string>;
  kill(): Promise<void>;
}

function startRelayChild(env: Record<string, string>): RelayChild {
  const child = spawn(process.execPath, ['test/fixtures/relay-poison.ts'], {
    env: { ...process.env, DATABASE_URL: setting.relayUrl, ...env },
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
  return withTenant(setting.fx.app, 'tenant-0', async (tx) => (await enqueue(tx, { topic: 'poison', payload: 'kills relays' })).id);
}

it('a poison event that kills every relay delivering it is dead after maxAttempts kills; all others are delivered', async () => {
  await fillOutbox(setting.fx.app, { count: 30, tenants: 2 });
  const poison = await enqueuePoison();
  await fillOutbox(setting.fx.app, { count: 30, tenants: 2 });
  const poisonRow = async () =>
    (await setting.fx.database.admin.query('SELECT status, attempts, last_error FROM once.outbox_events WHERE id = $1', [poison])).rows[0];

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
      await waitForOutbox(setting.fx.database.admin, (c) => c.delivered === 60);
    }
    await relay.kill();
  }
  expect(await poisonRow()).toEqual({
    status: 'dead',
    attempts: 3,
    last_error: expect.stringContaining('ended without an outcome'),
  });
  expect(restarts).toBeLessThanOrEqual(5);
  expect(await waitForOutbox(setting.fx.database.admin, () => true)).toEqual({ pending: 0, delivered: 60, dead: 1 });
});

it('after a SIGKILL, events the dead relay had claimed but not started go to another relay at once; started ones wait for their lease', async () => {
  await fillOutbox(setting.fx.app, { count: 100, tenants: 2 });
  // Every delivery of this relay hangs; a lease far longer than the test may run.
  const dying = startRelayChild({ LEASE_MS: '600000', CONCURRENCY: '4', HANG: 'all' });
  await dying.line('DELIVERING');
  // Kill it once its four deliveries have run long enough to hold the long lease (a delivery
  // killed in its first few hundred milliseconds still has the short one, and is freed sooner).
  const longLeases = async () =>
    (
      await setting.fx.database.admin.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM once.outbox_events WHERE status = 'pending' AND locked_by IS NOT NULL AND next_attempt_at > now() + interval '1 minute'",
      )
    ).rows[0]!.n;
  while ((await longLeases()) < 4) await new Promise((resolve) => setTimeout(resolve, 20));
  const { rows: held } = await setting.fx.database.admin.query<{ n: number }>('SELECT count(*)::int AS n FROM once.outbox_events WHERE locked_by IS NOT NULL');
  expect(held[0]!.n).toBeGreaterThan(4); // and some claimed, queued, not started
  await dying.kill();

  const delivered = new Set<string>();
  const survivor = await startRelay({
    connectionString: setting.relayUrl,
    ...QUIET_RELAY,
    sinks: { '>': async (event) => void delivered.add(event.id) },
  });
  try {
    // The four deliveries that had started stay leased to the dead relay (for ten minutes);
    // everything else, including what it had claimed and queued, is delivered now.
    await waitForOutbox(setting.fx.database.admin, (c) => c.delivered === 96, 30_000);
    expect(await longLeases()).toBe(4);
    expect(delivered.size).toBe(96);
  } finally {
    await survivor.stop();
  }
});
