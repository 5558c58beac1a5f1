/**
 * Every error pg-once throws on purpose is an {@link OnceError}: a stable `code` to branch on
 * (never match on `message`), whether retrying the same call may succeed, and the HTTP status a
 * server fronting the tool would answer. The underlying error, if any, is the ES2022 `cause`.
 */

/** Stable error codes. Part of the public contract: never renamed, only added to. */
export type OnceErrorCode =
  | 'INVALID_OPTIONS'
  | 'INVALID_TENANT'
  | 'TENANT_MISSING'
  | 'RLS_BYPASS'
  | 'MIGRATION_CHECKSUM_MISMATCH'
  | 'MIGRATION_DATABASE_AHEAD'
  | 'MIGRATION_FAILED';

/** One problem found while validating options or input; a flattened zod issue. */
export interface OnceIssue {
  /** Where in the input, e.g. `['ttl']`. */
  path: readonly PropertyKey[];
  message: string;
  /** zod's issue code, e.g. `invalid_type`. */
  code: string;
}

export interface OnceErrorOptions {
  cause?: unknown;
}

export abstract class OnceError extends Error {
  abstract readonly code: OnceErrorCode;
  /** True when the very same call may succeed if retried later. */
  abstract readonly retryable: boolean;
  /** What an HTTP server fronting the tool should answer. */
  abstract readonly httpStatus: number;

  constructor(message: string, options?: OnceErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
  }
}

/** Options or input failed validation. `issues` lists every problem, not only the first. */
export class InvalidOptionsError extends OnceError {
  readonly code = 'INVALID_OPTIONS';
  readonly retryable = false;
  readonly httpStatus = 400;
  readonly issues: readonly OnceIssue[];

  constructor(what: string, issues: readonly OnceIssue[], options?: OnceErrorOptions) {
    const summary = issues
      .map((issue) => (issue.path.length > 0 ? `${issue.path.map(String).join('.')}: ` : '') + issue.message)
      .join('; ');
    super(`Invalid ${what}: ${summary}`, options);
    this.issues = issues;
  }
}

/** A tenant id that is empty, too long or contains control characters. */
export class InvalidTenantError extends OnceError {
  readonly code = 'INVALID_TENANT';
  readonly retryable = false;
  readonly httpStatus = 400;
}

/**
 * A query touched pg-once's tables in a transaction with no tenant set (SQLSTATE ONC01, raised by
 * `once.current_tenant()`). A programming error: wrap the work in `withTenant`.
 */
export class TenantMissingError extends OnceError {
  readonly code = 'TENANT_MISSING';
  readonly retryable = false;
  readonly httpStatus = 500;
}

/**
 * The connection's role is a superuser or has BYPASSRLS, so row-level security would not isolate
 * tenants. Refused unless the caller opts in explicitly.
 */
export class RlsBypassError extends OnceError {
  readonly code = 'RLS_BYPASS';
  readonly retryable = false;
  readonly httpStatus = 500;
  readonly role: string;

  constructor(role: string, options?: OnceErrorOptions) {
    super(
      `pg-once: role "${role}" bypasses row-level security (superuser or BYPASSRLS), so tenants ` +
        'would not be isolated. Connect as a login role granted once_app, or pass allowRlsBypass: true.',
      options,
    );
    this.role = role;
  }
}

/** Base of the migration failures; `code` tells which. */
export abstract class MigrationError extends OnceError {
  readonly retryable = false;
  readonly httpStatus = 500;
}

/** An applied migration file was edited afterwards: its checksum no longer matches the record. */
export class MigrationChecksumError extends MigrationError {
  readonly code = 'MIGRATION_CHECKSUM_MISMATCH';
  readonly version: number;

  constructor(version: number, name: string, recorded: string, actual: string) {
    super(
      `pg-once: migration ${name} (version ${version}) was applied with checksum ${recorded}, but the ` +
        `file now has ${actual}. Applied migrations are append-only: restore the file and add a new one.`,
    );
    this.version = version;
  }
}

/** The database has migrations this package does not know: it was migrated by a newer pg-once. */
export class MigrationDatabaseAheadError extends MigrationError {
  readonly code = 'MIGRATION_DATABASE_AHEAD';
  readonly versions: readonly number[];

  constructor(versions: readonly number[]) {
    super(
      `pg-once: the database has migration version(s) ${versions.join(', ')} that this package does not ` +
        'ship; it was migrated by a newer pg-once. Upgrade the package instead of running an older one.',
    );
    this.versions = versions;
  }
}

/** A migration's SQL failed; nothing of the run was committed. */
export class MigrationFailedError extends MigrationError {
  readonly code = 'MIGRATION_FAILED';
}

/** SQLSTATEs raised by pg-once's own SQL (see sql/). One place maps them to classes. */
export const SQLSTATE_TENANT_MISSING = 'ONC01';

/**
 * Translates a driver error raised by pg-once's SQL into its typed error; anything else is returned
 * unchanged. Matching is on SQLSTATE, never on message text.
 */
export function translateDatabaseError(error: unknown): unknown {
  const sqlstate = (error as { code?: unknown } | null)?.code;
  if (sqlstate === SQLSTATE_TENANT_MISSING) {
    return new TenantMissingError(
      'pg-once: no tenant is set for this transaction; run the work inside withTenant(db, tenantId, fn).',
      { cause: error },
    );
  }
  return error;
}
