// The public API of pg-once, listed by name: nothing is exported by accident.
export { migrate } from './migrate.ts';
export type { AppliedMigration, DatabaseTarget, MigrateResult } from './migrate.ts';
export type { MigrateOptions } from './options.ts';
export {
  InvalidOptionsError,
  InvalidTenantError,
  MigrationChecksumError,
  MigrationDatabaseAheadError,
  MigrationError,
  MigrationFailedError,
  OnceError,
  RlsBypassError,
  SQLSTATE_TENANT_MISSING,
  TenantMissingError,
  translateDatabaseError,
} from './errors.ts';
export type { OnceErrorCode, OnceErrorOptions, OnceIssue } from './errors.ts';
