// `pg-once/testing`: test your own handlers against duplicates. Framework-neutral (no test runner
// is imported): it throws DuplicateStormError, which vitest, node:test and jest all report.
export { duplicateStorm } from './testing/duplicate-storm.ts';
export type { StormCopy, StormCopyKind, StormHandler } from './testing/duplicate-storm.ts';
export type { DuplicateStormOptions, StormTerminate } from './testing/duplicate-storm-options.ts';
export { DuplicateStormError } from './testing/duplicate-storm-error.ts';
export type { DuplicateStormReport } from './testing/duplicate-storm-error.ts';
export { CopyKilledError } from './testing/kill-copy.ts';
