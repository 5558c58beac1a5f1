/**
 * Every database library pg-once takes, opened the way its users open it, behind one shape so
 * that test/drivers.test.ts runs the same contract against each (and bench/drivers.ts measures
 * each): the library's own handle, its pg-once subpath, and a business write (`orders`) through
 * the library's own query API.
 */
import { PrismaPg } from '@prisma/adapter-pg';
import { drizzle as drizzlePg } from 'drizzle-orm/node-postgres';
import { drizzle as drizzlePostgresJs } from 'drizzle-orm/postgres-js';
import { count, eq, sql } from 'drizzle-orm';
import { integer, pgTable, text } from 'drizzle-orm/pg-core';
import knex from 'knex';
import { Kysely, PostgresDialect, sql as kyselySql } from 'kysely';
import pg from 'pg';
import postgres from 'postgres';
import * as root from '../src/index.ts';
import * as viaDrizzle from '../src/drivers/drizzle.ts';
import * as viaKnex from '../src/drivers/knex.ts';
import * as viaPg from '../src/drivers/pg.ts';
import * as viaPostgres from '../src/drivers/postgres.ts';
import * as viaPrisma from '../src/drivers/prisma.ts';
import { PrismaClient } from '../test/fixtures/prisma/generated/client.ts';

/**
 * A pg.Pool with error listeners on idle and checked-out connections: test and bench databases
 * are dropped WITH (FORCE) right after their pools end (see docs/getting-started.md, "Connect").
 */
function testPool(config: pg.PoolConfig): pg.Pool {
  const pool = new pg.Pool(config);
  pool.on('error', () => {});
  pool.on('connect', (client) => client.on('error', () => {}));
  return pool;
}

/** The calls of one library, loosely typed: each subject's own types are checked in test/types.test.ts. */
export interface Subject {
  name: string;
  withTenant<T>(tenantId: string, fn: (tx: any) => Promise<T>, options?: root.WithTenantOptions): Promise<T>;
  runIdempotent: { detailed<T>(tx: any, key: string, fn: (tx: any) => Promise<T>, options?: root.RunIdempotentOptions): Promise<root.IdempotentOutcome<T>> };
  enqueue(tx: any, event: root.OutboxEvent): Promise<root.EnqueuedEvent>;
  receiveOnce<T>(message: root.InboxMessage, fn: (tx: any) => Promise<T>): Promise<unknown>;
  runIdempotentExternal<T>(tenantId: string, key: string, fn: () => Promise<T>): Promise<unknown>;
  /** Inserts an order through the library's own API, in `tx`. */
  insertOrder(tx: any, key: string, amount: number): Promise<void>;
  /** Counts the orders of `key` that `tx` can see (row-level security applies). */
  countOrders(tx: any, key: string): Promise<number>;
  /** `tx`'s isolation level (`SHOW transaction_isolation`), asked through the library. */
  isolation(tx: any): Promise<string>;
  /**
   * The same business insert without pg-once, as a user of the library writes it under RLS: the
   * library's own transaction (its defaults), the tenant set, the insert, the commit.
   */
  bareInsert(tenantId: string, key: string, amount: number): Promise<void>;
  /** The library's database handle itself, which is not a transaction. */
  handle: unknown;
  close(): Promise<void>;
}

const orders = pgTable('orders', { tenantId: text('tenant_id'), key: text('key').notNull(), amount: integer('amount').notNull() });

/** postgres.js with an error listener's worth of quiet: the test database is dropped under it. */
const postgresJs = (url: string, max: number) => postgres(url, { max, onnotice: () => {} });

