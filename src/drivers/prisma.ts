/**
 * `pg-once/prisma`: Prisma 7 with a PostgreSQL driver adapter (@prisma/adapter-pg). withTenant
 * opens an interactive transaction (`$transaction(async (tx) => ...)`, READ COMMITTED: see
 * read-committed.ts), or joins the tx client of one the caller opened (pg-once sets the tenant in
 * it and leaves the commit to the caller, who checks isRecordedFailure before letting an error
 * roll it back); `fn` gets the tx client, whose model calls (`tx.order.create`) join the
 * transaction, and pg-once's statements run through `tx.$queryRawUnsafe`. Prisma's own
 * transaction limits apply (a 5 s `timeout` by default): raise them with the client's
 * `transactionOptions` for long calls.
 */
import type { Driver } from '../internal/driver.ts';
import type { WithTenantOptions } from '../with-tenant-options.ts';
import { driverApi } from './driver-api.ts';
import { assertingReadCommitted, readCommittedTransaction } from './read-committed.ts';

/** What pg-once uses of a Prisma client: a generated PrismaClient is one. */
export interface PrismaClientLike {
  $transaction(fn: (tx: any) => Promise<any>, options?: { isolationLevel?: any }): Promise<any>;
}
/** The tx client `$transaction` hands its callback, with the caller's models, passed through. */
export type PrismaTransactionOf<C extends PrismaClientLike> = C extends { $transaction(fn: (tx: infer X) => any, options?: any): any } ? X : never;

/** What pg-once uses of a tx client: every Prisma client has it, the root one too (see isTransaction). */
export interface PrismaTransactionLike {
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
 * A tx client looks like the root client (both have $queryRawUnsafe, and $transaction too), and
 * a statement sent through the root client runs in a transaction of its own. Prisma marks the
 * clients of its interactive transactions with this registered symbol (the scope of nested
 * calls); the tx clients withTenant opened are known besides, should a release drop the mark.
 */
const SCOPE = Symbol.for('prisma.client.transaction.scope_context');
const opened = new WeakSet<object>();
const isTransaction = (client: object): client is PrismaTransactionLike =>
  opened.has(client) || (client as Record<symbol, { kind?: unknown } | undefined>)[SCOPE]?.kind === 'nested';

async function query<Row>(tx: PrismaTransactionLike, text: string, values: readonly unknown[]): Promise<Row[]> {
  try {
    return await tx.$queryRawUnsafe<Row>(text, ...values);
  } catch (error) {
    throw driverError(error);
  }
}

const driver: Driver<PrismaClientLike | PrismaTransactionLike, PrismaTransactionLike> = {
  transaction: (prisma, fn) =>
    isTransaction(prisma)
      ? fn(prisma)
      : readCommittedTransaction(
          prisma,
          (setLevel, inner) =>
            (prisma as PrismaClientLike).$transaction(
              (tx: PrismaTransactionLike) => {
                opened.add(tx);
                return inner(tx);
              },
              setLevel ? { isolationLevel: 'ReadCommitted' } : undefined,
            ),
          fn,
        ),
  client(tx) {
    if (!isTransaction(tx)) return undefined;
    return { owner: tx, query: assertingReadCommitted(tx, (text, values) => query(tx, text, values)) };
  },
};

const api = driverApi(driver);
export const { runIdempotent, enqueue } = api;
export const withTenant: {
  <C extends PrismaClientLike, T>(prisma: C, tenantId: string, fn: (tx: PrismaTransactionOf<C>) => Promise<T>, options?: WithTenantOptions): Promise<T>;
  /** In the caller's own interactive transaction: `tx` is its tx client, and `fn` gets it back. */
  <X extends PrismaTransactionLike, T>(tx: X, tenantId: string, fn: (tx: X) => Promise<T>, options?: WithTenantOptions): Promise<T>;
} = api.withTenant as never;
export const receiveOnce: {
  <C extends PrismaClientLike, T>(
    prisma: C,
    message: Parameters<typeof api.receiveOnce>[1],
    fn: (tx: PrismaTransactionOf<C>) => Promise<T>,
    options?: Parameters<typeof api.receiveOnce>[3],
  ): ReturnType<typeof api.receiveOnce<T>>;
  <X extends PrismaTransactionLike, T>(
    tx: X,
    message: Parameters<typeof api.receiveOnce>[1],
    fn: (tx: X) => Promise<T>,
    options?: Parameters<typeof api.receiveOnce>[3],
  ): ReturnType<typeof api.receiveOnce<T>>;
} = api.receiveOnce as never;
export const runIdempotentExternal = api.runIdempotentExternal;
