/**
 * The stored result of a call goes with COMMIT, or with the transaction's next statement, in every
 * transaction withTenant opens: merged into one query on node-postgres clients (pg-once/pg, Knex,
 * Drizzle over node-postgres: src/drivers/merging-pg-client.ts, with BEGIN carrying the tenant),
 * pipelined on postgres.js (alone or under Drizzle: src/drivers/pipelined-statements.ts). Kysely's
 * (merging-connection.ts) runs here too. What must hold through each library, on a pool of one connection (so
 * that a connection left in a bad state fails the next call): a statement after a call sees it
 * completed; a result UPDATE that fails in COMMIT's round trip fails the transaction, commits
 * nothing, and leaves the connection clean; so does one that fails before the next statement; fn
 * ending the transaction itself is still TRANSACTION_MISUSE; a transaction that throws after a
 * call keeps nothing of it.
 */
import { sql as drizzleSql } from 'drizzle-orm';
import type { Knex } from 'knex';
import { sql as kyselySql, type Transaction } from 'kysely';
import pg from 'pg';
import type { TransactionSql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SUBJECTS, type Subject } from '../support/driver-subjects.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { errorOf } from './support/error-of.ts';

let fx: AppFixture;
beforeAll(async () => {
  fx = await createAppFixture(2);
  // A result whose key starts with "poisoned-" cannot be stored: its UPDATE fails in the database.
  await fx.database.admin.query(`
    CREATE FUNCTION public.refuse_poisoned() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.key LIKE 'poisoned-%' AND NEW.status = 'completed' THEN
        RAISE EXCEPTION 'refused by the test' USING ERRCODE = 'P0001';
      END IF;
      IF NEW.key LIKE 'timed-out-%' AND NEW.status = 'completed' THEN
        RAISE EXCEPTION 'a statement timeout, as the test tells it' USING ERRCODE = '57014';
      END IF;
      RETURN NEW;
    END $$;
    CREATE TRIGGER refuse_poisoned BEFORE UPDATE ON once.idempotency_keys FOR EACH ROW EXECUTE FUNCTION public.refuse_poisoned();
    -- A key starting with "refused-claim-" cannot be claimed: the claim's INSERT fails.
    CREATE FUNCTION public.refuse_claim() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.key LIKE 'refused-claim-%' THEN
        RAISE EXCEPTION 'claim refused by the test' USING ERRCODE = 'P0001';
      END IF;
      RETURN NEW;
    END $$;
    CREATE TRIGGER refuse_claim BEFORE INSERT ON once.idempotency_keys FOR EACH ROW EXECUTE FUNCTION public.refuse_claim();
  `);
});
afterAll(async () => {
  await fx?.close();
});

let unique = 0;
const freshKey = (label: string) => `${label}-${++unique}-${Date.now()}`;

/** A statement of the caller's own, through each library's raw query. */
const EXECUTE: Record<string, (tx: any, text: string) => Promise<unknown>> = {
  kysely: (tx: Transaction<any>, text) => kyselySql.raw(text).execute(tx),
  'pg (Pool)': (client: pg.PoolClient, text) => client.query(text),
  knex: (trx: Knex.Transaction, text) => trx.raw(text),
  'drizzle (node-postgres)': (tx: { execute(query: unknown): Promise<unknown> }, text) => tx.execute(drizzleSql.raw(text)),
  'postgres.js': (tx: TransactionSql, text) => tx.unsafe(text),
  'drizzle (postgres.js)': (tx: { execute(query: unknown): Promise<unknown> }, text) => tx.execute(drizzleSql.raw(text)),
};

