/**
 * `migrate(target)`: brings a database's pg-once schema up to date in ONE transaction, under a
 * transaction-level advisory lock, recording version, name, checksum and time in
 * `once.migrations`; checks what pg-once owns before it commits; then installs graphile-worker's
 * schema for the relay. Safe to run twice (a no-op apart from the check) and concurrently (the
 * lock serialises runs; the losers find nothing pending).
 *
 * Works as the database's owner: no superuser is needed. A database without pg-once starts from
 * the newest baseline (sql/baseline/); one that applied numbered files continues with the next.
 */
import { Logger, runMigrations } from 'graphile-worker';
import { InstallationUnsafeError, MigrationError, MigrationFailedError, RolesConflictError } from '../errors.ts';
import { bindVariables } from '../internal/bind-variables.ts';
import {
  assertRecordedShipped,
  type MigrationFile,
  migrationFiles,
  type RecordedMigration,
  type ShippedMigrations,
  unappliedFiles,
} from './migrate/migration-files.ts';
import { defaultRolePrefix, installedRoleNames, isLegacyRoles, type RoleNames, roleNamesFor } from '../internal/role-names.ts';
import { type DatabaseTarget, type Session, withSession } from '../internal/session.ts';
import { grantWorkerSchema } from './migrate/grant-worker-schema.ts';
import { checkForeignRoleUse, checkInstallation, refuseForeignSchema } from './migrate/check-installation.ts';
import { poolFromSession } from './migrate/worker-pool.ts';
import { assertOperatorRole } from './operator-role.ts';
import { parseOptions } from '../options.ts';
import { type MigrateOptions, migrateOptionsSchema } from './migrate/migrate-options.ts';

/** Advisory lock key shared by every migrating process (an arbitrary constant: "once" in ASCII). */
const MIGRATION_LOCK_KEY = 0x6f6e6365;

export interface AppliedMigration {
  version: number;
  name: string;
}

export interface MigrateResult {
  /** Files applied by this run, in order; empty when the database was already up to date. */
  applied: AppliedMigration[];
  /** The newest version now recorded in the database. */
  version: number;
  /** The database's pg-once roles: grant `app` and `relay` to your login roles. */
  roles: RoleNames;
  /** Whether graphile-worker's schema was installed or checked by this run. */
  workerSchema: 'installed' | 'skipped';
}

export type { DatabaseTarget } from '../internal/session.ts';

export async function migrate(target: DatabaseTarget, options?: MigrateOptions): Promise<MigrateResult> {
  const resolved = parseOptions(migrateOptionsSchema, options, 'migrate options');
  const log = resolved.onLog ?? (() => {});
  const shipped = await migrationFiles();

  return withSession(target, async (session) => {
    await assertOperatorRole(session, 'migrate');
    const outcome = await applyPending(session, shipped, { rolePrefix: resolved.rolePrefix, useBaseline: true });
    // Reported only now: until COMMIT returned, nothing was applied.
    for (const file of outcome.applied) log(`applied ${file.name}`);
    for (const line of outcome.notes) log(line);
    if (resolved.installWorkerSchema) {
      // graphile-worker runs its own migrations under its own lock, in its own transactions,
      // so it cannot join ours; it is idempotent and concurrency-safe by itself.
      await runMigrations({ pgPool: poolFromSession(session), logger: silentLogger });
      await grantWorkerSchema(session, MIGRATION_LOCK_KEY, outcome.roles.relay);
      log('graphile-worker schema is up to date');
    }
    return {
      applied: outcome.applied,
      version: shipped.files.at(-1)?.version ?? 0,
      roles: outcome.roles,
      workerSchema: resolved.installWorkerSchema ? 'installed' : 'skipped',
    };
  });
}

export interface ApplyOptions {
  rolePrefix?: string | undefined;
  /** Start an empty database from the newest baseline (default) rather than from 0001. */
  useBaseline: boolean;
  /** Stop after this version (tests build databases as older releases left them). */
  toVersion?: number;
}

interface ApplyOutcome {
  applied: AppliedMigration[];
  roles: RoleNames;
  /** Things the operator must do, e.g. logins that held the cluster-wide roles. */
  notes: string[];
}

