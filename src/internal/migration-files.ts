/**
 * The migrations this package ships: `sql/NNNN_slug.sql`, read from the package itself (both
 * `src/` and `dist/` sit one level below `sql/`), ordered by version, each with the sha256 of its
 * exact bytes. The checksum is what lets `migrate` refuse a file that was edited after it ran.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';

export interface MigrationFile {
  version: number;
  /** The file name without `.sql`, e.g. `0001_schema_rls_roles`. */
  name: string;
  sql: string;
  /** Hex sha256 of the file's bytes. */
  checksum: string;
}

const FILE_NAME = /^(\d{4})_([a-z0-9_]+)\.sql$/;
export const SQL_DIRECTORY = new URL('../../sql/', import.meta.url);

let cached: Promise<readonly MigrationFile[]> | undefined;

/** The shipped files, read once per process (they cannot change under a running package). */
export function migrationFiles(): Promise<readonly MigrationFile[]> {
  cached ??= readMigrationFiles(SQL_DIRECTORY);
  return cached;
}

async function readMigrationFiles(directory: URL): Promise<readonly MigrationFile[]> {
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
      name: fileName.slice(0, -'.sql'.length),
      sql: bytes.toString('utf8'),
      checksum: createHash('sha256').update(bytes).digest('hex'),
    });
  }
  return files;
}
