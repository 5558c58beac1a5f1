/**
 * A process killed with SIGKILL in the middle of runIdempotent leaves nothing behind: its
 * transaction dies with its connection, so the claim, the business row and everything else roll
 * back, and the next call with the same key executes (it does not wait out a lease or a ttl).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { sql } from 'kysely';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { runIdempotent, withTenant } from '../src/index.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';

let fx: AppFixture;
beforeAll(async () => {
  fx = await createAppFixture(4);
});
afterAll(async () => {
  await fx?.close();
});

/** Starts the child and resolves once it is inside fn, holding the claim. */
async function childInsideFn(key: string, tenant: string) {
  const child = spawn(process.execPath, ['test/fixtures/hold-claim.ts'], {
    env: { ...process.env, DATABASE_URL: fx.appUrl, TENANT: tenant, KEY: key },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout! });
  const [line] = (await once(lines, 'line')) as [string];
  expect(line).toBe('IN_FN');
  return child;
}

function handler(key: string, counter: { calls: number }) {
  return async (t: Parameters<Parameters<typeof runIdempotent>[2]>[0]) => {
    counter.calls += 1;
    await sql`INSERT INTO orders (key, amount) VALUES (${key}, 14)`.execute(t);
    return 'after-crash';
  };
}

it('kill -9 of a child mid-fn leaves the key free; the next call executes once', async () => {
  const key = `killed-${Date.now()}`;
  const child = await childInsideFn(key, 'tenant-k');

  // While the child holds the claim, its work is invisible and uncommitted.
  expect((await fx.orders('tenant-k')).length).toBe(0);
  child.kill('SIGKILL');
  const [, signal] = (await once(child, 'exit')) as [number | null, string | null];
  expect(signal).toBe('SIGKILL');

  const counter = { calls: 0 };
  const outcome = await withTenant(fx.app, 'tenant-k', (tx) => runIdempotent.detailed(tx, key, handler(key, counter)));
  expect(outcome.outcome).toBe('executed');
  expect(counter.calls).toBe(1);
  expect(await fx.orders('tenant-k')).toEqual([{ tenant_id: 'tenant-k', key, amount: 14 }]);
  const records = await fx.rows<{ status: string }>('idempotency_keys', `key = '${key}'`);
  expect(records.map((r) => r.status)).toEqual(['completed']);
});

it('a duplicate waiting on a claim whose process is killed executes as soon as it dies', async () => {
  const key = `killed-while-waited-${Date.now()}`;
  const child = await childInsideFn(key, 'tenant-w');
  const counter = { calls: 0 };
  const waiting = withTenant(fx.app, 'tenant-w', (tx) => runIdempotent.detailed(tx, key, handler(key, counter), { waitMs: 30_000 }));
  await new Promise((resolve) => setTimeout(resolve, 200));
  expect(counter.calls).toBe(0); // still waiting on the child's claim
  child.kill('SIGKILL');
  const outcome = await waiting;
  expect(outcome.outcome).toBe('executed'); // a wait that ends in a rollback is not reported as one
  expect(counter.calls).toBe(1);
  expect(await fx.orders('tenant-w')).toEqual([{ tenant_id: 'tenant-w', key, amount: 14 }]);
});
