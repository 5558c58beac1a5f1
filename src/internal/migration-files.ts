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

export interface MigrationFile {
  version: number;
  /** The file name without `.sql`, e.g. `0001_schema_rls_roles` or `baseline/0005_baseline`. */
  name: string;
  sql: string;
  /** Hex sha256 of the file's bytes. */
  checksum: string;
}

const FILE_NAME = /^(\d{4})_([a-z0-9_]+)\.sql$/;
export const SQL_DIRECTORY = new URL('../../sql/', import.meta.url);

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