export const SUBJECTS: Record<string, (url: string, max: number) => Subject> = {
  kysely: (url, max) => kyselySubject(testPool({ connectionString: url, max })),
  'pg (Pool)'(url, max) {
    const pool = testPool({ connectionString: url, max });
    return {
      name: 'pg (Pool)',
      handle: pool,
      ...pgCalls(pool),
      withTenant: (tenantId, fn, options) => viaPg.withTenant(pool, tenantId, fn, options),
      close: () => pool.end(),
    };
  },
  "pg (the caller's own transaction)"(url, max) {
    const pool = testPool({ connectionString: url, max });
    return {
      name: "pg (the caller's own transaction)",
      handle: pool,
      ...pgCalls(pool),
      // The caller opens and ends the transaction; pg-once only sets the tenant in it.
      async withTenant(tenantId, fn, options) {
        const client = await pool.connect();
        try {
          await client.query('BEGIN');
          try {
            const result = await viaPg.withTenant(client, tenantId, fn, options);
            await client.query('COMMIT');
            return result;
          } catch (error) {
            await client.query(root.isRecordedFailure(error) ? 'COMMIT' : 'ROLLBACK');
            throw error;
          }
        } finally {
          client.release();
        }
      },
      close: () => pool.end(),
    };
  },
  'postgres.js'(url, max) {
    const sql = postgresJs(url, max);
    return {
      name: 'postgres.js',
      handle: sql,
      withTenant: (tenantId, fn, options) => viaPostgres.withTenant(sql, tenantId, fn, options),
      runIdempotent: viaPostgres.runIdempotent,
      enqueue: viaPostgres.enqueue,
      receiveOnce: (message, fn) => viaPostgres.receiveOnce(sql, message, fn),
      runIdempotentExternal: (tenantId, key, fn) => viaPostgres.runIdempotentExternal(sql, tenantId, key, fn),
      insertOrder: async (tx, key, amount) => void (await tx`INSERT INTO orders (key, amount) VALUES (${key}, ${amount})`),
      countOrders: async (tx, key) => Number((await tx`SELECT count(*) AS n FROM orders WHERE key = ${key}`)[0].n),
      isolation: async (tx) => (await tx`SHOW transaction_isolation`)[0].transaction_isolation,
      bareInsert: async (tenantId, key, amount) =>
        void (await sql.begin(async (tx) => {
          await tx`SELECT set_config('once.tenant_id', ${tenantId}, true)`;
          await tx`INSERT INTO orders (key, amount) VALUES (${key}, ${amount})`;
        })),
      close: () => sql.end(),
    };
  },
  "postgres.js (the caller's own transaction)"(url, max) {
    const subject = SUBJECTS['postgres.js']!(url, max);
    const sql = subject.handle as postgres.Sql;
    return {
      ...subject,
      name: "postgres.js (the caller's own transaction)",
      withTenant: (tenantId, fn, options) =>
        inOwnTransaction(
          (body) => sql.begin(body) as never,
          (tx: postgres.TransactionSql) => viaPostgres.withTenant(tx, tenantId, fn, options),
        ),
    };
  },
  'drizzle (node-postgres)'(url, max) {
    const pool = testPool({ connectionString: url, max });
    return { name: 'drizzle (node-postgres)', ...drizzleCalls(drizzlePg(pool)), close: () => pool.end() };
  },
  'drizzle (postgres.js)'(url, max) {
    const sql = postgresJs(url, max);
    return { name: 'drizzle (postgres.js)', ...drizzleCalls(drizzlePostgresJs(sql)), close: () => sql.end() };
  },
  "drizzle (node-postgres, the caller's own transaction)"(url, max) {
    const subject = SUBJECTS['drizzle (node-postgres)']!(url, max);
    return {
      ...subject,
      name: "drizzle (node-postgres, the caller's own transaction)",
      withTenant: drizzleOwnTransaction(subject.handle as Parameters<typeof viaDrizzle.withTenant>[0]),
    };
  },
  "drizzle (postgres.js, the caller's own transaction)"(url, max) {
    const subject = SUBJECTS['drizzle (postgres.js)']!(url, max);
    return {
      ...subject,
      name: "drizzle (postgres.js, the caller's own transaction)",
      withTenant: drizzleOwnTransaction(subject.handle as Parameters<typeof viaDrizzle.withTenant>[0]),
    };
  },
  prisma(url, max) {
    const prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString: url, max }) });
    return {
      name: 'prisma',
      handle: prisma,
      withTenant: (tenantId, fn, options) => viaPrisma.withTenant(prisma, tenantId, fn, options),
      runIdempotent: viaPrisma.runIdempotent,
      enqueue: viaPrisma.enqueue,
      receiveOnce: (message, fn) => viaPrisma.receiveOnce(prisma, message, fn),
      runIdempotentExternal: (tenantId, key, fn) => viaPrisma.runIdempotentExternal(prisma, tenantId, key, fn),
      insertOrder: async (tx, key, amount) => void (await tx.order.create({ data: { key, amount } })),
      countOrders: (tx, key) => tx.order.count({ where: { key } }),
      isolation: async (tx) => (await tx.$queryRawUnsafe('SHOW transaction_isolation'))[0].transaction_isolation,
      bareInsert: async (tenantId, key, amount) =>
        void (await prisma.$transaction(async (tx) => {
          await tx.$queryRaw`SELECT set_config('once.tenant_id', ${tenantId}, true)`;
          await tx.order.create({ data: { key, amount } });
        })),
      close: () => prisma.$disconnect(),
    };
  },
  "prisma (the caller's own transaction)"(url, max) {
    const subject = SUBJECTS.prisma!(url, max);
    const prisma = subject.handle as PrismaClient;
    return {
      ...subject,
      name: "prisma (the caller's own transaction)",
      withTenant: (tenantId, fn, options) =>
        inOwnTransaction(
          (body) => prisma.$transaction(body),
          (tx) => viaPrisma.withTenant(tx, tenantId, fn, options),
        ),
    };
  },
  knex(url, max) {
    const db = knex({ client: 'pg', connection: url, pool: { min: 0, max } });
    return {
      name: 'knex',
      handle: db,
      withTenant: (tenantId, fn, options) => viaKnex.withTenant(db, tenantId, fn, options),
      runIdempotent: viaKnex.runIdempotent,
      enqueue: viaKnex.enqueue,
      receiveOnce: (message, fn) => viaKnex.receiveOnce(db, message, fn),
      runIdempotentExternal: (tenantId, key, fn) => viaKnex.runIdempotentExternal(db, tenantId, key, fn),
      insertOrder: async (trx, key, amount) => void (await trx('orders').insert({ key, amount })),
      countOrders: async (trx, key) => Number((await trx('orders').where({ key }).count({ n: '*' }))[0].n),
      isolation: async (trx) => (await trx.raw('SHOW transaction_isolation')).rows[0].transaction_isolation,
      bareInsert: (tenantId, key, amount) =>
        db.transaction(async (trx) => {
          await trx.raw("SELECT set_config('once.tenant_id', ?, true)", [tenantId]);
          await trx('orders').insert({ key, amount });
        }),
      close: () => db.destroy(),
    };
  },
  "knex (the caller's own transaction)"(url, max) {
    const subject = SUBJECTS.knex!(url, max);
    const db = subject.handle as knex.Knex;
    return {
      ...subject,
      name: "knex (the caller's own transaction)",
      withTenant: (tenantId, fn, options) =>
        inOwnTransaction(
          (body) => db.transaction(body),
          (trx: knex.Knex.Transaction) => viaKnex.withTenant(trx, tenantId, fn, options),
        ),
    };
  },
};

