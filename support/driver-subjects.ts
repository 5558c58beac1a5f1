/**
 * Every database library pg-once takes, opened the way its users open it, behind one shape so
 * that test/drivers.test.ts runs the same contract against each (and bench/drivers.ts measures
 * each): the library's own handle, its pg-once subpath, and a business write (`orders`) through
 * the library's own query API.
 */
import { PrismaPg } from '@prisma/adapter-pg';
import { drizzle as drizzlePg } from 'drizzle-orm/node-postgres';
import { drizzle as drizzlePostgresJs } from 'drizzle-orm/postgres-js';
import { count, eq } from 'drizzle-orm';
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
  /** The library's database handle itself, which is not a transaction. */
  handle: unknown;
  close(): Promise<void>;
}

const orders = pgTable('orders', { tenantId: text('tenant_id'), key: text('key').notNull(), amount: integer('amount').notNull() });

/** postgres.js with an error listener's worth of quiet: the test database is dropped under it. */
const postgresJs = (url: string, max: number) => postgres(url, { max, onnotice: () => {} });

export const SUBJECTS: Record<string, (url: string, max: number) => Subject> = {
  kysely(url, max) {
    const db = new Kysely<any>({ dialect: new PostgresDialect({ pool: testPool({ connectionString: url, max }) }) });
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
      close: () => db.destroy(),
    };
  },
  'pg (Pool)'(url, max) {
    const pool = testPool({ connectionString: url, max });
    return { name: 'pg (Pool)', handle: pool, ...pgCalls(pool), withTenant: (tenantId, fn, options) => viaPg.withTenant(pool, tenantId, fn, options), close: () => pool.end() };
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
      close: () => sql.end(),
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
      close: () => prisma.$disconnect(),
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
      close: () => db.destroy(),
    };
  },
};

function pgCalls(pool: pg.Pool) {
  return {
    runIdempotent: viaPg.runIdempotent,
    enqueue: viaPg.enqueue,
    receiveOnce: <T>(message: root.InboxMessage, fn: (tx: any) => Promise<T>) => viaPg.receiveOnce(pool, message, fn),
    runIdempotentExternal: <T>(tenantId: string, key: string, fn: () => Promise<T>) => viaPg.runIdempotentExternal(pool, tenantId, key, fn),
    insertOrder: async (client: pg.ClientBase, key: string, amount: number) => void (await client.query('INSERT INTO orders (key, amount) VALUES ($1, $2)', [key, amount])),
    countOrders: async (client: pg.ClientBase, key: string) =>
      Number((await client.query<{ n: string }>('SELECT count(*) AS n FROM orders WHERE key = $1', [key])).rows[0]!.n),
  };
}

function drizzleCalls(db: Parameters<typeof viaDrizzle.withTenant>[0]) {
  return {
    handle: db,
    withTenant: <T>(tenantId: string, fn: (tx: any) => Promise<T>, options?: root.WithTenantOptions) => viaDrizzle.withTenant(db, tenantId, fn, options),
    runIdempotent: viaDrizzle.runIdempotent,
    enqueue: viaDrizzle.enqueue,
    receiveOnce: <T>(message: root.InboxMessage, fn: (tx: any) => Promise<T>) => viaDrizzle.receiveOnce(db, message, fn),
    runIdempotentExternal: <T>(tenantId: string, key: string, fn: () => Promise<T>) => viaDrizzle.runIdempotentExternal(db, tenantId, key, fn),
    insertOrder: async (tx: any, key: string, amount: number) => void (await tx.insert(orders).values({ key, amount })),
    countOrders: async (tx: any, key: string) => Number((await tx.select({ n: count() }).from(orders).where(eq(orders.key, key)))[0].n),
  };
}
