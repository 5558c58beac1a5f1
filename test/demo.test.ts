/**
 * `npm run demo` stays runnable: the demo, as a child process with small options, exits 0 and
 * prints PASS. It runs on this test run's server (`--database-url`), in a scratch database and
 * roles of its own, which it must drop again; `.ci/run` also runs it on its embedded Postgres.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import pg from 'pg';
import { expect, inject, it } from 'vitest';

it('the demo runs 3 tenants × 5 agent runs with every duplicate source, prints PASS and leaves nothing behind', async () => {
  const child = spawn(process.execPath, ['examples/demo.ts', '--tenants', '3', '--runs', '5', '--seed', '1', '--database-url', inject('adminUrl')], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];

  expect(output).toMatch(/^ {2}PASS: 15 agent runs of 3 tenants/m);
  expect(output).not.toMatch(/\bFAIL\b/);
  expect(code).toBe(0);
  // The plan follows from the seed: 15 runs hold 53 intents, one run has its worker killed.
  expect(output).toMatch(/^ +worker crashes: SIGKILL mid-call, run resumed +1 run$/m);
  expect(output).toMatch(/^ +killed mid-call: rolled back with the worker +1$/m);
  expect(output).toMatch(/^ +business rows = unique intents +53 +53 +ok$/m);
  expect(output).toMatch(/^ +charges per order = 1 +15 +15 +ok$/m);

  const database = /database (once_demo_[0-9a-f]+)/.exec(output)?.[1];
  expect(database).toBeDefined();
  const admin = new pg.Client({ connectionString: inject('adminUrl') });
  await admin.connect();
  try {
    const left = await admin.query('SELECT datname AS name FROM pg_database WHERE datname = $1 UNION ALL SELECT rolname FROM pg_roles WHERE rolname LIKE $2', [
      database,
      `${database}%`,
    ]);
    expect(left.rows).toEqual([]);
  } finally {
    await admin.end();
  }
}, 120_000);
