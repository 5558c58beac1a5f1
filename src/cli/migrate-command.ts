import type { Command } from './command.ts';
import { migrate } from '../ops/migrate.ts';
import { databaseUrl } from './database-url.ts';
import { parseFlags } from './parse-flags.ts';

const HELP = `Usage: pg-once migrate [--database-url <url>] [--role-prefix <prefix>] [--no-worker-schema]

Applies pg-once's pending SQL migrations (schema "once") and installs graphile-worker's schema,
in one transaction: on failure nothing is applied. Safe to run twice and concurrently. Checks on
every run that what pg-once owns is as it installed it (row-level security, policies, no grants
to PUBLIC) and refuses, changing nothing, when it is not.

Run it as the database's owner; a superuser is not needed. The database gets roles of its own,
<prefix>_app, _relay and _maintenance (default prefix once_<database>; --role-prefix picks
another, at install only). An owner without CREATEROLE needs them created first: see
\`pg-once roles --sql\`.

Reads DATABASE_URL when --database-url is not given.`;

export const migrateCommand: Command = {
  summary: "apply pending migrations (and graphile-worker's schema)",
  async run(args) {
    const { values } = parseFlags(args, {
      'database-url': { type: 'string' },
      'no-worker-schema': { type: 'boolean' },
      'role-prefix': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    });
    if (values.help) {
      console.log(HELP);
      return;
    }
    const result = await migrate(databaseUrl(values['database-url']), {
      installWorkerSchema: !values['no-worker-schema'],
      rolePrefix: values['role-prefix'],
      onLog: (message) => console.log(message),
    });
    console.log(
      result.applied.length === 0
        ? `pg-once: database is up to date (version ${result.version})`
        : `pg-once: applied ${result.applied.length} migration(s); now at version ${result.version}`,
    );
    console.log(
      `pg-once: roles: ${result.roles.app} (grant to the application's login), ${result.roles.relay} ` +
        `(grant to the relay's login), ${result.roles.maintenance} (grant to nobody)`,
    );
  },
};