/**
 * The caller's own transaction, opened by `open` (the library's own call), which pg-once's
 * withTenant joins (`join`). A recorded failure must commit: the callback returns it, so that the
 * library commits, and it is thrown after.
 */
async function inOwnTransaction<Tx, T>(
  open: (body: (tx: Tx) => Promise<{ value: T } | { failed: unknown }>) => Promise<{ value: T } | { failed: unknown }>,
  join: (tx: Tx) => Promise<T>,
): Promise<T> {
  const outcome = await open(async (tx) => {
    try {
      return { value: await join(tx) };
    } catch (error) {
      if (root.isRecordedFailure(error)) return { failed: error };
      throw error;
    }
  });
  if ('failed' in outcome) throw outcome.failed;
  return outcome.value;
}

function drizzleOwnTransaction(db: Parameters<typeof viaDrizzle.withTenant>[0]) {
  return <T>(tenantId: string, fn: (tx: any) => Promise<T>, options?: root.WithTenantOptions) =>
    inOwnTransaction<Parameters<Parameters<typeof db.transaction>[0]>[0], T>(
      (body) => db.transaction(body),
      (tx) => viaDrizzle.withTenant(tx, tenantId, fn, options),
    );
}

function pgCalls(pool: pg.Pool) {
  return {
    async bareInsert(tenantId: string, key: string, amount: number) {
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        await client.query("SELECT set_config('once.tenant_id', $1, true)", [tenantId]);
        await client.query('INSERT INTO orders (key, amount) VALUES ($1, $2)', [key, amount]);
        await client.query('COMMIT');
      } catch (error) {
        await client.query('ROLLBACK');
        throw error;
      } finally {
        client.release();
      }
    },
    runIdempotent: viaPg.runIdempotent,
    enqueue: viaPg.enqueue,
    receiveOnce: <T>(message: root.InboxMessage, fn: (tx: any) => Promise<T>) => viaPg.receiveOnce(pool, message, fn),
    runIdempotentExternal: <T>(tenantId: string, key: string, fn: () => Promise<T>) => viaPg.runIdempotentExternal(pool, tenantId, key, fn),
    insertOrder: async (client: pg.ClientBase, key: string, amount: number) =>
      void (await client.query('INSERT INTO orders (key, amount) VALUES ($1, $2)', [key, amount])),
    countOrders: async (client: pg.ClientBase, key: string) =>
      Number((await client.query<{ n: string }>('SELECT count(*) AS n FROM orders WHERE key = $1', [key])).rows[0]!.n),
    isolation: async (client: pg.ClientBase) =>
      (await client.query<{ transaction_isolation: string }>('SHOW transaction_isolation')).rows[0]!.transaction_isolation,
  };
}

