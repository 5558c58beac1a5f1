/**
 * The names the documentation's code blocks use without defining them, with real types, so each
 * block type-checks as the fragment it is (scripts/check-doc-snippets.ts). A block's own
 * declaration of a name shadows the one here. Keep these few and plain: a reader should be able
 * to guess each from its name.
 */
import type { Kysely, Generated } from 'kysely';
import type pg from 'pg';
import type { PrismaClient } from '../test/fixtures/prisma/generated/client.ts';

declare global {
  /** The application's tables, as the examples write to them. */
  interface Database {
    orders: { tenant_id: Generated<string>; id: Generated<number>; customer: string; amount_cents: number };
  }
  /** A Kysely instance connected as a login granted the database's app role. */
  const db: Kysely<Database>;
  const pool: pg.Pool;
  const tenantId: string;
  const runId: string;
  const step: number;
  const key: string;
  const orderId: string;
  const amount: number;
  /** Your authentication: the tenant of the caller's verified session or token. */
  function tenantOfSession(authorization: string | undefined): string | undefined;
  /** A Prisma 7 client generated from your schema (here the tests' `Order` model). */
  const prisma: PrismaClient;
}
