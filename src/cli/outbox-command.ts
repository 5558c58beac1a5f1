import { InvalidOptionsError } from '../errors.ts';
import { listDeadEvents, requeueDeadEvents } from '../ops/dead-events.ts';
import type { Command } from './command.ts';
import { databaseUrl } from './database-url.ts';
import { parseFlags } from './parse-flags.ts';

const HELP = `Usage: pg-once outbox dead [--limit <n>] [--json] [--database-url <url>]
       pg-once outbox requeue <id>... | --all [--database-url <url>]

dead     lists events the relay gave up on (oldest first), with attempts and last error.
requeue  puts dead events back to pending with a fresh attempt budget and wakes the relays.
Run as a login granted this database's relay role (\`pg-once roles\`; it sees every tenant's events).`;

export const outboxCommand: Command = {
  summary: 'list and requeue dead outbox events',
  async run(args) {
    const { values, positionals } = parseFlags(args, {
      'database-url': { type: 'string' },
      limit: { type: 'string' },
      json: { type: 'boolean' },
      all: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    });
    const [action, ...ids] = positionals;
    if (values.help || action === undefined) {
      console.log(HELP);
      if (action === undefined && !values.help)
        throw new InvalidOptionsError('command line', [{ path: [], message: 'expected "dead" or "requeue"', code: 'invalid_flag' }]);
      return;
    }
    const url = databaseUrl(values['database-url']);
    if (action === 'dead') {
      const events = await listDeadEvents(url, { limit: values.limit === undefined ? 100 : Number(values.limit) });
      if (values.json) {
        console.log(JSON.stringify(events, null, 2));
        return;
      }
      if (events.length === 0) {
        console.log('No dead events.');
        return;
      }
      console.table(
        events.map((event) => ({
          id: event.id,
          tenant: event.tenantId,
          topic: event.topic,
          attempts: event.attempts,
          'last error': (event.lastError ?? '').slice(0, 80),
          created: event.createdAt.toISOString(),
        })),
      );
      return;
    }
    if (action === 'requeue') {
      if (values.all === ids.length > 0) {
        throw new InvalidOptionsError('command line', [{ path: [], message: 'give event ids or --all (not both)', code: 'invalid_flag' }]);
      }
      const count = await requeueDeadEvents(url, values.all ? 'all' : ids);
      console.log(`Requeued ${count} event(s).`);
      return;
    }
    throw new InvalidOptionsError('command line', [{ path: [], message: `unknown outbox action "${action}"`, code: 'invalid_flag' }]);
  },
};
