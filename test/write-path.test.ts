/**
 * The write path's round trips (issue 18): on Kysely over node-postgres, withTenant holds BEGIN
 * and sends it, the tenant's statement and the claim in one round trip, and a call's result with
 * COMMIT, all prepared; or right before the transaction's next statement
 * (src/drivers/merging-connection.ts). Through a proxy (the backend is not known to be the
 * connection's own) the same merges go as simple-protocol queries. What that must not change: a
 * statement after the call sees its record completed, a connection that takes one statement per
 * query still works, and values reach the database exactly as written whatever they hold.
 */
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enqueue, runIdempotent, withTenant } from '../src/index.ts';
import { sqlLiteral } from '../src/internal/inline-values.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { type BlackholeProxy, startBlackholeProxy } from './support/blackhole-proxy.ts';

let fx: AppFixture;
beforeAll(async () => {
  fx = await createAppFixture(4);
});
afterAll(async () => {
  await fx?.close();
});

let unique = 0;
const freshKey = (label: string) => `${label}-${++unique}-${Date.now()}`;

/**
 * A Kysely as the app role whose connections count the queries they are sent (round trips): a
 * query object (pg-once's pipelined statements) counts once, as the statements it prints.
 * `proxy`: connect through a TCP proxy.
 */
function countingKysely(counter: { queries: string[] }, options: { extendedOnly?: boolean; max?: number; proxy?: BlackholeProxy } = {}): Kysely<any> {
  const pool = new pg.Pool({ connectionString: options.proxy ? options.proxy.url(fx.appUrl) : fx.appUrl, max: options.max ?? 1 });
  // The test database is dropped WITH (FORCE) after the pool ends: a connection terminated then is expected.
  pool.on('error', () => {});
  pool.on('connect', (client) => {
    client.on('error', () => {});
    const query = client.query.bind(client) as (...args: unknown[]) => unknown;
    (client as { query: unknown }).query = (text: unknown, values?: unknown, callback?: unknown) => {
      if (typeof text === 'string') counter.queries.push(text);
      else if (typeof (text as { submit?: unknown } | null)?.submit === 'function') counter.queries.push(String(text));
      // The extended protocol for every query, as some Kysely dialects' drivers send them: several
      // statements in one query are then refused.
      if (options.extendedOnly && typeof text === 'string') return query({ text, values: values ?? [], queryMode: 'extended' }, callback);
      return query(text, values, callback);
    };
  });
  return new Kysely<any>({ dialect: new PostgresDialect({ pool }) });
}

const order = (key: string) => async (tx: Parameters<Parameters<typeof withTenant>[2]>[0]) => {
  await sql`INSERT INTO orders (key, amount) VALUES (${key}, 1)`.execute(tx);
  return { key };
};