describe.each(Object.keys(EXECUTE))('%s: the stored result with COMMIT or the next statement', (library) => {
  let subject: Subject;
  const execute = EXECUTE[library]!;
  beforeAll(async () => {
    subject = SUBJECTS[library]!(fx.appUrl, 1);
    // The handle's first transaction learns its role; the connection's first checks its backend.
    await subject.withTenant('t', async () => {});
    await subject.withTenant('t', async () => {});
  });
  afterAll(async () => {
    await subject?.close();
  });

  const order = (key: string) => async (tx: unknown) => {
    await subject.insertOrder(tx, key, 1);
    return { key };
  };

  it('a statement after the call sees it completed: the same key replays in the same transaction', async () => {
    const key = freshKey('after');
    const outcomes = await subject.withTenant('t', async (tx) => {
      const first = await subject.runIdempotent.detailed(tx, key, order(key));
      const seen = await subject.countOrders(tx, key);
      const second = await subject.runIdempotent.detailed(tx, key, order(key));
      return [first.outcome, seen, second.outcome, second.value];
    });
    expect(outcomes).toEqual(['executed', 1, 'replayed', { key }]);
    const [record] = await fx.rows<{ status: string }>('idempotency_keys', `key = '${key}'`);
    expect(record?.status).toBe('completed');
    expect((await fx.orders('t')).filter((row) => row.key === key)).toHaveLength(1);
  });

  it("a result refused in COMMIT's round trip fails the transaction, commits nothing, and leaves the connection clean", async () => {
    const key = freshKey('poisoned');
    const error = await errorOf(subject.withTenant('t', (tx) => subject.runIdempotent.detailed(tx, key, order(key))));
    expect(error).toMatchObject({ code: 'P0001' });
    expect(String((error as Error).message)).toContain('refused by the test');
    expect(await fx.rows('idempotency_keys', `key = '${key}'`)).toEqual([]);
    expect((await fx.orders('t')).filter((row) => row.key === key)).toEqual([]);
    // The pool's one connection is out of any transaction, its tenant unset: the next call is normal.
    const next = freshKey('next');
    const { outcome } = await subject.withTenant('t', (tx) => subject.runIdempotent.detailed(tx, next, order(next)));
    expect(outcome).toBe('executed');
    expect(await subject.withTenant('t', (tx) => subject.isolation(tx))).toBe('read committed');
    expect((await fx.orders('t')).filter((row) => row.key === next)).toHaveLength(1);
  });

  it("a result refused before the next call's claim is that result's error, not the next key's", async () => {
    const key = freshKey('timed-out');
    const next = freshKey('after-timed-out');
    const error = await errorOf(
      subject.withTenant('t', async (tx) => {
        await subject.runIdempotent.detailed(tx, key, order(key));
        await subject.runIdempotent.detailed(tx, next, order(next));
      }),
    );
    // Not IDEMPOTENCY_IN_PROGRESS for `next`, which a 57014 of its own claim would mean.
    expect(error).toMatchObject({ code: '57014' });
    expect(await fx.rows('idempotency_keys', `key IN ('${key}', '${next}')`)).toEqual([]);
  });

  it('statements sent at once after several deferred results all run behind them, in the transaction', async () => {
    const keys = [freshKey('fan-a'), freshKey('fan-b'), freshKey('fan-c')];
    await subject.withTenant('t', async (tx) => {
      // Three calls whose fn sends nothing: three results deferred.
      await Promise.all(keys.map((key) => subject.runIdempotent.detailed(tx, key, async () => key)));
      // Then statements sent together: every one must run after the three results, in the transaction.
      await Promise.all([...keys.map((key) => subject.insertOrder(tx, `${key}-order`, 1)), subject.enqueue(tx, { topic: 'fan.out', payload: { keys } })]);
    });
    for (const key of keys) {
      const [record] = await fx.rows<{ status: string }>('idempotency_keys', `key = '${key}'`);
      expect(record?.status).toBe('completed');
      expect((await fx.orders('t')).filter((row) => row.key === `${key}-order`)).toHaveLength(1);
    }
  });

  it('a result refused before the next statement fails that statement; nothing commits', async () => {
    const key = freshKey('poisoned');
    const after = freshKey('after-poisoned');
    const error = await errorOf(
      subject.withTenant('t', async (tx) => {
        await subject.runIdempotent.detailed(tx, key, order(key));
        await subject.insertOrder(tx, after, 2);
      }),
    );
    expect(error).toMatchObject({ code: 'P0001' });
    expect((await fx.orders('t')).filter((row) => row.key === key || row.key === after)).toEqual([]);
    const next = freshKey('next');
    expect((await subject.withTenant('t', (tx) => subject.runIdempotent.detailed(tx, next, order(next)))).outcome).toBe('executed');
  });

  it('fn that COMMITs the transaction itself: TRANSACTION_MISUSE, the record failed, the connection clean', async () => {
    const key = freshKey('commit');
    const error = await errorOf(
      subject.withTenant('t', (tx) =>
        subject.runIdempotent.detailed(tx, key, async (inner) => {
          await execute(inner, 'COMMIT');
          return 'committed';
        }),
      ),
    );
    expect(error).toMatchObject({ code: 'TRANSACTION_MISUSE' });
    const [record] = await fx.rows<{ status: string }>('idempotency_keys', `key = '${key}'`);
    expect(record?.status).toBe('failed');
    const next = freshKey('next');
    expect((await subject.withTenant('t', (tx) => subject.runIdempotent.detailed(tx, next, order(next)))).outcome).toBe('executed');
  });

  it('a transaction that throws after the call keeps nothing of it; the key executes again', async () => {
    const key = freshKey('thrown');
    await expect(
      subject.withTenant('t', async (tx) => {
        await subject.runIdempotent.detailed(tx, key, order(key));
        throw new Error('after the call');
      }),
    ).rejects.toThrow('after the call');
    expect(await fx.rows('idempotency_keys', `key = '${key}'`)).toEqual([]);
    expect((await subject.withTenant('t', (tx) => subject.runIdempotent.detailed(tx, key, order(key)))).outcome).toBe('executed');
    expect((await fx.orders('t')).filter((row) => row.key === key)).toHaveLength(1);
  });

  // node-postgres clients hold BEGIN until the transaction's first statement (merging-pg-client.ts).
  it("the caller's own statement before any call runs in the transaction, under the tenant", async () => {
    const key = freshKey('own-first');
    await expect(
      subject.withTenant('t', async (tx) => {
        await subject.insertOrder(tx, key, 2);
        await subject.runIdempotent.detailed(tx, key, order(key));
        throw new Error('rolled back');
      }),
    ).rejects.toThrow('rolled back');
    expect((await fx.orders('t')).filter((row) => row.key === key)).toEqual([]);
    await subject.withTenant('t', async (tx) => {
      await subject.insertOrder(tx, key, 2);
      expect(await subject.countOrders(tx, key)).toBe(1);
      await subject.runIdempotent.detailed(tx, key, order(key));
    });
    expect((await fx.orders('t')).filter((row) => row.key === key)).toEqual([
      { tenant_id: 't', key, amount: 2 },
      { tenant_id: 't', key, amount: 1 },
    ]);
  });

  it('a transaction with no statement at all commits, and the connection serves the next call', async () => {
    expect(await subject.withTenant('t', async () => 'nothing')).toBe('nothing');
    await expect(subject.withTenant('t', async () => Promise.reject(new Error('nothing either')))).rejects.toThrow('nothing either');
    const key = freshKey('after-empty');
    expect((await subject.withTenant('t', (tx) => subject.runIdempotent.detailed(tx, key, order(key)))).outcome).toBe('executed');
  });

  it("a claim refused in the transaction's first round trip fails the call, commits nothing, and leaves the connection clean", async () => {
    const key = freshKey('refused-claim');
    let ran = false;
    const error = await errorOf(
      subject.withTenant('t', (tx) =>
        subject.runIdempotent.detailed(tx, key, async () => {
          ran = true;
        }),
      ),
    );
    expect(String((error as Error).message)).toContain('claim refused by the test');
    expect(ran).toBe(false);
    expect(await fx.rows('idempotency_keys', `key = '${key}'`)).toEqual([]);
    const next = freshKey('next');
    expect((await subject.withTenant('t', (tx) => subject.runIdempotent.detailed(tx, next, order(next)))).outcome).toBe('executed');
  });

  it('a tenant of quotes and backslashes reaches the database as written', async () => {
    const tenant = "o'brien\\ltd";
    const key = freshKey('quoted');
    await subject.withTenant(tenant, (tx) => subject.runIdempotent.detailed(tx, key, order(key)));
    expect((await fx.orders(tenant)).filter((row) => row.key === key)).toEqual([{ tenant_id: tenant, key, amount: 1 }]);
  });
});