function drizzleCalls(db: Parameters<typeof viaDrizzle.withTenant>[0]) {
  return {
    bareInsert: (tenantId: string, key: string, amount: number) =>
      db.transaction(async (tx) => {
        await tx.execute(sql`SELECT set_config('once.tenant_id', ${tenantId}, true)`);
        await tx.insert(orders).values({ key, amount });
      }),
    handle: db,
    withTenant: <T>(tenantId: string, fn: (tx: any) => Promise<T>, options?: root.WithTenantOptions) => viaDrizzle.withTenant(db, tenantId, fn, options),
    runIdempotent: viaDrizzle.runIdempotent,
    enqueue: viaDrizzle.enqueue,
    receiveOnce: <T>(message: root.InboxMessage, fn: (tx: any) => Promise<T>) => viaDrizzle.receiveOnce(db, message, fn),
    runIdempotentExternal: <T>(tenantId: string, key: string, fn: () => Promise<T>) => viaDrizzle.runIdempotentExternal(db, tenantId, key, fn),
    insertOrder: async (tx: any, key: string, amount: number) => void (await tx.insert(orders).values({ key, amount })),
    countOrders: async (tx: any, key: string) => Number((await tx.select({ n: count() }).from(orders).where(eq(orders.key, key)))[0].n),
    // node-postgres answers a QueryResult, postgres.js the rows themselves.
    isolation: async (tx: any) => {
      const result = await tx.execute(sql`SHOW transaction_isolation`);
      return (Array.isArray(result) ? result : result.rows)[0].transaction_isolation;
    },
  };
}

function kyselySubject(pool: pg.Pool): Subject {
  const db = new Kysely<any>({ dialect: new PostgresDialect({ pool }) });
  return {
    name: 'kysely',
    handle: db,
    withTenant: (tenantId, fn, options) => root.withTenant(db, tenantId, fn, options),
    runIdempotent: root.runIdempotent,
    enqueue: root.enqueue,
    receiveOnce: (message, fn) => root.receiveOnce(db, message, fn),
    runIdempotentExternal: (tenantId, key, fn) => root.runIdempotentExternal(db, tenantId, key, fn),
    insertOrder: async (tx, key, amount) => void (await tx.insertInto('orders').values({ key, amount }).execute()),
    countOrders: async (tx, key) => Number((await kyselySql<{ n: string }>`SELECT count(*) AS n FROM orders WHERE key = ${key}`.execute(tx)).rows[0]!.n),
    isolation: async (tx) => (await kyselySql<{ transaction_isolation: string }>`SHOW transaction_isolation`.execute(tx)).rows[0]!.transaction_isolation,
    bareInsert: (tenantId, key, amount) =>
      db.transaction().execute(async (tx) => {
        await kyselySql`SELECT set_config('once.tenant_id', ${tenantId}, true)`.execute(tx);
        await tx.insertInto('orders').values({ key, amount }).execute();
      }),
    close: () => db.destroy(),
  };
}

/**
 * Kysely on one direct connection whose node-postgres client counts the queries it is sent: one
 * round trip each (node-postgres sends a query once the one before it was answered; pg-once's
 * pipelined statements are one query). Counted on the client because through a counting proxy
 * (support/wire-counter.ts) the connection does not reach its own backend, and pg-once's Kysely
 * path then merges its statements as it does behind a pooler (src/drivers/kysely-backend-check.ts).
 */
export function countedKysely(url: string, counter: { roundTrips: number }): Subject {
  const pool = testPool({ connectionString: url, max: 1 });
  pool.on('connect', (client) => {
    const query = client.query;
    (client as { query: unknown }).query = function (this: pg.PoolClient, ...args: unknown[]) {
      counter.roundTrips += 1;
      return (query as (...a: unknown[]) => unknown).apply(this, args);
    };
  });
  return kyselySubject(pool);
}
