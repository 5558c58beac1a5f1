/**
 * The claim and the settle find each event's row by the ctid the previous statement returned
 * (claim-events.ts, mark-delivered.ts). A ctid is only a hint: anything else that updates a row
 * moves it, and VACUUM lets another row take its place. These tests move rows under a claim and
 * hand the settle wrong ctids, and check the outcome is what the primary-key statements give.
 */
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { type DeliveryEvent, type Relay, startRelay } from '../src/index.ts';
import { LeaseRenewal } from '../src/outbox/lease-renewal.ts';
import { timedDatabase } from '../src/outbox/relay-pool.ts';
import { type ClaimedEvent, claimEvents } from '../src/outbox/sql/claim-events.ts';
import { markDelivered } from '../src/outbox/sql/mark-delivered.ts';
import { fillOutbox, waitForOutbox } from './support/outbox-helpers.ts';
import { QUIET_RELAY, useRelayFixture } from './support/relay-fixture.ts';
import { testPool } from './support/test-database.ts';

const setting = useRelayFixture();
const relays: Relay[] = [];

afterAll(async () => {
  await Promise.all(relays.map((relay) => relay.stop()));
});

beforeEach(async () => {
  await setting.fx.database.admin.query('DELETE FROM once.outbox_events');
});

interface Row {
  id: string;
  status: string;
  locked_by: string | null;
  tid: string;
}

async function rowsById(): Promise<Map<string, Row>> {
  const { rows } = await setting.fx.database.admin.query<Row>('SELECT id::text, status, locked_by, ctid::text AS tid FROM once.outbox_events');
  return new Map(rows.map((row) => [row.id, row]));
}

/** Claims every pending event as `relayId` (one claim; a handful of events). */
async function claimAll(relayId: string): Promise<ClaimedEvent[]> {
  const pool = testPool({ connectionString: setting.relayUrl, max: 1 });
  try {
    const claim = await claimEvents(timedDatabase(pool, 10_000), { limit: 100, leaseMs: 60_000, relayId, maxAttempts: 5, after: '', runFollowers: 16 });
    return [...claim.events, ...claim.followers];
  } finally {
    await pool.end();
  }
}

/** Settles `events` as `relayId`; returns the names of the statements that ran. */
async function settle(events: ClaimedEvent[], relayId: string): Promise<string[]> {
  const pool = testPool({ connectionString: setting.relayUrl, max: 1 });
  const db = timedDatabase(pool, 10_000);
  const sent: string[] = [];
  try {
    const counted = {
      query: (config: Parameters<typeof db.query>[0]) => {
        sent.push(config.name ?? '');
        return db.query(config);
      },
    };
    await markDelivered(counted, events, relayId);
    return sent;
  } finally {
    await pool.end();
  }
}

