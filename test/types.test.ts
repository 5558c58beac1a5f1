/**
 * Type tests of the public API: what a caller's editor and compiler see. expectTypeOf is checked
 * at compile time: `npm run typecheck` (run by .ci/run, and covering test/) fails if any of these
 * stops holding.
 */
import type { Knex } from 'knex';
import type { Kysely, Transaction } from 'kysely';
import type { Logger } from 'pino';
import { describe, expectTypeOf, it } from 'vitest';
import type { z } from 'zod';
import type { OutboxTasksOptions } from '../src/integrations/graphile-worker.ts';
import type { outboxTasksOptionsSchema } from '../src/integrations/graphile-worker/outbox-tasks-options.ts';
import type { drainOptionsSchema } from '../src/outbox/drain-options.ts';
import type pg from 'pg';
import type { TransactionSql } from 'postgres';
import * as viaDrizzle from '../src/drivers/drizzle.ts';
import * as viaKnex from '../src/drivers/knex.ts';
import * as viaPg from '../src/drivers/pg.ts';
import * as viaPostgres from '../src/drivers/postgres.ts';
import * as viaPrisma from '../src/drivers/prisma.ts';
import type { PrismaClient } from './fixtures/prisma/generated/client.ts';
import type { NodePgDatabase } from 'drizzle-orm/node-postgres';
import {
  type DrainOnceOptions,
  enqueue,
  type EnqueuedEvent,
  type IdempotentOutcome,
  type Jsonify,
  type OnceErrorCode,
  type OnceError,
  type MessageRelayLogger,
  type RelayLogger,
  type RelayOptions,
  runIdempotent,
  type StructuredRelayLogger,
  withTenant,
} from '../src/index.ts';

