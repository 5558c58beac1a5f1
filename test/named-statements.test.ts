/**
 * pg-once's statements on node-postgres connections (pg-once/pg, Kysely's PostgresDialect, and
 * Knex's and Drizzle's connections underneath) are named, parsed once per connection, only where the connection is
 * its server backend's own (src/drivers/native-query.ts): through PgBouncer in transaction mode
 * (1.18: no protocol-level prepared statements), many clients sharing one server connection, they
 * stay unnamed and every call works; a connection whose statements were deallocated fails one
 * call, and the next ones prepare again.
 *
 * The PgBouncer part is skipped without PgBouncer, unless CI or ONCE_REQUIRE_SERVICES is set.
 */
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as viaPg from '../src/drivers/pg.ts';
import { runIdempotent, withTenant } from '../src/index.ts';
import { SUBJECTS } from '../support/driver-subjects.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { errorOf } from './support/error-of.ts';
import { type Pgbouncer, pgbouncerAvailable, pgbouncerRequired, requirePgbouncer, startPgbouncer } from './support/pgbouncer.ts';

let fx: AppFixture;
beforeAll(async () => {
  fx = await createAppFixture(1);
});
afterAll(async () => {
  await fx?.close();
});

let unique = 0;
const freshKey = (label: string) => `${label}-${++unique}-${Date.now()}`;

function quietPool(url: string, max: number): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max });
  pool.on('error', () => {});
  pool.on('connect', (client) => client.on('error', () => {}));
  return pool;
}

const order = (client: pg.ClientBase, key: string) => async () => {
  await client.query('INSERT INTO orders (key, amount) VALUES ($1, 100)', [key]);
  return { orderId: key };
};
const preparedOnce = async (client: pg.ClientBase) =>
  (await client.query<{ name: string }>("SELECT name FROM pg_prepared_statements WHERE name LIKE 'once\\_%' ORDER BY name")).rows.map((row) => row.name);

/** After `deallocate` (DEALLOCATE ALL on the pool's one connection): one call fails with 26000, the next ones prepare again and run once. */
async function expectRecoveryFromDeallocate(call: (key: string) => Promise<unknown>, deallocate: () => Promise<unknown>): Promise<void> {
  await deallocate();
  expect(((await errorOf(call(freshKey('gone')))) as { code?: string }).code).toBe('26000');
  const key = freshKey('again');
  await expect(call(key)).resolves.toEqual({ orderId: key });
  await expect(call(key)).resolves.toEqual({ orderId: key });
  expect((await fx.orders('tenant-a')).filter((row) => row.key === key)).toHaveLength(1);
}

describe('on a direct connection', () => {
  it("names pg-once's statements after the connection's first call, and keeps the round trips", async () => {
    const pool = quietPool(fx.appUrl, 1);
    try {
      for (let call = 0; call < 3; call += 1) {
        const key = freshKey('direct');
        await viaPg.withTenant(pool, 'tenant-a', (client) => viaPg.runIdempotent(client, key, order(client, key)));
      }
      const client = await pool.connect();
      try {
        // The claim and the stored result; the tenant's statement carried the check on the first
        // call and then goes with BEGIN in the simple protocol (pg.ts), which prepares nothing.
        expect((await preparedOnce(client)).length).toBeGreaterThanOrEqual(2);
      } finally {
        client.release();
      }
    } finally {
      await pool.end();
    }
  });

  it('checks and names on every connection of a Pool, not only the first one withTenant used', async () => {
    const pool = quietPool(fx.appUrl, 4);
    try {
      // Four calls held open at once take the pool's four connections; then more calls on each.
      for (let round = 0; round < 3; round += 1) {
        let arrived = 0;
        let release!: () => void;
        const barrier = new Promise<void>((resolve) => {
          release = resolve;
        });
        await Promise.all(
          Array.from({ length: 4 }, async () => {
            const key = freshKey('pooled');
            await viaPg.withTenant(pool, 'tenant-a', (client) =>
              viaPg.runIdempotent(client, key, async () => {
                if (++arrived === 4) release();
                await barrier;
                return order(client, key)();
              }),
            );
          }),
        );
      }
      const clients = await Promise.all(Array.from({ length: 4 }, () => pool.connect()));
      try {
        expect(new Set(clients.map((client) => (client as unknown as { processID: number }).processID)).size).toBe(4);
        for (const client of clients) expect((await preparedOnce(client)).length).toBeGreaterThanOrEqual(2);
      } finally {
        for (const client of clients) client.release();
      }
    } finally {
      await pool.end();
    }
  });

  it('fails one call on a connection whose statements were deallocated, and prepares them again for the next', async () => {
    const pool = quietPool(fx.appUrl, 1);
    try {
      const call = (key: string) => viaPg.withTenant(pool, 'tenant-a', (client) => viaPg.runIdempotent(client, key, order(client, key)));
      await call(freshKey('warm'));
      await call(freshKey('warm'));
      await expectRecoveryFromDeallocate(call, async () => {
        const client = await pool.connect();
        await client.query('DEALLOCATE ALL');
        client.release();
      });
    } finally {
      await pool.end();
    }
  });
});

