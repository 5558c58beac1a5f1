/**
 * listDeadEvents and requeueDeadEvents are operator-only, like sweep and status: the application
 * role (which sees one tenant at most under forced row-level security) is refused with a coded
 * WRONG_ROLE naming the relay role, not a raw driver error and not a silently empty list.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { listDeadEvents, requeueDeadEvents, WrongRoleError } from '../src/index.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';

let fx: AppFixture;
beforeAll(async () => {
  fx = await createAppFixture(2);
});
afterAll(async () => {
  await fx?.close();
});

it('listDeadEvents refuses the application role with WRONG_ROLE naming the relay role', async () => {
  const roles = (await fx.database.roles())!;
  const refused = await listDeadEvents(fx.appUrl).catch((error: unknown) => error);
  expect(refused).toBeInstanceOf(WrongRoleError);
  expect(refused).toMatchObject({ code: 'WRONG_ROLE', neededRole: roles.relay });
});

it('requeueDeadEvents refuses the application role with WRONG_ROLE, and requeues nothing', async () => {
  const roles = (await fx.database.roles())!;
  const refused = await requeueDeadEvents(fx.appUrl, 'all').catch((error: unknown) => error);
  expect(refused).toBeInstanceOf(WrongRoleError);
  expect(refused).toMatchObject({ code: 'WRONG_ROLE', neededRole: roles.relay });
});

it('pg-once outbox dead, as the application role, prints the coded refusal and exits 1', async () => {
  const failed = (await promisify(execFile)(process.execPath, ['src/cli.ts', 'outbox', 'dead', '--database-url', fx.appUrl]).catch(
    (error: unknown) => error,
  )) as { code?: number; stderr: string };
  expect(failed.code).toBe(1);
  expect(failed.stderr).toContain('[WRONG_ROLE]');
});