describe('withTenant and runIdempotent on Kysely: round trips', () => {
  it('a fresh call is BEGIN with the tenant and the claim, fn, and the result with COMMIT; a replay is two', async () => {
    const counter = { queries: [] as string[] };
    const db = countingKysely(counter);
    try {
      // The handle's role; then the connection's backend check, and its statements prepared one by one.
      await withTenant(db, 't', async () => {});
      await withTenant(db, 't', (tx) => runIdempotent(tx, freshKey('warm-up'), order(freshKey('warm-up'))));
      const key = freshKey('trips');
      counter.queries = [];
      await withTenant(db, 't', (tx) => runIdempotent(tx, key, order(key)));
      expect(counter.queries).toHaveLength(3);
      expect(counter.queries[0]).toMatch(/^start transaction isolation level read committed; SELECT set_config\('once\.tenant_id'[\s\S]*once\.claim_key/);
      expect(counter.queries[0]).not.toContain("'t'"); // prepared: the tenant is a parameter, not a literal
      expect(counter.queries[2]).toMatch(/UPDATE once\.idempotency_keys[\s\S]*; commit$/);
      counter.queries = [];
      expect(await withTenant(db, 't', (tx) => runIdempotent(tx, key, order(key)))).toEqual({ key });
      expect(counter.queries).toHaveLength(2);
      expect(await fx.orders('t')).toContainEqual({ tenant_id: 't', key, amount: 1 });
      // A transaction that sends nothing never reaches the server.
      counter.queries = [];
      await withTenant(db, 't', async () => {});
      expect(counter.queries).toEqual([]);
    } finally {
      await db.destroy();
    }
  });

  it("the caller's statement before any call runs in the transaction, under the tenant", async () => {
    const counter = { queries: [] as string[] };
    const db = countingKysely(counter);
    try {
      await withTenant(db, 't', (tx) => runIdempotent(tx, freshKey('warm-up'), order(freshKey('warm-up'))));
      const key = freshKey('caller-first');
      const [seen] = await withTenant(db, 't', async (tx) => {
        const { rows } = await sql<{
          tenant: string;
          xid: string;
        }>`SELECT current_setting('once.tenant_id') AS tenant, txid_current_if_assigned()::text AS xid`.execute(tx);
        await runIdempotent(tx, key, order(key));
        return rows;
      });
      expect(seen?.tenant).toBe('t');
      await expect(
        withTenant(db, 't', async (tx) => {
          await sql`INSERT INTO orders (key, amount) VALUES (${`${key}-rolled-back`}, 1)`.execute(tx);
          throw new Error('rolled back');
        }),
      ).rejects.toThrow('rolled back');
      expect((await fx.orders('t')).filter((row) => row.key === `${key}-rolled-back`)).toEqual([]);
    } finally {
      await db.destroy();
    }
  });

  it("with Kysely's log set, every statement the log function sees is text (the merged path)", async () => {
    const logged: unknown[] = [];
    const pool = new pg.Pool({ connectionString: fx.appUrl, max: 1 });
    pool.on('error', () => {});
    const db = new Kysely<any>({
      dialect: new PostgresDialect({ pool }),
      log: (event) => {
        logged.push(event.query.sql);
      },
    });
    try {
      for (let i = 0; i < 3; i += 1) {
        const key = freshKey('logged');
        expect(await withTenant(db, 't', (tx) => runIdempotent(tx, key, order(key)))).toEqual({ key });
        expect(await withTenant(db, 't', (tx) => runIdempotent(tx, key, order(key)))).toEqual({ key });
      }
      expect(logged.length).toBeGreaterThan(0);
      expect(logged.filter((sqlText) => typeof sqlText !== 'string')).toEqual([]);
      expect(logged.some((sqlText) => /^start transaction isolation level read committed; SELECT set_config/.test(sqlText as string))).toBe(true);
    } finally {
      await db.destroy();
    }
  });

  it('through a proxy: BEGIN with the tenant, the result with COMMIT, as simple-protocol queries', async () => {
    const server = new URL(fx.appUrl);
    const proxy = await startBlackholeProxy({ host: server.hostname, port: Number(server.port || 5432) });
    const counter = { queries: [] as string[] };
    const db = countingKysely(counter, { proxy });
    try {
      await withTenant(db, 't', async () => {}); // the handle's role is learned on its first transaction
      await withTenant(db, 't', async () => {}); // the connection's backend check
      const key = freshKey('trips');
      counter.queries = [];
      await withTenant(db, 't', (tx) => runIdempotent(tx, key, order(key)));
      expect(counter.queries).toHaveLength(4);
      expect(counter.queries[0]).toMatch(/^start transaction isolation level read committed; SELECT set_config\('once\.tenant_id'/);
      expect(counter.queries[3]).toMatch(/UPDATE once\.idempotency_keys[\s\S]*; commit$/);
      counter.queries = [];
      expect(await withTenant(db, 't', (tx) => runIdempotent(tx, key, order(key)))).toEqual({ key });
      expect(counter.queries).toHaveLength(3);
      expect(await fx.orders('t')).toContainEqual({ tenant_id: 't', key, amount: 1 });
    } finally {
      await db.destroy();
      await proxy.close();
    }
  });

  it('a statement after the call, in the same transaction, sees its record completed', async () => {
    const key = freshKey('after');
    const other = freshKey('after-other');
    const statuses = await withTenant(fx.app, 't', async (tx) => {
      await runIdempotent(tx, key, order(key));
      const { rows } = await sql<{ status: string }>`SELECT status FROM once.idempotency_keys WHERE key = ${key}`.execute(tx);
      // A second call in the same transaction: its claim goes after the first's store.
      await runIdempotent(tx, other, async (t) => {
        await enqueue(t, { topic: 'after', payload: { other } });
        return other;
      });
      return rows.map((row) => row.status);
    });
    expect(statuses).toEqual(['completed']);
    for (const stored of [key, other]) {
      const [record] = await fx.rows<{ status: string }>('idempotency_keys', `key = '${stored}'`);
      expect(record?.status).toBe('completed');
    }
  });

  it('nothing of a call commits when the transaction throws after it returned', async () => {
    const key = freshKey('thrown');
    await expect(
      withTenant(fx.app, 't', async (tx) => {
        await runIdempotent(tx, key, order(key));
        throw new Error('after the call');
      }),
    ).rejects.toThrow('after the call');
    expect(await fx.rows('idempotency_keys', `key = '${key}'`)).toEqual([]);
    expect((await fx.orders('t')).filter((row) => row.key === key)).toEqual([]);
    expect(await withTenant(fx.app, 't', (tx) => runIdempotent(tx, key, order(key)))).toEqual({ key });
  });

  it('works on connections that take one statement per query (the extended protocol only)', async () => {
    const server = new URL(fx.appUrl);
    const proxy = await startBlackholeProxy({ host: server.hostname, port: Number(server.port || 5432) });
    const counter = { queries: [] as string[] };
    // Through the proxy: the merges are simple-protocol queries, which such a connection refuses.
    const db = countingKysely(counter, { extendedOnly: true, proxy });
    try {
      for (let i = 0; i < 3; i += 1) {
        const key = freshKey('extended');
        expect(await withTenant(db, 't', (tx) => runIdempotent(tx, key, order(key)))).toEqual({ key });
        expect(await withTenant(db, 't', (tx) => runIdempotent(tx, key, order(key)))).toEqual({ key });
        const [record] = await fx.rows<{ status: string }>('idempotency_keys', `key = '${key}'`);
        expect(record?.status).toBe('completed');
      }
      // After the one refusal, BEGIN and the tenant go one statement each, as before.
      counter.queries = [];
      await withTenant(db, 't', async () => {});
      expect(counter.queries).toHaveLength(3);
    } finally {
      await db.destroy();
      await proxy.close();
    }
  });

  it('on a direct connection, nothing is sent as several statements in one simple-protocol query', async () => {
    const counter = { queries: [] as string[] };
    const db = countingKysely(counter, { extendedOnly: true });
    try {
      for (let i = 0; i < 3; i += 1) {
        const key = freshKey('direct-extended');
        expect(await withTenant(db, 't', (tx) => runIdempotent(tx, key, order(key)))).toEqual({ key });
        expect(await withTenant(db, 't', (tx) => runIdempotent(tx, key, order(key)))).toEqual({ key });
        await withTenant(db, 't', async (tx) => {
          await sql`SELECT 1`.execute(tx); // the caller's statement first: BEGIN and the tenant go ahead of it
          await runIdempotent(tx, `${key}-after`, async () => 'after');
        });
      }
      const [record] = await fx.rows<{ status: string }>('idempotency_keys', `key = '${freshKey('none')}'`);
      expect(record).toBeUndefined();
      // Strings are what the connection refuses with several statements; the pipelined queries are objects.
      expect(counter.queries.length).toBeGreaterThan(0);
    } finally {
      await db.destroy();
    }
  });
});

describe('values inlined as literals', () => {
  const texts = ["it's", 'back\\slash', "\\'; DROP TABLE orders; --", 'ünïcødé 🎉', '$1 $$ $tag$', '{"a":"\\"q\\"","b":"\\\\n"}', ''];

  it.each(['on', 'off'])('read back exactly as written, standard_conforming_strings %s', async (setting) => {
    const client = new pg.Client({ connectionString: fx.appUrl });
    await client.connect();
    try {
      await client.query(`SET standard_conforming_strings = ${setting}`);
      for (const text of texts) {
        const { rows } = await client.query(`SELECT ${sqlLiteral(text)} AS value`);
        expect(rows[0].value).toBe(text);
      }
      const bytes = Buffer.from([0, 1, 0x27, 0x5c, 255]);
      const { rows } = await client.query(
        `SELECT ${sqlLiteral(bytes)} AS value, ${sqlLiteral(null)} AS none, ${sqlLiteral(1.5)} AS n, ${sqlLiteral(true)} AS b`,
      );
      expect(rows[0]).toEqual({ value: bytes, none: null, n: '1.5', b: true });
    } finally {
      await client.end();
    }
  });

  it('a result holding quotes and backslashes is stored and replayed byte for byte', async () => {
    const key = freshKey('quotes');
    const value = { text: texts, nested: { "k'ey": 'v\\al' } };
    const first = await withTenant(fx.app, 't', (tx) => runIdempotent(tx, key, async () => value));
    const replay = await withTenant(fx.app, 't', (tx) => runIdempotent(tx, key, async () => 'not run'));
    expect(first).toEqual(value);
    expect(replay).toEqual(value);
    const [record] = await fx.rows<{ result_text: string }>('idempotency_keys', `key = '${key}'`);
    expect(record?.result_text).toBe(JSON.stringify(value));
  });
});

describe('a duplicate of a call in flight in this process', () => {
  it('waits in its first claim (one claim statement, not two) and is recorded as waited', async () => {
    const counter = { queries: [] as string[] };
    const db = countingKysely(counter, { max: 2 });
    try {
      await withTenant(db, 't', async () => {}); // the handle's role, and the statement timeout its claims report
      await withTenant(db, 't', (tx) => runIdempotent(tx, freshKey('warm-up'), async () => 'warm'));
      const key = freshKey('in-flight');
      let entered!: () => void;
      const inside = new Promise<void>((resolve) => (entered = resolve));
      let finish!: () => void;
      const held = new Promise<void>((resolve) => (finish = resolve));
      const first = withTenant(db, 't', (tx) =>
        runIdempotent(tx, key, async () => {
          entered();
          await held;
          return 'first';
        }),
      );
      await inside;
      counter.queries = [];
      const duplicate = withTenant(db, 't', (tx) => runIdempotent.detailed(tx, key, async () => 'duplicate ran', { waitMs: 30_000 }));
      // The duplicate waits on the key's advisory lock, which the first call's transaction holds.
      await expect
        .poll(async () => (await fx.database.admin.query("SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")).rows[0].n, {
          timeout: 10_000,
        })
        .toBe(1);
      finish();
      expect(await first).toBe('first');
      expect(await duplicate).toEqual({ value: 'first', outcome: 'replayed', waited: true });
      expect(counter.queries.filter((text) => text.includes('once.claim_key'))).toHaveLength(1);
      const { rows } = await fx.database.admin.query<{ kind: string }>('SELECT kind FROM once.dedupe_audit WHERE key = $1 ORDER BY id', [key]);
      expect(rows.map((row) => row.kind)).toEqual(['waited']);
    } finally {
      await db.destroy();
    }
  });
});
