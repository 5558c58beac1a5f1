/**
 * `migrate(target)`: applies the pending files of `sql/` in order, in ONE transaction, under a
 * transaction-level advisory lock, recording version, name, checksum and time in `once.migrations`;
 * then installs graphile-worker's schema for the relay. Safe to run twice (a no-op) and
 * concurrently (the lock serialises runs; the losers find nothing pending).
 */
import { Logger, runMigrations } from 'graphile-worker';
import {
  MigrationChecksumError,
  MigrationDatabaseAheadError,
  MigrationError,
  MigrationFailedError,
} from './errors.ts';
import { migrationFiles } from './internal/migration-files.ts';
import { type DatabaseTarget, type Session, withSession } from './internal/session.ts';
import { grantWorkerSchema } from './internal/grant-worker-schema.ts';
import { poolFromSession } from './internal/worker-pool.ts';
import { type MigrateOptions, migrateOptionsSchema, parseOptions } from './options.ts';

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
  /** Whether graphile-worker's schema was installed or checked by this run. */
  workerSchema: 'installed' | 'skipped';
}

export type { DatabaseTarget } from './internal/session.ts';

export async function migrate(target: DatabaseTarget, options?: MigrateOptions): Promise<MigrateResult> {
  const resolved = parseOptions(migrateOptionsSchema, options, 'migrate options');
  const log = resolved.onLog ?? (() => {});
  const files = await migrationFiles();

  return withSession(target, async (session) => {
    const applied = await applyPending(session, files, log);
    if (resolved.installWorkerSchema) {
      // graphile-worker runs its own migrations under its own lock, in its own transactions,
      // so it cannot join ours; it is idempotent and concurrency-safe by itself.
      await runMigrations({ pgPool: poolFromSession(session), logger: silentLogger });
      await grantWorkerSchema(session, MIGRATION_LOCK_KEY);
      log('graphile-worker schema is up to date');
    }
    return {
      applied,
      version: files.at(-1)?.version ?? 0,
      workerSchema: resolved.installWorkerSchema ? 'installed' : 'skipped',
    };
  });
}

async function applyPending(
  session: Session,
  files: Awaited<ReturnType<typeof migrationFiles>>,
  log: (message: string) => void,
): Promise<AppliedMigration[]> {
  await session.query('BEGIN');
  try {
    await session.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK_KEY]);
    // Bookkeeping lives beside the tables it describes. Created under the lock, so concurrent
    // first runs do not race on it.
    await session.query(`
      CREATE SCHEMA IF NOT EXISTS once;
      CREATE TABLE IF NOT EXISTS once.migrations (
        version    integer     PRIMARY KEY,
        name       text        NOT NULL,
        checksum   text        NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
      )`);
    const { rows: recorded } = await session.query<{ version: number; name: string; checksum: string }>(
      'SELECT version, name, checksum FROM once.migrations ORDER BY version',
    );

    const known = new Map(files.map((file) => [file.version, file]));
    const unknown = recorded.filter((row) => !known.has(row.version)).map((row) => row.version);
    if (unknown.length > 0) throw new MigrationDatabaseAheadError(unknown);
    for (const row of recorded) {
      const file = known.get(row.version)!;
      if (file.checksum !== row.checksum) {
        throw new MigrationChecksumError(row.version, row.name, row.checksum, file.checksum);
      }
    }

    const done = new Set(recorded.map((row) => row.version));
    const applied: AppliedMigration[] = [];
    for (const file of files) {
      if (done.has(file.version)) continue;
      try {
        await session.query(file.sql);
      } catch (error) {
        throw new MigrationFailedError(
          `pg-once: migration ${file.name} failed: ${(error as Error).message}`,
          { cause: error },
        );
      }
      await session.query('INSERT INTO once.migrations (version, name, checksum) VALUES ($1, $2, $3)', [
        file.version,
        file.name,
        file.checksum,
      ]);
      applied.push({ version: file.version, name: file.name });
      log(`applied ${file.name}`);
    }
    await session.query('COMMIT');
    return applied;
  } catch (error) {
    await session.query('ROLLBACK').catch(() => {});
    if (error instanceof MigrationError) throw error;
    throw new MigrationFailedError(`pg-once: migrate failed: ${(error as Error).message}`, { cause: error });
  }
}

const silentLogger = new Logger(() => () => {});
