import { doctor, type DoctorReport, type DoctorSeverity } from '../ops/doctor.ts';
import type { Command } from './command.ts';
import { databaseUrl } from './database-url.ts';
import { parseFlags } from './parse-flags.ts';

const HELP = `Usage: pg-once doctor [--database-url <url>] [--sweep-schedule <cron>] [--json]

Checks pg-once in the database at DATABASE_URL (or --database-url), as that login, and prints
one line per finding with a one-line fix:
  the login: superuser or BYPASSRLS (row-level security would not apply), the pg-once roles it
  holds (app, relay, none), cluster-wide roles left from pg-once 0.1; pg-once installed, pending
  migrations; row-level security, policies, PUBLIC grants and owners of every pg-once object;
  PUBLIC CONNECT on the database; pg-once roles also serving another database; the clock offset
  between this host and the database; the last sweep (per --sweep-schedule, default */5 * * * *)
  and the relays delivering now.

  ✓ ok   ! warning   ✗ failure   ? could not check as this login (the fix says who can)

Run it with the application's and the relay's connection strings: the login checks are about
the login given. Changes nothing. --json prints the report for machines.
Exit status: 1 when any finding is a failure, 0 otherwise (warnings included).`;

const MARKS: Record<DoctorSeverity, string> = { ok: '✓', warn: '!', fail: '✗', unknown: '?' };

export const doctorCommand: Command = {
  summary: 'check roles, policies, migrations, clock and relays; a fix for each finding',
  async run(args) {
    const { values } = parseFlags(args, {
      'database-url': { type: 'string' },
      'sweep-schedule': { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    });
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    const report = await doctor(databaseUrl(values['database-url']), {
      ...(values['sweep-schedule'] === undefined ? {} : { sweepSchedule: values['sweep-schedule'] }),
    });
    console.log(values.json ? JSON.stringify(report, null, 2) : formatReport(report));
    return report.healthy ? 0 : 1;
  },
};

function formatReport(report: DoctorReport): string {
  const count = (severity: DoctorSeverity) => report.findings.filter((f) => f.severity === severity).length;
  return [
    `pg-once doctor: database ${report.database} as ${report.login}`,
    ...report.findings.map((f) => `${MARKS[f.severity]} ${f.message}${f.fix === undefined ? '' : ` — fix: ${f.fix}`}`),
    `${count('fail')} failure(s), ${count('warn')} warning(s), ${count('unknown')} not checked`,
  ].join('\n');
}
