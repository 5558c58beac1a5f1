/**
 * The dashboard's queries on a populated outbox, with their plans: run against a database you
 * filled (e.g. a million events over 10,000 tenants) as a login granted the relay role, since
 * row-level security policies are part of the plan.
 *
 *   node bench/dashboard-plans.ts postgres://relay-login@host/db
 *
 * Each statement is run once under EXPLAIN (ANALYZE, BUFFERS), then for real; the report lists
 * every statement's time and whether its plan reads outbox_events sequentially.
 */
import pg from 'pg';
import type { Session } from '../src/internal/session.ts';
import { backlogByTenant } from '../src/ops/dashboard-sql/backlog-by-tenant.ts';
import { backlogByTopic } from '../src/ops/dashboard-sql/backlog-by-topic.ts';
import { deadEventList } from '../src/ops/dashboard-sql/dead-event-list.ts';
import { deliverySeries } from '../src/ops/dashboard-sql/delivery-series.ts';
import { eventDetail, operatorActions } from '../src/ops/dashboard-sql/event-detail.ts';
import { idempotencySeries, outcomesByTenantTool } from '../src/ops/dashboard-sql/idempotency-series.ts';
import { keyLookup } from '../src/ops/dashboard-sql/key-lookup.ts';
import { overviewCounts } from '../src/ops/dashboard-sql/overview-counts.ts';

const url = process.argv[2] ?? process.env.DATABASE_URL;
if (!url) throw new Error('usage: node bench/dashboard-plans.ts <postgres://relay-login@host/db>');
const client = new pg.Client({ connectionString: url });
await client.connect();

interface Measured {
  what: string;
  statement: string;
  ms: number;
  outboxSeqScan: boolean;
  plan: string;
}
const measured: Measured[] = [];
let current = '';

const explaining: Session = {
  async query<Row>(text: string, values?: readonly unknown[]) {
    if (/^\s*(SELECT|WITH)\b/i.test(text) && !/set_config/.test(text)) {
      const { rows } = await client.query<{ 'QUERY PLAN': string }>(`EXPLAIN (ANALYZE, BUFFERS) ${text}`, values as unknown[]);
      const plan = rows.map((row) => row['QUERY PLAN']).join('\n');
      measured.push({
        what: current,
        statement: text.replace(/\s+/g, ' ').trim().slice(0, 80),
        ms: Number(/Execution Time: ([\d.]+) ms/.exec(plan)?.[1]),
        outboxSeqScan: /Seq Scan on outbox_events/.test(plan),
        plan,
      });
    }
    const result = await client.query(text, values as unknown[]);
    return { rows: result.rows as Row[] };
  },
};

const step = async (what: string, run: () => Promise<unknown>) => {
  current = what;
  await run();
};
const HOUR = 60 * 60 * 1_000;
const { rows: someDead } = await client.query<{ tenant_id: string; id: string }>(
  `SELECT tenant_id, id FROM once.outbox_events WHERE status = 'dead' ORDER BY id DESC LIMIT 1`,
);
const tenant = someDead[0]?.tenant_id ?? 'tenant-1';
await step('overview counts', () => overviewCounts(explaining));
await step('deliveries and latency, 1h', () => deliverySeries(explaining, HOUR, 60));
await step('backlog by tenant, by size', () => backlogByTenant(explaining, { order: 'size', limit: 50 }));
await step('backlog by tenant, by name', () => backlogByTenant(explaining, { order: 'name', limit: 50 }));
await step('backlog by tenant, by name, page 2', () =>
  backlogByTenant(explaining, { order: 'name', after: { tenantId: 'tenant-5000', pending: 0 }, limit: 50 }),
);
await step('backlog by topic', () => backlogByTopic(explaining, 50));
await step('dead events, first page', () => deadEventList(explaining, {}, { limit: 50 }));
await step('dead events of a tenant', () => deadEventList(explaining, { tenant }, { limit: 50 }));
await step('dead events by error text', () => deadEventList(explaining, { error: 'HTTP 503' }, { limit: 50 }));
if (someDead[0]) await step('event detail', () => eventDetail(explaining, someDead[0]!.tenant_id, String(someDead[0]!.id)));
await step('operator actions', () => operatorActions(explaining, undefined, 50));
await step('idempotency chart, all tenants, 1h', () => idempotencySeries(explaining, HOUR, 60, {}));
await step('idempotency chart, one tenant, 1h', () => idempotencySeries(explaining, HOUR, 60, { tenant }));
await step('idempotency by tenant and tool, 1h', () => outcomesByTenantTool(explaining, HOUR, {}, 50));
await step('key lookup', () => keyLookup(explaining, tenant, 'key-1'));
await client.end();

for (const row of measured) {
  console.log(`${row.ms.toFixed(1).padStart(9)} ms  ${row.outboxSeqScan ? 'SEQ SCAN ' : '         '} ${row.what}: ${row.statement}`);
}
if (process.env.PLANS) for (const row of measured) console.log(`\n== ${row.what}\n${row.plan}`);
