/**
 * What `doctor` reports: findings, each one line a person can act on. Kept apart from the checks
 * so each check's module is a pure function of the facts it was given, testable without a server.
 */

/**
 * `ok`: checked and fine. `warn`: works, but an operator should look. `fail`: pg-once is not safe
 * or not working as configured; `pg-once doctor` exits non-zero. `unknown`: this login could not
 * check it (the message says why, the fix who can).
 */
export type DoctorSeverity = 'ok' | 'warn' | 'fail' | 'unknown';

/** Which check a finding comes from: stable, for scripts that filter the report. */
export type DoctorCheck =
  | 'login'
  | 'roles'
  | 'legacy-roles'
  | 'installed'
  | 'migrations'
  | 'installation'
  | 'connect'
  | 'shared-roles'
  | 'clock'
  | 'sweep'
  | 'relays';

export interface DoctorFinding {
  check: DoctorCheck;
  severity: DoctorSeverity;
  /** One sentence: what was found, and why it matters when it is not `ok`. */
  message: string;
  /** One line of SQL or a command that fixes it; absent when there is nothing to do. */
  fix?: string;
}

export const finding = (check: DoctorCheck, severity: DoctorSeverity, message: string, fix?: string): DoctorFinding =>
  fix === undefined ? { check, severity, message } : { check, severity, message, fix };
