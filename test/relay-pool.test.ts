/**
 * The relay's own connections on a young outbox (relay-pool.ts): custom plans while the table has
 * no statistics or is small, so that no plan cached for a table of a few pages outlives the table's
 * growth; cached plans otherwise, and no session setting behind a pooler.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../src/index.ts';
import { createRelayPool, planForYoungOutbox } from '../src/outbox/relay-pool.ts';
import { createTestDatabase, type TestDatabase } from './support/test-database.ts';

let database: TestDatabase;
let relayUrl: string;

beforeAll(async () => {
  // Migrated here rather than cloned, so the outbox has certainly never been analyzed.
  database = await createTestDatabase({ empty: true });
  await migrate(database.adminUrl);
  relayUrl = await database.createLoginRole('relay');
});

afterAll(async () => {
  await database.drop();
});

async function planCacheMode(pool: pg.Pool): Promise<string> {
  const { rows } = await pool.query<{ plan_cache_mode: string }>('SHOW plan_cache_mode');
  return rows[0]!.plan_cache_mode;
}

async function modeAfterCheck(youngBytes?: number): Promise<string> {
  const client = new pg.Client({ connectionString: relayUrl });
  await client.connect();
  try {
    await planForYoungOutbox(client, youngBytes);
    const { rows } = await client.query<{ plan_cache_mode: string }>('SHOW plan_cache_mode');
    return rows[0]!.plan_cache_mode;
  } finally {
    await client.end();
  }
}

describe('relay connections on a young outbox', () => {
  it('plan each statement afresh on a never-analyzed outbox, and set nothing behind a pooler', async () => {
    const { rows } = await database.admin.query<{ reltuples: number }>("SELECT reltuples FROM pg_class WHERE oid = 'once.outbox_events'::regclass");
    expect(rows[0]!.reltuples).toBeLessThan(0);
    const own = createRelayPool(relayUrl, 10_000);
    const pooled = createRelayPool(relayUrl, 10_000, 'transaction');
    try {
      expect(await planCacheMode(own)).toBe('force_custom_plan');
      expect(await planCacheMode(pooled)).toBe('auto');
    } finally {
      await Promise.all([own.end(), pooled.end()]);
    }
    // Even a threshold of one byte: no statistics yet is young enough.
    expect(await modeAfterCheck(1)).toBe('force_custom_plan');
  });

  it('keeps cached plans once the outbox has statistics and is past the size, custom ones while it is smaller', async () => {
    await database.admin.query(
      `INSERT INTO once.outbox_events (tenant_id, dedupe_id, topic, payload)
       SELECT 'tenant-a', 'd' || g, 'orders.created', '{}'::jsonb FROM generate_series(1, 100) g`,
    );
    await database.admin.query('ANALYZE once.outbox_events');
    expect(await modeAfterCheck(1)).toBe('auto');
    expect(await modeAfterCheck()).toBe('force_custom_plan');
  });
});
