import { defineConfig } from 'vitest/config';

/**
 * The fault and abuse suite (issue 8), run by `npm run test:faults`, never by `npm test`: its
 * files are named *.fault.ts, outside the *.test.ts pattern of vitest.config.ts. Real Postgres
 * (the same global setup as the unit tests, plus a server of its own for the restart scenario),
 * real HTTP receivers, real NATS servers; child processes killed with SIGKILL.
 */
export default defineConfig({
  test: {
    root: new URL('../..', import.meta.url).pathname,
    include: ['test/faults/**/*.fault.ts'],
    globalSetup: ['test/support/global-setup.ts', 'test/faults/figures-setup.ts'],
    pool: 'forks',
    // Two files at a time: the scenarios are load tests of their own, and on 2 cores more at once
    // only stretches waits (and the wait bounds some scenarios check) without finishing sooner.
    maxWorkers: 2,
    fileParallelism: true,
    testTimeout: 300_000,
    hookTimeout: 120_000,
  },
});
