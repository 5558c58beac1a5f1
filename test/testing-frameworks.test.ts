/**
 * pg-once/testing imports no test runner: under node:test (in a process of its own, without
 * vitest) a storm that passes is a passing test, and one that fails is a failing test whose
 * message carries the storm's report.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';

it('works under node:test: one test passes, the broken handler fails with the report', async () => {
  const ran = await promisify(execFile)(process.execPath, ['--test', '--test-reporter=tap', 'test/fixtures/testing/node-test-storm.ts']).catch(
    (error: { code: number; stdout: string; stderr: string }) => error,
  );
  expect(ran.stdout).toMatch(/^ok 1 - an idempotent in-memory handler passes the storm$/m);
  expect(ran.stdout).toMatch(/^not ok 2 - a handler that runs every copy fails the storm$/m);
  expect(ran.stdout).toContain('duplicate storm failed: one effect: countEffects() returned 4, expected 1');
  expect(ran.stdout).toMatch(/^# pass 1$/m);
  expect(ran.stdout).toMatch(/^# fail 1$/m);
  expect((ran as { code?: number }).code).toBe(1);
});
