import type { Command } from './command.ts';
import { InvalidOptionsError } from '../errors.ts';
import { defaultRolePrefix, installedRoleNames, roleNamesFor } from '../internal/role-names.ts';
import { withSession } from '../internal/session.ts';
import { rolesSql } from '../roles.ts';
import { databaseUrl } from './database-url.ts';
import { parseFlags } from './parse-flags.ts';

const HELP = `Usage: pg-once roles [--database-url <url>]
       pg-once roles --sql [--database <name>] [--owner <role>] [--role-prefix <prefix>]
                     [--app-login <role>]... [--relay-login <role>]...

Each database gets three NOLOGIN roles of its own (roles are cluster-wide, so sharing them would
let a login of one database into another): <prefix>_app for the application, <prefix>_relay for
the relay and operator commands, <prefix>_maintenance (nothing logs in as it). The prefix is
once_<database> unless migrate was given --role-prefix.

Without --sql: prints the roles of the database at DATABASE_URL (or --database-url), or the names
migrate would create there.

With --sql: prints the SQL an administrator runs BEFORE migrate when the database owner may not
create roles (no CREATEROLE). --database and --owner default to the database and user of
DATABASE_URL / --database-url; nothing connects.`;

export const rolesCommand: Command = {
  summary: "print this database's roles, or the SQL that creates them (--sql)",
  async run(args) {
    const { values } = parseFlags(args, {
      'database-url': { type: 'string' },
      sql: { type: 'boolean' },
      database: { type: 'string' },
      owner: { type: 'string' },
      'role-prefix': { type: 'string' },
      'app-login': { type: 'string', multiple: true },
      'relay-login': { type: 'string', multiple: true },
      help: { type: 'boolean', short: 'h' },
    });
    if (values.help) {
      console.log(HELP);
      return;
    }
    if (values.sql) {
      const url = values.database && values.owner ? undefined : new URL(databaseUrl(values['database-url']));
      const database = values.database ?? decodeURIComponent(url?.pathname.slice(1) ?? '');
      const owner = values.owner ?? decodeURIComponent(url?.username ?? '');
      if (!database || !owner) {
        throw new InvalidOptionsError('command line', [
          { path: ['database'], message: 'give --database and --owner (or a database URL naming both)', code: 'missing' },
        ]);
      }
      process.stdout.write(
        rolesSql({
          database,
          owner,
          rolePrefix: values['role-prefix'],
          appLogins: values['app-login'] ?? [],
          relayLogins: values['relay-login'] ?? [],
        }),
      );
      return;
    }
    await withSession(databaseUrl(values['database-url']), async (session) => {
      const installed = await installedRoleNames(session);
      const { rows } = await session.query<{ name: string }>('SELECT current_database() AS name');
      const roles = installed ?? roleNamesFor(values['role-prefix'] ?? defaultRolePrefix(rows[0]!.name));
      console.log(installed ? `pg-once roles of database ${rows[0]!.name}:` : `pg-once is not installed in ${rows[0]!.name}; migrate would create:`);
      console.log(`  app          ${roles.app}   (GRANT it to the application's login)`);
      console.log(`  relay        ${roles.relay}   (GRANT it to the relay's and operators' login)`);
      console.log(`  maintenance  ${roles.maintenance}   (NOLOGIN; grant it to nobody)`);
    });
  },
};