describe('statements of the caller after a call, in the forms each library sends them', () => {
  const statusOf = 'SELECT status FROM once.idempotency_keys WHERE key = $1';

  it('node-postgres: callback, config object with rowMode, and a query error after the call', async () => {
    const subject = SUBJECTS['pg (Pool)']!(fx.appUrl, 1);
    try {
      await subject.withTenant('t', async () => {});
      const key = freshKey('forms');
      const seen = await subject.withTenant('t', async (client: pg.PoolClient) => {
        await subject.runIdempotent.detailed(client, key, async () => 'done');
        const viaCallback = await new Promise<string>((resolve, reject) =>
          client.query(statusOf, [key], (error: Error | undefined, result: pg.QueryResult) => (error ? reject(error) : resolve(result.rows[0].status))),
        );
        const other = freshKey('forms-other');
        await subject.runIdempotent.detailed(client, other, async () => 'done too');
        const viaConfig = await client.query({ text: statusOf, values: [other], rowMode: 'array' });
        return [viaCallback, viaConfig.rows];
      });
      expect(seen).toEqual(['completed', [['completed']]]);
      // A statement of the caller's that fails after a call: nothing of the transaction commits.
      const failing = freshKey('forms-failing');
      const error = await errorOf(
        subject.withTenant('t', async (client: pg.PoolClient) => {
          await subject.runIdempotent.detailed(client, failing, order(failing));
          await client.query('SELECT 1 / 0');
        }),
      );
      expect(error).toMatchObject({ code: '22012' });
      expect(await fx.rows('idempotency_keys', `key = '${failing}'`)).toEqual([]);
      expect((await fx.orders('t')).filter((row) => row.key === failing)).toEqual([]);
    } finally {
      await subject.close();
    }

    function order(k: string) {
      return async (client: pg.PoolClient) => {
        await subject.insertOrder(client, k, 1);
        return k;
      };
    }
  });

  it('Knex and Drizzle: a nested transaction (a savepoint) after a call, rolled back, keeps the call', async () => {
    for (const library of ['knex', 'drizzle (node-postgres)']) {
      const subject = SUBJECTS[library]!(fx.appUrl, 1);
      try {
        await subject.withTenant('t', async () => {});
        const key = freshKey('savepoint');
        await subject.withTenant('t', async (tx: { transaction(fn: (inner: unknown) => Promise<unknown>): Promise<unknown> }) => {
          await subject.runIdempotent.detailed(tx, key, async (inner) => {
            await subject.insertOrder(inner, key, 1);
            return key;
          });
          await tx
            .transaction(async (inner) => {
              await subject.insertOrder(inner, `${key}-inner`, 2);
              throw new Error('inner rolled back');
            })
            .catch(() => {});
        });
        const [record] = await fx.rows<{ status: string }>('idempotency_keys', `key = '${key}'`);
        expect(record?.status, library).toBe('completed');
        expect(
          (await fx.orders('t')).filter((row) => row.key.startsWith(key)).map((row) => row.key),
          library,
        ).toEqual([key]);
      } finally {
        await subject.close();
      }
    }
  });
});

