import { status, type Status } from '../ops/status.ts';
import type { Command } from './command.ts';
import { databaseUrl } from './database-url.ts';
import { parseFlags } from './parse-flags.ts';

const HELP = `Usage: pg-once status [--window <duration>] [--sweep-schedule <cron>] [--json]

Per tenant and tool over the window (default 1h): calls, executions, replays, waits, key reuses,
rate-limited calls. The outbox: pending, oldest pending, dead, delivery rate. Table sizes, and
the last and next sweep; logical replication slots (the relays' doorbells) with the WAL
each holds back. --json prints the same data for machines.
Run as a login granted this database's relay role (\`pg-once roles\`). Reads DATABASE_URL unless --database-url is given.`;

export const statusCommand: Command = {
  summary: 'calls, replays, outbox backlog, table sizes and sweeps at a glance',
  async run(args) {
    const { values } = parseFlags(args, {
      'database-url': { type: 'string' },
      window: { type: 'string' },
      'sweep-schedule': { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    });
    if (values.help) {
      console.log(HELP);
      return;
    }
    const result = await status(databaseUrl(values['database-url']), {
      ...(values.window === undefined ? {} : { window: values.window }),
      ...(values['sweep-schedule'] === undefined ? {} : { sweepSchedule: values['sweep-schedule'] }),
    });
    console.log(values.json ? JSON.stringify(result, null, 2) : formatStatus(result));
  },
};

function formatStatus(result: Status): string {
  const lines: string[] = [];
  const minutes = Math.round(result.windowMs / 60_000);
  lines.push(`pg-once status at ${result.generatedAt.toISOString()} (last ${minutes} min)`, '');
  if (result.tenants.length === 0) lines.push('No calls in the window.');
  else {
    lines.push(
      table(
        ['tenant', 'tool', 'calls', 'executed', 'replayed', 'waited', 'key reused', 'rate limited', 'in progress (409)'],
        result.tenants.map((t) => [t.tenantId, t.tool || '-', t.calls, t.executions, t.replays, t.waits, t.keyReuses, t.rateLimited, t.inProgress]),
      ),
    );
  }
  const o = result.outbox;
  lines.push(
    '',
    `Outbox: ${o.pending} pending` +
      (o.oldestPendingAgeMs === null ? '' : ` (oldest ${(o.oldestPendingAgeMs / 1_000).toFixed(1)} s)`) +
      `, ${o.dead} dead, ${o.deliveredInWindow} delivered (${o.deliveriesPerSecond.toFixed(2)}/s)`,
    '',
    table(
      ['table', 'size', 'rows'],
      result.tables.map((t) => [t.table, `${(t.bytes / 1024).toFixed(0)} kB`, t.rowsExact ? t.rows : `~${t.rows} (est.)`]),
    ),
    '',
    `Sweeps (${result.sweep.schedule}): last ${result.sweep.lastRunAt?.toISOString() ?? 'never'}, next ${result.sweep.nextRunAt?.toISOString() ?? '-'}`,
  );
  if (result.replicationSlots.length > 0) {
    lines.push(
      '',
      table(
        ['replication slot', 'plugin', 'temporary', 'active', 'retained WAL'],
        result.replicationSlots.map((s) => [
          s.slot,
          s.plugin,
          s.temporary ? 'yes' : 'no',
          s.active ? 'yes' : 'no',
          s.retainedWalBytes === null ? '-' : `${(s.retainedWalBytes / 1024).toFixed(0)} kB`,
        ]),
      ),
    );
  }
  return lines.join('\n');
}

function table(headers: string[], rows: (string | number)[][]): string {
  const widths = headers.map((header, i) => Math.max(header.length, ...rows.map((row) => String(row[i]).length)));
  const line = (row: (string | number)[]) =>
    row.map((cell, i) => (typeof cell === 'number' ? String(cell).padStart(widths[i]!) : String(cell).padEnd(widths[i]!))).join('  ');
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}
