/**
 * doctor(): what is wrong with pg-once in this database, as seen by this login, with a one-line
 * fix for each finding. Reads catalogs and pg-once's own records only; changes nothing. Any login
 * may run it: what a login may not see (once.migrations is its owner's, the outbox of every
 * tenant the relay's) is reported as `unknown`, never guessed.
 *
 * Run it with the application's and the relay's connection strings: the login checks (superuser,
 * BYPASSRLS, roles held) are about the login given.
 */
import { clockFinding, measureClock } from './doctor/clock-finding.ts';
import { databaseFacts } from './doctor/database-facts.ts';
import { type DoctorCheck, type DoctorFinding, finding } from './doctor/finding.ts';
import { connectFinding, installationFindings, installedFinding, migrationFindings, sharedRolesFinding } from './doctor/installation-findings.ts';
import { loginFindings } from './doctor/login-findings.ts';
import { relaysFinding, sweepFinding } from './doctor/relay-findings.ts';
import type { RoleNames } from '../internal/role-names.ts';
import { type DatabaseTarget, withSession } from '../internal/session.ts';
import { parseOptions } from '../options.ts';
import { assertOperatorRole } from './operator-role.ts';
import { statusOptionsSchema } from './status.ts';

export type { DoctorCheck, DoctorFinding, DoctorSeverity } from './doctor/finding.ts';

export interface DoctorOptions {
  /** The relays' sweep schedule, to tell whether a sweep is overdue. (Default: '*\/5 * * * *') */
  sweepSchedule?: string;
}

export const doctorOptionsSchema = statusOptionsSchema.pick({ sweepSchedule: true });

export interface DoctorReport {
  /** When the checks ran (this host's clock). */
  checkedAt: Date;
  database: string;
  /** The login the checks ran as: role checks are about this login. */
  login: string;
  /** The database's pg-once roles; null when pg-once is not installed. */
  roles: RoleNames | null;
  /** False when any finding is `fail`. */
  healthy: boolean;
  findings: DoctorFinding[];
}

export async function doctor(target: DatabaseTarget, options?: DoctorOptions): Promise<DoctorReport> {
  const opts = parseOptions(doctorOptionsSchema, options, 'doctor options');
  return withSession(target, async (session) => {
    await assertOperatorRole(session, 'doctor');
    const facts = await databaseFacts(session);
    const findings: DoctorFinding[] = [...loginFindings(facts), installedFinding(facts)];
    // One check that errors (a privilege this login lacks that the catalog lookups did not
    // foresee) becomes an `unknown` finding rather than hiding every other finding.
    const attempt = async (check: DoctorCheck, run: () => Promise<DoctorFinding | DoctorFinding[]>) => {
      try {
        findings.push(...[await run()].flat());
      } catch (error) {
        findings.push(finding(check, 'unknown', `not checked: ${(error as Error).message}`, 'run pg-once doctor as the owner of schema once'));
      }
    };
    const roles = facts.roles;
    if (roles) {
      await attempt('migrations', () => migrationFindings(session, facts));
      await attempt('installation', () => installationFindings(session, roles));
      await attempt('shared-roles', () => sharedRolesFinding(session, roles));
    }
    await attempt('connect', () => connectFinding(session, facts));
    await attempt('clock', async () => clockFinding(await measureClock(session)));
    if (roles) {
      await attempt('sweep', () => sweepFinding(session, roles, opts.sweepSchedule));
      await attempt('relays', () => relaysFinding(session, facts, roles));
    }
    return {
      checkedAt: new Date(),
      database: facts.database,
      login: facts.login,
      roles: roles ?? null,
      healthy: !findings.some((f) => f.severity === 'fail'),
      findings,
    };
  });
}
