/**
 * The migrations this package ships: `sql/NNNN_slug.sql`, read from the package itself (both
 * `src/` and `dist/` sit one level below `sql/`), ordered by version, each with the sha256 of its
 * exact bytes. The checksum is what lets `migrate` refuse a file that was edited after it ran.
 *
 * `sql/baseline/NNNN_slug.sql` installs, in one file, the state that versions 1..NNNN reach: a
 * database with no pg-once at all starts from the newest baseline instead of replaying files
 * whose mistakes later files undo (0001-0004 created cluster-wide roles; see 0005).
 */
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { MigrationChecksumError, MigrationDatabaseAheadError } from '../../errors.ts';

export interface MigrationFile {
  version: number;
  /** The file name without `.sql`, e.g. `0001_schema_rls_roles` or `baseline/0005_baseline`. */
  name: string;
  sql: string;
  /** Hex sha256 of the file's bytes. */
  checksum: string;
}

const FILE_NAME = /^(\d{4})_([a-z0-9_]+)\.sql$/;
export const SQL_DIRECTORY = new URL('../../../sql/', import.meta.url);

export interface ShippedMigrations {
  /** The numbered files, in version order. */
  files: readonly MigrationFile[];
  /** Baselines in version order; a baseline's `name` is `baseline/NNNN_slug`. */
  baselines: readonly MigrationFile[];
}

let cached: Promise<ShippedMigrations> | undefined;

/** The shipped files, read once per process (they cannot change under a running package). */
export function migrationFiles(): Promise<ShippedMigrations> {
  cached ??= (async () => ({
    files: await readMigrationFiles(SQL_DIRECTORY, ''),
    baselines: await readMigrationFiles(new URL('baseline/', SQL_DIRECTORY), 'baseline/'),
  }))();
  return cached;
}

async function readMigrationFiles(directory: URL, namePrefix: string): Promise<readonly MigrationFile[]> {
  const names = (await readdir(directory)).filter((name) => name.endsWith('.sql')).sort();
  const files: MigrationFile[] = [];
  for (const fileName of names) {
    const match = FILE_NAME.exec(fileName);
    if (!match) throw new Error(`pg-once: unexpected file in sql/: ${fileName} (expected NNNN_slug.sql)`);
    const bytes = await readFile(new URL(fileName, directory));
    const version = Number(match[1]);
    if (files.some((file) => file.version === version)) {
      throw new Error(`pg-once: two files in sql/ share version ${version}`);
    }
    files.push({
      version,
      name: namePrefix + fileName.slice(0, -'.sql'.length),
      sql: bytes.toString('utf8'),
      checksum: createHash('sha256').update(bytes).digest('hex'),
    });
  }
  return files;
}

/** A row of `once.migrations`. */
export interface RecordedMigration {
  version: number;
  name: string;
  checksum: string;
}

/**
 * The numbered files a database with these rows has not run. A recorded baseline stands for
 * every version up to its own (its row is the only one those versions get); `coveredTo` does
 * the same for a baseline about to be applied, `last` stops at a version.
 */
export function unappliedFiles(
  shipped: ShippedMigrations,
  recorded: readonly Pick<RecordedMigration, 'version' | 'name'>[],
  options: { coveredTo?: number; last?: number } = {},
): MigrationFile[] {
  const baselines = recorded.filter((row) => row.name.startsWith('baseline/')).map((row) => row.version);
  const covered = Math.max(options.coveredTo ?? 0, ...baselines);
  const last = options.last ?? Number.POSITIVE_INFINITY;
  const done = new Set(recorded.map((row) => row.version));
  return shipped.files.filter((file) => file.version > covered && file.version <= last && !done.has(file.version));
}

/**
 * Every recorded row must be a file this package ships, byte for byte: a version it does not know
 * means a newer pg-once migrated the database; a different checksum, a file edited after it ran.
 */
export function assertRecordedShipped(shipped: ShippedMigrations, recorded: readonly RecordedMigration[]): void {
  const byName = new Map([...shipped.files, ...shipped.baselines].map((file) => [file.name, file]));
  const known = new Set(shipped.files.map((file) => file.version));
  const unknown = recorded.filter((row) => !known.has(row.version)).map((row) => row.version);
  if (unknown.length > 0) throw new MigrationDatabaseAheadError(unknown);
  for (const row of recorded) {
    const file = byName.get(row.name);
    if (!file || file.checksum !== row.checksum) {
      throw new MigrationChecksumError(row.version, row.name, row.checksum, file?.checksum ?? '(no such file)');
    }
  }
}
