import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    // Child processes are killed with SIGKILL in some tests; forks keep each file in its own process.
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Every test file works in a database of its own (cloned from a migrated template), so files
    // run in parallel without seeing each other's rows.
    fileParallelism: true,
  },
});
