/**
 * The relay's settle, fail, release and renew statements take arrays of events. Planned for the
 * arrays' actual values (the first runs of a named statement on a connection; every run behind a
 * transaction-mode pooler), with statistics that never saw the relay's id in locked_by, they once
 * became a sequential scan of the whole outbox per statement. Each must be planned as primary-key
 * probes, one per event, whatever the arrays hold (see src/outbox/sql/event-refs.ts).
 */
import { expect, it } from 'vitest';
import { MARK_DELIVERED_AT_TEXT, MARK_DELIVERED_TEXT } from '../src/outbox/sql/mark-delivered.ts';
import { MARK_FAILED_TEXT } from '../src/outbox/sql/mark-failed.ts';
import { RELEASE_EVENTS_TEXT } from '../src/outbox/sql/release-events.ts';
import { RENEW_LEASES_TEXT } from '../src/outbox/sql/renew-leases.ts';
import { useRelayFixture } from './support/relay-fixture.ts';
import { testPool } from './support/test-database.ts';

const setting = useRelayFixture();

const EVENTS = 5_000;
const BATCH = 700;

/** Every node of a JSON plan, depth first. */
function nodesOf(plan: Record<string, unknown>): Record<string, unknown>[] {
  const children = (plan.Plans as Record<string, unknown>[] | undefined) ?? [];
  return [plan, ...children.flatMap(nodesOf)];
}

it('plans every batched relay statement as primary-key probes, not a scan of the outbox', async () => {
  const { admin } = setting.fx.database;
  await admin.query(
    `INSERT INTO once.outbox_events (tenant_id, dedupe_id, topic, payload)
     SELECT 'tenant-' || (i % 10), 'plan-' || i, 'plan.event', '{}' FROM generate_series(1, $1::int) i`,
    [EVENTS],
  );
  await admin.query('ANALYZE once.outbox_events');
  const { rows: picked } = await admin.query<{ tenant_id: string; id: string }>('SELECT tenant_id, id FROM once.outbox_events ORDER BY id LIMIT $1', [BATCH]);
  const tenants = picked.map((row) => row.tenant_id);
  const ids = picked.map((row) => row.id);
  const attempts = picked.map(() => 1);
  const relayId = 'relay-the-statistics-never-saw';
  const statements: [string, string, unknown[]][] = [
    ['mark delivered', MARK_DELIVERED_TEXT, [tenants, ids, attempts, relayId]],
    ['mark failed', MARK_FAILED_TEXT, [tenants, ids, attempts, picked.map(() => false), picked.map(() => 100), picked.map(() => 'boom'), relayId]],
    ['release', RELEASE_EVENTS_TEXT, [tenants, ids, attempts, relayId]],
    ['renew', RENEW_LEASES_TEXT, [tenants, ids, attempts, picked.map(() => 750), relayId]],
  ];
  const pool = testPool({ connectionString: setting.relayUrl, max: 1 });
  try {
    for (const [name, text, values] of statements) {
      // Unnamed, with its values: planned for them, as the first runs of a named one are.
      const { rows } = await pool.query<{ 'QUERY PLAN': [{ Plan: Record<string, unknown> }] }>(`EXPLAIN (FORMAT JSON) ${text}`, values);
      const nodes = nodesOf(rows[0]!['QUERY PLAN'][0].Plan);
      const outboxScans = nodes.filter((node) => node['Relation Name'] === 'outbox_events' && node['Node Type'] !== 'ModifyTable');
      expect(outboxScans.length, name).toBeGreaterThan(0);
      for (const scan of outboxScans) {
        expect({ name, type: scan['Node Type'], index: scan['Index Name'] }).toEqual({ name, type: 'Index Scan', index: 'outbox_events_pkey' });
      }
    }
  } finally {
    await pool.end();
  }
  // Nothing was changed by EXPLAIN.
  const { rows } = await admin.query<{ pending: string }>("SELECT count(*) AS pending FROM once.outbox_events WHERE status = 'pending' AND locked_by IS NULL");
  expect(Number(rows[0]!.pending)).toBe(EVENTS);
});

it('plans the settle by ctid as one TID scan per event, nothing else on the outbox', async () => {
  const { admin } = setting.fx.database;
  const { rows: picked } = await admin.query<{ tenant_id: string; id: string; tid: string }>(
    'SELECT tenant_id, id, ctid AS tid FROM once.outbox_events ORDER BY id LIMIT $1',
    [BATCH],
  );
  const values = [picked.map((row) => row.tenant_id), picked.map((row) => row.id), picked.map(() => 1), 'relay-x', picked.map((row) => row.tid)];
  const pool = testPool({ connectionString: setting.relayUrl, max: 1 });
  try {
    const { rows } = await pool.query<{ 'QUERY PLAN': [{ Plan: Record<string, unknown> }] }>(`EXPLAIN (FORMAT JSON) ${MARK_DELIVERED_AT_TEXT}`, values);
    const scans = nodesOf(rows[0]!['QUERY PLAN'][0].Plan).filter((node) => node['Relation Name'] === 'outbox_events' && node['Node Type'] !== 'ModifyTable');
    expect(scans.map((node) => node['Node Type'])).toEqual(['Tid Scan']);
  } finally {
    await pool.end();
  }
});
