/**
 * The setting of a relay test file: an app fixture (its own database, an application role) and a
 * login role granted the database's relay role, created before the file's tests and dropped after them. The
 * file's own afterAll hooks (stopping relays, killing child processes) run before the drop.
 */
import { afterAll, beforeAll } from 'vitest';
import { createAppFixture, type AppFixture } from './app-fixture.ts';

export interface RelayFixture {
  fx: AppFixture;
  /** Connection string of the relay login role. */
  relayUrl: string;
}

export function useRelayFixture(poolSize = 4): RelayFixture {
  const setting = {} as RelayFixture;
  beforeAll(async () => {
    setting.fx = await createAppFixture(poolSize);
    setting.relayUrl = await setting.fx.database.createLoginRole('relay');
  });
  afterAll(async () => {
    await setting.fx?.close();
  });
  return setting;
}

/** Options every in-process test relay takes: no signal handlers, no sweep scheduler, no logging. */
export const QUIET_RELAY = { handleSignals: false, sweep: false, logger: { warn: () => {}, error: () => {} } } as const;