describe('postgres.js: an error the caller caught inside fn', () => {
  it.each(['postgres.js', 'drizzle (postgres.js)'])('%s: is the one reported, not the stored result refused after it (25P02)', async (library) => {
    const subject = SUBJECTS[library]!(fx.appUrl, 1);
    try {
      await subject.withTenant('t', async () => {});
      const key = freshKey('swallowed');
      const error = await errorOf(
        subject.withTenant('t', (tx) =>
          subject.runIdempotent.detailed(tx, key, async (inner) => {
            await EXECUTE[library]!(inner, 'SELECT 1 / 0').catch(() => {});
            return 'ok';
          }),
        ),
      );
      expect(JSON.stringify(error, Object.getOwnPropertyNames(error))).toContain('22012');
      expect(await fx.rows('idempotency_keys', `key = '${key}'`)).toEqual([]);
    } finally {
      await subject.close();
    }
  });
});

describe('node-postgres: a Submittable (cursor, stream) sent after a call', () => {
  it("runs behind the call's stored result; if that failed, COMMIT reports it and nothing commits", async () => {
    const subject = SUBJECTS['pg (Pool)']!(fx.appUrl, 1);
    try {
      await subject.withTenant('t', async () => {});
      const run = async (key: string) =>
        subject.withTenant('t', async (client: pg.PoolClient) => {
          await subject.runIdempotent.detailed(client, key, async (inner) => {
            await subject.insertOrder(inner, key, 1);
            return key;
          });
          // pg.Query is node-postgres's own Submittable, as pg-cursor and pg-query-stream are.
          const query = client.query(new pg.Query('SELECT status FROM once.idempotency_keys WHERE key = $1', [key]));
          return new Promise<unknown>((resolve) => {
            const rows: unknown[] = [];
            query.on('row', (row: unknown) => rows.push(row));
            query.on('end', () => resolve(rows));
            query.on('error', (error: Error) => resolve(error));
          });
        });
      const fine = freshKey('submittable');
      expect(await run(fine)).toEqual([{ status: 'completed' }]);
      const poisoned = freshKey('poisoned');
      const error = await errorOf(run(poisoned));
      expect(error).toMatchObject({ code: 'P0001' });
      expect(await fx.rows('idempotency_keys', `key = '${poisoned}'`)).toEqual([]);
      expect((await fx.orders('t')).filter((row) => row.key === poisoned)).toEqual([]);
      const next = freshKey('next');
      expect((await subject.withTenant('t', (tx) => subject.runIdempotent.detailed(tx, next, async () => next))).outcome).toBe('executed');
    } finally {
      await subject.close();
    }
  });
});