describe('public types', () => {
  it('returns results as JSON round-trips them', () => {
    expectTypeOf<Jsonify<{ at: Date; n: number; tags: string[]; nested: { ok: boolean | null } }>>().toEqualTypeOf<{
      at: string;
      n: number;
      tags: string[];
      nested: { ok: boolean | null };
    }>();
    expectTypeOf<Jsonify<{ f: () => void }>>().toEqualTypeOf<{ f: never }>();
    expectTypeOf(runIdempotent<{ at: Date }>).returns.resolves.toEqualTypeOf<{ at: string }>();
    expectTypeOf(runIdempotent.detailed<number>).returns.resolves.toEqualTypeOf<IdempotentOutcome<number>>();
  });

  it('passes a Transaction to fn and takes one for enqueue, never a plain Kysely', () => {
    expectTypeOf(withTenant<{ orders: { id: number } }, string>)
      .parameter(2)
      .parameter(0)
      .toEqualTypeOf<Transaction<{ orders: { id: number } }>>();
    expectTypeOf(enqueue).parameter(0).toEqualTypeOf<Transaction<any>>();
    expectTypeOf(enqueue).returns.resolves.toEqualTypeOf<EnqueuedEvent>();
    // Kysely's Transaction is deliberately not assignable from Kysely: writes that must join the
    // caller's transaction cannot be handed an autocommitting instance by mistake.
    expectTypeOf<Kysely<any>>().not.toMatchTypeOf<Transaction<any>>();
  });

  it('hands fn the Transaction<DB> it was given, so a typo in a table or column does not compile', () => {
    interface DB {
      orders: { key: string; amount: number };
    }
    const typed = (db: Kysely<DB>) =>
      withTenant(db, 't', (tx) =>
        runIdempotent(tx, 'k', async (inner) => {
          expectTypeOf(inner).toEqualTypeOf<Transaction<DB>>();
          await inner.insertInto('orders').values({ key: 'k', amount: 1 }).execute();
          // @ts-expect-error: no table 'ordrs'
          await inner.insertInto('ordrs').values({ customerr: 1 }).execute();
          // @ts-expect-error: no column 'customerr'
          await inner.insertInto('orders').values({ customerr: 1 }).execute();
          return 1;
        }),
      );
    expectTypeOf(typed).returns.resolves.toEqualTypeOf<number>();
  });

  it("gives each database library's fn that library's own transaction, typed as the caller's", () => {
    expectTypeOf(viaPg.withTenant<number>)
      .parameter(2)
      .parameter(0)
      .toEqualTypeOf<pg.PoolClient>();
    expectTypeOf(viaKnex.withTenant<number>)
      .parameter(2)
      .parameter(0)
      .toEqualTypeOf<Knex.Transaction>();
    // biome-ignore lint/complexity/noBannedTypes: {} is postgres.js's own default for Sql<Types>, which this must match.
    expectTypeOf(viaPostgres.withTenant<number, {}>)
      .parameter(2)
      .parameter(0)
      // biome-ignore lint/complexity/noBannedTypes: as above, postgres.js's own default.
      .toEqualTypeOf<TransactionSql<{}>>();
    // biome-ignore lint/complexity/noBannedTypes: {} is drizzle's own default schema type for NodePgDatabase.
    const drizzle = (db: NodePgDatabase<{}>) =>
      viaDrizzle.withTenant(db, 't', (tx) =>
        viaDrizzle.runIdempotent(tx, 'k', async (inner) => {
          expectTypeOf(inner).toEqualTypeOf(tx);
          return 1;
        }),
      );
    expectTypeOf(drizzle).returns.resolves.toEqualTypeOf<number>();
    const prisma = (client: PrismaClient) =>
      viaPrisma.withTenant(client, 't', (tx) =>
        viaPrisma.runIdempotent(tx, 'k', async (inner) => {
          // @ts-expect-error: the model is `order`
          inner.ordr;
          return (await inner.order.count()) + 0;
        }),
      );
    expectTypeOf(prisma).returns.resolves.toEqualTypeOf<number>();
    // A pool or a database handle autocommits each statement: not a transaction.
    // @ts-expect-error: enqueue takes a client in a transaction, not the Pool
    void ((pool: pg.Pool) => viaPg.enqueue(pool, { topic: 't', payload: 1 }));
  });

  it("joins the caller's own transaction of each library, and hands fn that transaction back", () => {
    // biome-ignore lint/complexity/noBannedTypes: {} is postgres.js's own default for Sql<Types>, which this must match.
    const postgresJs = (sql: TransactionSql<{}>) =>
      viaPostgres.withTenant(sql, 't', async (tx) => {
        // biome-ignore lint/complexity/noBannedTypes: as above.
        expectTypeOf(tx).toEqualTypeOf<TransactionSql<{}>>();
        return 1;
      });
    expectTypeOf(postgresJs).returns.resolves.toEqualTypeOf<number>();
    const knexTrx = (trx: Knex.Transaction) =>
      viaKnex.withTenant(trx, 't', async (tx) => {
        expectTypeOf(tx).toEqualTypeOf<Knex.Transaction>();
        return 1;
      });
    expectTypeOf(knexTrx).returns.resolves.toEqualTypeOf<number>();
    // biome-ignore lint/complexity/noBannedTypes: {} is drizzle's own default schema type for NodePgDatabase.
    const drizzle = (db: NodePgDatabase<{}>) =>
      db.transaction((outer) =>
        viaDrizzle.withTenant(outer, 't', async (tx) => {
          expectTypeOf(tx).toEqualTypeOf<typeof outer>();
          return 1;
        }),
      );
    expectTypeOf(drizzle).returns.resolves.toEqualTypeOf<number>();
    const prisma = (client: PrismaClient) =>
      client.$transaction((outer) =>
        viaPrisma.withTenant(outer, 't', async (tx) => {
          expectTypeOf(tx).toEqualTypeOf(outer);
          // @ts-expect-error: the model is `order`
          tx.ordr;
          return (await tx.order.count()) + 0;
        }),
      );
    expectTypeOf(prisma).returns.resolves.toEqualTypeOf<number>();
  });

  it('gives every error a stable code from a closed union', () => {
    expectTypeOf<OnceError['code']>().toEqualTypeOf<OnceErrorCode>();
    expectTypeOf<'IDEMPOTENCY_KEY_REUSED'>().toMatchTypeOf<OnceErrorCode>();
    expectTypeOf<'SOMETHING_ELSE'>().not.toMatchTypeOf<OnceErrorCode>();
  });

  it("takes a pino logger, a child of one, or the first message-first shape as the relay's logger", () => {
    expectTypeOf<Logger>().toMatchTypeOf<StructuredRelayLogger>();
    expectTypeOf<ReturnType<Logger['child']>>().toMatchTypeOf<NonNullable<RelayOptions['logger']>>();
    expectTypeOf<MessageRelayLogger>().toMatchTypeOf<RelayLogger>();
    expectTypeOf<{ warn(): void }>().not.toMatchTypeOf<RelayLogger>();
  });

  it('keeps the hand-written option interfaces (what editors show, with docs) in step with their schemas', () => {
    expectTypeOf<keyof DrainOnceOptions>().toEqualTypeOf<keyof z.input<typeof drainOptionsSchema>>();
    expectTypeOf<keyof OutboxTasksOptions>().toEqualTypeOf<keyof z.input<typeof outboxTasksOptionsSchema>>();
    expectTypeOf<DrainOnceOptions>().toMatchTypeOf<z.input<typeof drainOptionsSchema>>();
    expectTypeOf<Required<z.input<typeof drainOptionsSchema>>>().toMatchTypeOf<Required<DrainOnceOptions>>();
    expectTypeOf<OutboxTasksOptions>().toMatchTypeOf<z.input<typeof outboxTasksOptionsSchema>>();
    expectTypeOf<Required<z.input<typeof outboxTasksOptionsSchema>>>().toMatchTypeOf<Required<OutboxTasksOptions>>();
  });
});