describe('claims and settles by ctid', () => {
  it('the claim returns where each claimed row now lies, and the settle finds it there', async () => {
    await fillOutbox(setting.fx.app, { count: 6, tenants: 2, orderingKeys: 2 });
    const claimed = await claimAll('relay-a');
    expect(claimed.length).toBeGreaterThanOrEqual(2);
    const before = await rowsById();
    for (const event of claimed) {
      expect(before.get(event.id)).toMatchObject({ status: 'pending', locked_by: 'relay-a', tid: event.tid });
    }
    expect(await settle(claimed, 'relay-a')).toEqual(['once_mark_delivered_at']);
    const after = await rowsById();
    for (const event of claimed) expect(after.get(event.id)!.status).toBe('delivered');
  });

  it('a renewal moves the row and says where to; the settle finds it there', async () => {
    await fillOutbox(setting.fx.app, { count: 3, tenants: 1 });
    const claimed = await claimAll('relay-a');
    const pool = testPool({ connectionString: setting.relayUrl, max: 1 });
    try {
      for (const event of claimed) event.leaseUntil = Date.now();
      const errors: unknown[] = [];
      await new LeaseRenewal(timedDatabase(pool, 10_000), 'relay-a', (error) => errors.push(error)).renew([{ held: claimed, leaseMs: 60_000 }]);
      expect(errors).toEqual([]);
    } finally {
      await pool.end();
    }
    const moved = await rowsById();
    for (const event of claimed) expect(event.tid).toBe(moved.get(event.id)!.tid);
    expect(await settle(claimed, 'relay-a')).toEqual(['once_mark_delivered_at']);
    for (const event of claimed) expect((await rowsById()).get(event.id)!.status).toBe('delivered');
  });

  it('settles a row that moved after its claim (the ctid missed), by primary key', async () => {
    await fillOutbox(setting.fx.app, { count: 4, tenants: 1 });
    const claimed = await claimAll('relay-a');
    expect(claimed).toHaveLength(4);
    // An operator's UPDATE (or a renewal whose answer was lost) writes a new row version elsewhere.
    await setting.fx.database.admin.query('UPDATE once.outbox_events SET headers = headers WHERE id = $1', [claimed[0]!.id]);
    expect((await rowsById()).get(claimed[0]!.id)!.tid).not.toBe(claimed[0]!.tid);
    expect(await settle(claimed, 'relay-a')).toEqual(['once_mark_delivered_at', 'once_mark_delivered']);
    const after = await rowsById();
    expect(claimed.map((event) => after.get(event.id)!.status)).toEqual(['delivered', 'delivered', 'delivered', 'delivered']);
  });

  it('a ctid that holds another event settles only the event named, never the one that lies there', async () => {
    await fillOutbox(setting.fx.app, { count: 2, tenants: 1 });
    const [first, second] = await claimAll('relay-a');
    // The first event, pointed at the second's row: the second must stay as it is.
    expect(await settle([{ ...first!, tid: second!.tid }], 'relay-a')).toEqual(['once_mark_delivered_at', 'once_mark_delivered']);
    const after = await rowsById();
    expect(after.get(first!.id)!.status).toBe('delivered');
    expect(after.get(second!.id)).toMatchObject({ status: 'pending', locked_by: 'relay-a' });
  });

  it('a claim that is not ours any more is settled by neither statement', async () => {
    await fillOutbox(setting.fx.app, { count: 2, tenants: 1 });
    const claimed = await claimAll('relay-a');
    // relay-a's lease lapsed and relay-b claimed the events again (attempt 2).
    await setting.fx.database.admin.query("UPDATE once.outbox_events SET next_attempt_at = now() - interval '1 second'");
    const again = await claimAll('relay-b');
    expect(again.map((event) => event.attempt)).toEqual([2, 2]);
    await settle(claimed, 'relay-a');
    const after = await rowsById();
    for (const event of claimed) expect(after.get(event.id)).toMatchObject({ status: 'pending', locked_by: 'relay-b' });
    await settle(again, 'relay-b');
    for (const event of again) expect((await rowsById()).get(event.id)!.status).toBe('delivered');
  });

  it('a relay delivers an event whose row moved while the sink ran, once, and settles it', async () => {
    const [ref] = await fillOutbox(setting.fx.app, { count: 1, tenants: 1 });
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let started!: () => void;
    const running = new Promise<void>((resolve) => (started = resolve));
    const calls: DeliveryEvent[] = [];
    const relay = await startRelay({
      ...QUIET_RELAY,
      connectionString: setting.relayUrl,
      sinks: {
        '>': async (event) => {
          calls.push(event);
          started();
          await released;
        },
      },
    });
    relays.push(relay);
    await running;
    await setting.fx.database.admin.query('UPDATE once.outbox_events SET headers = headers WHERE id = $1', [ref!.id]);
    release();
    await waitForOutbox(setting.fx.database.admin, (counts) => counts.delivered === 1);
    await relay.stop();
    expect(calls.map((event) => event.id)).toEqual([ref!.id]);
  });
});
