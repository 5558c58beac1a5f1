/**
 * `pg-once/prisma`: Prisma 7 with a PostgreSQL driver adapter (@prisma/adapter-pg). withTenant
 * opens an interactive transaction (`$transaction(async (tx) => ...)`, READ COMMITTED); `fn`
 * gets its tx client, whose model calls (`tx.order.create`) join the transaction, and pg-once's
 * statements run through `tx.$queryRawUnsafe`. Prisma's own transaction limits apply (a 5 s
 * `timeout` by default): raise them with the client's `transactionOptions` for long calls.
 */
import type { Driver } from '../internal/driver.ts';
import type { WithTenantOptions } from '../options.ts';
import { driverApi } from './driver-api.ts';

/** What pg-once uses of a Prisma client: a generated PrismaClient is one. */
export interface PrismaClientLike {
  $transaction(fn: (tx: any) => Promise<any>, options?: { isolationLevel?: any }): Promise<any>;
}
/** The tx client `$transaction` hands its callback, with the caller's models, passed through. */
export type PrismaTransactionOf<C extends PrismaClientLike> = C extends { $transaction(fn: (tx: infer X) => any, options?: any): any } ? X : never;

interface PrismaTransaction {
  $queryRawUnsafe<Row>(query: string, ...values: unknown[]): Promise<Row[]>;
}

/**
 * A failed raw query surfaces as Prisma's P2010, whose driver error carries the SQLSTATE as
 * `originalCode`; pg-once maps SQLSTATEs (tenant missing, call aborted, lock timeouts), so the
 * error it sees has that code, and Prisma's error as its cause.
 */
function driverError(error: unknown): unknown {
  const adapterError = (error as { meta?: { driverAdapterError?: { cause?: { originalCode?: unknown; originalMessage?: unknown } } } } | null)?.meta
    ?.driverAdapterError?.cause;
  if (typeof adapterError?.originalCode !== 'string') return error;
  return Object.assign(new Error(String(adapterError.originalMessage ?? (error as Error).message), { cause: error }), { code: adapterError.originalCode });
}

/**
 * The tx clients withTenant opened. A tx client looks like the root client (both have
 * $queryRawUnsafe, and $transaction too), and a statement sent through the root client runs in
 * a transaction of its own: pg-once knows a transaction by having opened it.
 */
const opened = new WeakSet<object>();

const driver: Driver<PrismaClientLike, PrismaTransaction> = {
  transaction: (prisma, fn) =>
    prisma.$transaction(
      (tx: PrismaTransaction) => {
        opened.add(tx);
        return fn(tx);
      },
      { isolationLevel: 'ReadCommitted' },
    ),
  client(tx) {
    if (!opened.has(tx)) return undefined;
    return {
      owner: tx,
      async query<Row>(text: string, values: readonly unknown[]) {
        try {
          return await tx.$queryRawUnsafe<Row>(text, ...values);
        } catch (error) {
          throw driverError(error);
        }
      },
    };
  },
};

const api = driverApi(driver);
export const { runIdempotent, enqueue } = api;
export const withTenant: <C extends PrismaClientLike, T>(
  prisma: C,
  tenantId: string,
  fn: (tx: PrismaTransactionOf<C>) => Promise<T>,
  options?: WithTenantOptions,
) => Promise<T> = api.withTenant as never;
export const receiveOnce: <C extends PrismaClientLike, T>(
  prisma: C,
  message: Parameters<typeof api.receiveOnce>[1],
  fn: (tx: PrismaTransactionOf<C>) => Promise<T>,
  options?: Parameters<typeof api.receiveOnce>[3],
) => ReturnType<typeof api.receiveOnce<T>> = api.receiveOnce as never;
export const runIdempotentExternal = api.runIdempotentExternal;