/** The migration transaction itself; exported for tests that need a database at an old version. */
export async function applyPending(session: Session, shipped: ShippedMigrations, options: ApplyOptions): Promise<ApplyOutcome> {
  await session.query('BEGIN');
  try {
    await session.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK_KEY]);
    const recorded = await readRecorded(session);
    if (recorded.length === 0) await refuseForeignSchema(session);
    await session.query(`
      CREATE SCHEMA IF NOT EXISTS once;
      CREATE TABLE IF NOT EXISTS once.migrations (
        version    integer     PRIMARY KEY,
        name       text        NOT NULL,
        checksum   text        NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
      );
      REVOKE ALL ON once.migrations FROM PUBLIC`);

    const plan = planMigrations(shipped, recorded, options);
    const roles = await chooseRoles(session, options.rolePrefix, plan.createsRoles);
    const variables = { app_role: roles.app, relay_role: roles.relay, maintenance_role: roles.maintenance };

    const applied: AppliedMigration[] = [];
    for (const file of plan.pending) {
      try {
        await session.query(bindVariables(file.sql, variables));
      } catch (error) {
        const hint = (error as { hint?: string }).hint;
        throw new MigrationFailedError(
          `pg-once: migration ${file.name} failed, nothing was applied: ${(error as Error).message}${hint ? `\nHint: ${hint}` : ''}`,
          { cause: error },
        );
      }
      await session.query('INSERT INTO once.migrations (version, name, checksum) VALUES ($1, $2, $3)', [file.version, file.name, file.checksum]);
      applied.push({ version: file.version, name: file.name });
    }

    const notes: string[] = [];
    const installed = (await installedRoleNames(session)) ?? roles;
    if (!isLegacyRoles(installed)) {
      const problems = await checkInstallation(session, installed);
      if (problems.length > 0) throw new InstallationUnsafeError(problems);
      if (applied.some((file) => file.name === '0005_per_database_roles')) notes.push(...(await legacyMembers(session, installed)));
    }
    await session.query('COMMIT');
    return { applied, roles: installed, notes };
  } catch (error) {
    await session.query('ROLLBACK').catch(() => {});
    if (error instanceof MigrationError) throw error;
    throw new MigrationFailedError(`pg-once: migrate failed, nothing was applied: ${(error as Error).message}`, { cause: error });
  }
}

async function readRecorded(session: Session): Promise<RecordedMigration[]> {
  const { rows } = await session.query<{ present: boolean }>(`SELECT to_regclass('once.migrations') IS NOT NULL AS present`);
  if (!rows[0]?.present) return [];
  return (await session.query<RecordedMigration>('SELECT version, name, checksum FROM once.migrations ORDER BY version')).rows;
}

/**
 * Which files to run. A recorded baseline stands for every version up to its own; an empty
 * database starts from the newest baseline not past `toVersion`.
 */
function planMigrations(
  shipped: ShippedMigrations,
  recorded: readonly RecordedMigration[],
  options: ApplyOptions,
): { pending: MigrationFile[]; createsRoles: boolean } {
  assertRecordedShipped(shipped, recorded);
  const last = options.toVersion ?? Number.POSITIVE_INFINITY;
  const baseline = recorded.length === 0 && options.useBaseline ? shipped.baselines.filter((file) => file.version <= last).at(-1) : undefined;
  const pending: MigrationFile[] = baseline ? [baseline] : [];
  pending.push(...unappliedFiles(shipped, recorded, { coveredTo: baseline?.version ?? 0, last }));
  // The baseline and 0005 create this database's roles; the files of 0.1 use the legacy ones.
  const createsRoles = pending.some((file) => file.name.startsWith('baseline/') || file.version === 5);
  return { pending, createsRoles };
}

/**
 * The roles this run binds into the files: those already installed, else the prefix given, else
 * one derived from the database's name. New roles must not already serve another database.
 */
async function chooseRoles(session: Session, rolePrefix: string | undefined, createsRoles: boolean): Promise<RoleNames> {
  const installed = await installedRoleNames(session);
  if (installed && !isLegacyRoles(installed)) {
    if (rolePrefix !== undefined && roleNamesFor(rolePrefix).app !== installed.app) {
      throw new RolesConflictError(
        `pg-once: this database's roles are ${installed.app}, ${installed.relay} and ${installed.maintenance}; ` +
          `rolePrefix "${rolePrefix}" would name others. Drop the option (roles are chosen once, at install).`,
      );
    }
    return installed;
  }
  const { rows } = await session.query<{ name: string }>('SELECT current_database() AS name');
  const roles = roleNamesFor(rolePrefix ?? defaultRolePrefix(rows[0]!.name));
  if (createsRoles) await checkForeignRoleUse(session, roles);
  return roles;
}

/** Logins that held the cluster-wide roles of 0.1: after 0005 they need this database's roles. */
async function legacyMembers(session: Session, roles: RoleNames): Promise<string[]> {
  const { rows } = await session.query<{ member: string; old: string }>(
    `SELECT m.rolname AS member, g.rolname AS old
       FROM pg_catalog.pg_auth_members am
       JOIN pg_catalog.pg_roles g ON g.oid = am.roleid
       JOIN pg_catalog.pg_roles m ON m.oid = am.member
      WHERE g.rolname IN ('once_app', 'once_relay') AND m.rolname <> current_user
      ORDER BY 1, 2`,
  );
  return rows.map(
    (row) =>
      `role ${row.member} holds the cluster-wide ${row.old}, which no longer opens this database; if it should: ` +
      `GRANT ${row.old === 'once_app' ? roles.app : roles.relay} TO ${row.member};`,
  );
}

const silentLogger = new Logger(() => () => {});
