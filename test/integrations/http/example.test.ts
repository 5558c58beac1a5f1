/**
 * examples/http-api runs in CI, so it never rots: the orders API on Hono with the relay delivering
 * its events, played against by a client that retries; it prints PASS and exits 0.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { expect, inject, it } from 'vitest';

it('examples/http-api: every order and event once, retries answered with the first bytes', async () => {
  const { stdout } = await promisify(execFile)(process.execPath, ['examples/http-api/main.ts', '--database-url', inject('adminUrl')]);
  expect(stdout).not.toContain('FAIL');
  expect(stdout.trim().split('\n').at(-1)).toBe('PASS');
});
