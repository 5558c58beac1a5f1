/**
 * The database clock of the relay (DeliveryContext.now): a relay host whose clock is an hour off
 * still stamps deliveries with the database's time.
 */
import { expect, it } from 'vitest';
import { startRelay, type DeliveryContext } from '../src/index.ts';
import { DatabaseClock } from '../src/outbox/database-clock.ts';
import { QUIET_RELAY, useRelayFixture } from './support/relay-fixture.ts';
import { fillOutbox, waitForOutbox } from './support/outbox-helpers.ts';
import { testPool } from './support/test-database.ts';

const setting = useRelayFixture();

const HOUR_MILLISECONDS = 60 * 60 * 1_000;

async function databaseNow(): Promise<number> {
  const { rows } = await setting.fx.database.admin.query<{ ms: number }>('SELECT extract(epoch FROM clock_timestamp())::float8 * 1000 AS ms');
  return rows[0]!.ms;
}

it('applies the measured offset: a host clock an hour behind still reads the database time', async () => {
  const pool = testPool({ connectionString: setting.relayUrl, max: 1 });
  try {
    const clock = new DatabaseClock(
      (text) => pool.query(text),
      () => Date.now() - HOUR_MILLISECONDS,
    );
    // Before a measurement, the clock is the host's: an hour off.
    expect(Math.abs(clock.now().getTime() - (await databaseNow()))).toBeGreaterThan(HOUR_MILLISECONDS - 60_000);
    await clock.measure();
    expect(Math.abs(clock.offset - HOUR_MILLISECONDS)).toBeLessThan(1_000);
    expect(clock.uncertainty).toBeLessThan(1_000);
    const before = await databaseNow();
    const read = clock.now().getTime();
    const after = await databaseNow();
    // Within the measurement's uncertainty (plus a millisecond of rounding) of the database clock.
    expect(read).toBeGreaterThanOrEqual(before - clock.uncertainty - 1);
    expect(read).toBeLessThanOrEqual(after + clock.uncertainty + 1);
  } finally {
    await pool.end();
  }
});

it('gives sinks context.now(), the database clock', async () => {
  await fillOutbox(setting.fx.app, { count: 3, tenants: 1 });
  const readings: { before: number; now: number }[] = [];
  const relay = await startRelay({
    connectionString: setting.relayUrl,
    ...QUIET_RELAY,
    sinks: {
      '>': async (_event, context: DeliveryContext) => {
        readings.push({ before: Date.now(), now: context.now!().getTime() });
      },
    },
  });
  try {
    await waitForOutbox(setting.fx.database.admin, (c) => c.delivered === 3);
  } finally {
    await relay.stop();
  }
  expect(readings).toHaveLength(3);
  // Same machine: the database clock and the host clock agree to within a second.
  for (const reading of readings) expect(Math.abs(reading.now - reading.before)).toBeLessThan(1_000);
});
