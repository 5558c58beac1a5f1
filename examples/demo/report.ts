/**
 * The end of the demo: what was stored, delivered and applied, read back from Postgres (as the
 * superuser, past row-level security, to see every tenant's rows) and from the receiver, set
 * against what the plan says must have happened exactly once.
 */
import type pg from 'pg';
import { status } from '../../src/index.ts';
import type { WebhookReceiverCounts } from '../webhook-receiver.ts';
import type { DemoPlan } from './plan.ts';
import type { DemoStats } from './stats.ts';

export interface Stored {
  orders: number;
  charges: number;
  emails: number;
  runsWithOneOrder: number;
  ordersWithOneCharge: number;
  emailIntentsWithOneEmail: number;
  outbox: { total: number; pending: number; delivered: number; dead: number };
  /** Executions pg-once itself recorded (status(), as the relay role). */
  pgOnceExecutions: number;
}

export async function readStored(admin: pg.Pool, relayUrl: string): Promise<Stored> {
  const { rows } = await admin.query(`
    SELECT (SELECT count(*) FROM orders)::int AS orders,
           (SELECT count(*) FROM charges)::int AS charges,
           (SELECT count(*) FROM emails)::int AS emails,
           (SELECT count(*) FROM (SELECT 1 FROM orders GROUP BY tenant_id, run_id HAVING count(*) = 1) o)::int AS runs_with_one_order,
           (SELECT count(*) FROM orders o
             WHERE (SELECT count(*) FROM charges c WHERE c.tenant_id = o.tenant_id AND c.order_id = o.id) = 1)::int AS orders_with_one_charge,
           (SELECT count(*) FROM (SELECT 1 FROM emails GROUP BY tenant_id, order_id, template HAVING count(*) = 1) e)::int AS email_intents_with_one_email,
           (SELECT count(*) FROM once.outbox_events)::int AS total,
           (SELECT count(*) FROM once.outbox_events WHERE status = 'pending')::int AS pending,
           (SELECT count(*) FROM once.outbox_events WHERE status = 'delivered')::int AS delivered,
           (SELECT count(*) FROM once.outbox_events WHERE status = 'dead')::int AS dead`);
  const row = rows[0]!;
  const report = await status(relayUrl, { window: '1d' });
  return {
    orders: row.orders,
    charges: row.charges,
    emails: row.emails,
    runsWithOneOrder: row.runs_with_one_order,
    ordersWithOneCharge: row.orders_with_one_charge,
    emailIntentsWithOneEmail: row.email_intents_with_one_email,
    outbox: { total: row.total, pending: row.pending, delivered: row.delivered, dead: row.dead },
    pgOnceExecutions: report.tenants.reduce((sum, tenant) => sum + tenant.executions, 0),
  };
}

export interface Downstream extends WebhookReceiverCounts {
  /** Effects applied per topic (one per dedupe id). */
  effects: Record<string, number>;
  /** Events whose first delivery the receiver applied and then answered 503. */
  lostAnswers: number;
}

interface Check {
  name: string;
  expected: number;
  found: number;
  ok: boolean;
}

export function checks(plan: DemoPlan, stats: DemoStats, stored: Stored, downstream: Downstream): Check[] {
  const { intents } = plan;
  const rows = stored.orders + stored.charges + stored.emails;
  const effect = (topic: string) => downstream.effects[topic] ?? 0;
  const effects = effect('orders.created') + effect('payments.charge') + effect('emails.send');
  const check = (name: string, expected: number, found: number, also = true): Check => ({ name, expected, found, ok: expected === found && also });
  return [
    check('business rows = unique intents', intents.total, rows),
    check('orders per run = 1', intents.orders, stored.runsWithOneOrder, stored.orders === intents.orders),
    check('charges per order = 1', intents.orders, stored.ordersWithOneCharge, stored.charges === stored.orders),
    check('emails per intent = 1', intents.emails, stored.emailIntentsWithOneEmail, stored.emails === intents.emails),
    check('tool executions = unique intents', intents.total, stats.calls.executed),
    check('executions pg-once recorded', intents.total, stored.pgOnceExecutions),
    check('answers to duplicates = first answer', stats.answers.compared, stats.answers.compared - stats.answers.different),
    check('events delivered = events written', stored.outbox.total, stored.outbox.delivered, stored.outbox.dead === 0),
    check(
      'effects downstream = business rows',
      rows,
      effects,
      effect('orders.created') === stored.orders &&
        effect('payments.charge') === stored.charges &&
        effect('emails.send') === stored.emails &&
        downstream.unverified === 0,
    ),
  ];
}

const n = (value: number) => value.toLocaleString('en-US');
const LABEL_WIDTH = 56;
const line = (label: string, value: number, unit = '') =>
  `  ${label.padEnd(LABEL_WIDTH)}${n(value).padStart(7)}${unit ? ` ${value === 1 ? unit.replace(/s$/, '') : unit}` : ''}`;

export function formatReport(plan: DemoPlan, stats: DemoStats, stored: Stored, downstream: Downstream, results: Check[], seconds: number): string {
  const pass = results.every((result) => result.ok);
  const { injected } = plan;
  return [
    '  duplicates injected',
    line('  network retries: a call re-sent after a timeout', injected.networkRetries, 'runs'),
    line('  model re-invocations: the same call in a later step', injected.reinvocations, 'runs'),
    line('  queue redeliveries: one message to two consumers', injected.redeliveries, 'runs'),
    line('  worker crashes: SIGKILL mid-call, run resumed', injected.crashes, 'runs'),
    line('  lost webhook answers: applied, then answered 503', downstream.lostAnswers, 'events'),
    '',
    line('tool calls received', stats.received),
    line('  executed: the tool ran, its writes committed', stats.calls.executed),
    line('  replayed: stored result, the tool did not run', stats.calls.replayed),
    line('  waited: for a concurrent duplicate, then replayed', stats.calls.waited),
    line('  rejected: 409 still in progress, retried later', stats.calls.rejected),
    line('  killed mid-call: rolled back with the worker', stats.calls.killed),
    line('outbox events written (one per execution)', stored.outbox.total),
    line('  delivered by the relay as signed webhooks', stored.outbox.delivered),
    line('  duplicates dropped downstream (same dedupe id)', downstream.duplicatesDropped),
    '',
    `  ${'check'.padEnd(LABEL_WIDTH - 9)}${'expected'.padStart(9)}${'found'.padStart(7)}`,
    ...results.map(
      (result) => `  ${result.name.padEnd(LABEL_WIDTH - 9)}${n(result.expected).padStart(9)}${n(result.found).padStart(7)}  ${result.ok ? 'ok' : 'FAIL'}`,
    ),
    '',
    `  ${pass ? 'PASS' : 'FAIL'}: ${n(plan.runs.length)} agent runs of ${plan.tenants.length} tenants, ${pass ? 'every intent took effect once' : 'see the checks above'} (${seconds.toFixed(1)} s)`,
  ].join('\n');
}
