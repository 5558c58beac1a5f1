import type { Transaction } from 'kysely';

/** Kysely marks transactions with `isTransaction`; a plain Kysely instance would autocommit each write. */
export function isTransaction(value: unknown): value is Transaction<any> {
  return typeof value === 'object' && value !== null && (value as { isTransaction?: unknown }).isTransaction === true;
}