describe('Kysely on a direct connection', () => {
  it('prepares pg-once statements once; a connection whose statements were deallocated fails one call, and the next ones prepare again', async () => {
    const pool = quietPool(fx.appUrl, 1);
    const db = new Kysely<any>({ dialect: new PostgresDialect({ pool }) });
    try {
      const call = (key: string) =>
        withTenant(db, 'tenant-a', (tx) =>
          runIdempotent(tx, key, async (t) => {
            await sql`INSERT INTO orders (key, amount) VALUES (${key}, 100)`.execute(t);
            return { orderId: key };
          }),
        );
      await call(freshKey('warm'));
      await call(freshKey('warm'));
      await call(freshKey('warm'));
      const named = (await sql<{ name: string }>`SELECT name FROM pg_prepared_statements WHERE name LIKE 'once\_%'`.execute(db)).rows;
      expect(named.length).toBeGreaterThanOrEqual(4); // BEGIN, the tenant's statement, the claim, the stored result
      await expectRecoveryFromDeallocate(call, () => sql`DEALLOCATE ALL`.execute(db));
    } finally {
      await db.destroy();
    }
  });
});

describe.skipIf(!pgbouncerAvailable && !pgbouncerRequired)('through PgBouncer in transaction mode', () => {
  let bouncer: Pgbouncer;
  beforeAll(async () => {
    requirePgbouncer();
    bouncer = await startPgbouncer({ databases: { solo: fx.appUrl }, poolSize: 1 });
  });
  afterAll(async () => {
    await bouncer?.stop();
  });

  it.each(['kysely', 'pg (Pool)', 'knex', 'drizzle (node-postgres)'])(
    '%s: many clients on one server connection, statements unnamed, every call once',
    async (name) => {
      const subject = SUBJECTS[name]!(bouncer.url('solo'), 8);
      try {
        const keys = Array.from({ length: 6 }, () => freshKey(name.replace(/\W+/g, '-')));
        // Each key three times, concurrently: eight clients take turns on the one server connection.
        const results = await Promise.all(
          [...keys, ...keys, ...keys].map((key) =>
            subject.withTenant('tenant-b', (tx) =>
              subject.runIdempotent.detailed(tx, key, async (inner: unknown) => {
                await subject.insertOrder(inner, key, 100);
                return { orderId: key };
              }),
            ),
          ),
        );
        expect(results.filter((result) => result.outcome === 'executed')).toHaveLength(keys.length);
        const stored = await fx.orders('tenant-b');
        for (const key of keys) expect(stored.filter((row) => row.key === key)).toHaveLength(1);
        const server = new pg.Client({ connectionString: bouncer.url('solo') });
        await server.connect();
        try {
          expect(await preparedOnce(server)).toEqual([]);
        } finally {
          await server.end();
        }
      } finally {
        await subject.close();
      }
    },
  );
});
