import type { Command } from './command.ts';
import { migrate } from '../migrate.ts';
import { databaseUrl } from './database-url.ts';
import { parseFlags } from './parse-flags.ts';

const HELP = `Usage: pg-once migrate [--database-url <url>] [--no-worker-schema]

Applies pg-once's pending SQL migrations (schema "once") and installs graphile-worker's schema.
Safe to run twice and concurrently. Reads DATABASE_URL when --database-url is not given.`;

export const migrateCommand: Command = {
  summary: 'apply pending migrations (and graphile-worker\'s schema)',
  async run(args) {
    const { values } = parseFlags(args, {
      'database-url': { type: 'string' },
      'no-worker-schema': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    });
    if (values.help) {
      console.log(HELP);
      return;
    }
    const result = await migrate(databaseUrl(values['database-url']), {
      installWorkerSchema: !values['no-worker-schema'],
      onLog: (message) => console.log(message),
    });
    console.log(
      result.applied.length === 0
        ? `pg-once: database is up to date (version ${result.version})`
        : `pg-once: applied ${result.applied.length} migration(s); now at version ${result.version}`,
    );
  },
};
