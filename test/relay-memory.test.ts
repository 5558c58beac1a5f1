/**
 * The relay's memory is bounded in bytes: it claims (and holds, queued or in flight) no more
 * payload than maxHeldBytes, whatever the size of the events, and still delivers them all.
 */
import { expect, it } from 'vitest';
import { startRelay } from '../src/index.ts';
import { waitForOutbox } from './support/outbox-helpers.ts';
import { QUIET_RELAY, useRelayFixture } from './support/relay-fixture.ts';

const setting = useRelayFixture();

const EVENT_BYTES = 200_000;
const BUDGET_BYTES = 1_048_576;

it('holds at most maxHeldBytes of payloads, claimed or in flight, and delivers everything', async () => {
  // 40 events of 200 kB each (random text, so compression cannot make them look small).
  await setting.fx.database.admin.query(
    `INSERT INTO once.outbox_events (tenant_id, dedupe_id, topic, payload)
     SELECT 'tenant-' || (i % 2), 'big-' || i, 'big',
            to_jsonb((SELECT string_agg(md5(i::text || '-' || j::text), '') FROM generate_series(1, $1 / 32) j))
       FROM generate_series(1, 40) i`,
    [EVENT_BYTES],
  );
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let calls = 0;
  const relay = await startRelay({
    ...QUIET_RELAY,
    connectionString: setting.relayUrl,
    concurrency: 32,
    maxHeldBytes: BUDGET_BYTES,
    sinks: {
      '>': async () => {
        calls += 1;
        await released;
      },
    },
  });
  try {
    await waitForOutbox(setting.fx.database.admin, () => calls > 0);
    await new Promise((resolve) => setTimeout(resolve, 300)); // time for more claims, if it would make them
    const { rows } = await setting.fx.database.admin.query<{ n: number }>('SELECT count(*)::int AS n FROM once.outbox_events WHERE locked_by IS NOT NULL');
    // 1 MiB holds five of them; the claim that crosses the budget may bring one more.
    expect(rows[0]!.n).toBeLessThanOrEqual(Math.floor(BUDGET_BYTES / EVENT_BYTES) + 1);
    expect(calls).toBe(rows[0]!.n);
    release();
    await waitForOutbox(setting.fx.database.admin, (c) => c.delivered === 40);
  } finally {
    release();
    await relay.stop();
  }
});
