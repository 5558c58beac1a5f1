import { sweep } from '../ops/sweep.ts';
import type { Command } from './command.ts';
import { databaseUrl } from './database-url.ts';
import { parseFlags } from './parse-flags.ts';

const HELP = `Usage: pg-once sweep [--batch-size <n>] [--outbox-retention <duration>] [--audit-retention <duration>] [--json]

Deletes expired idempotency records, delivered outbox events older than the outbox retention
(default 7d) and audit rows older than the audit retention (default 30d), in batches that never
block claims. Dead events are kept. The relay also runs this on a schedule (every 5 minutes).
Run as a login granted this database's relay role (\`pg-once roles\`). Reads DATABASE_URL unless --database-url is given.`;

export const sweepCommand: Command = {
  summary: 'delete expired records and old delivered events and audit rows',
  async run(args) {
    const { values } = parseFlags(args, {
      'database-url': { type: 'string' },
      'batch-size': { type: 'string' },
      'outbox-retention': { type: 'string' },
      'audit-retention': { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    });
    if (values.help) {
      console.log(HELP);
      return;
    }
    const result = await sweep(databaseUrl(values['database-url']), {
      ...(values['batch-size'] === undefined ? {} : { batchSize: Number(values['batch-size']) }),
      ...(values['outbox-retention'] === undefined ? {} : { outboxRetention: values['outbox-retention'] }),
      ...(values['audit-retention'] === undefined ? {} : { auditRetention: values['audit-retention'] }),
    });
    if (values.json) {
      console.log(JSON.stringify(result, null, 2));
      return;
    }
    console.log(
      `Swept ${result.idempotencyKeys} idempotency record(s), ${result.outboxEvents} outbox event(s), ` +
        `${result.dedupeAudit} audit row(s) in ${result.batches} batch(es), ${result.milliseconds} ms` +
        (result.truncated ? ' (stopped at maxBatches; the rest waits for the next sweep)' : '') +
        '.',
    );
  },
};
