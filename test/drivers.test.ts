/**
 * The contract every database library's adapter keeps, run against each of them and against
 * Kysely (the root API) on the real Postgres, as a login that is neither superuser nor BYPASSRLS:
 * duplicates run fn once, failures and the caller's rollback leave nothing, tenants are isolated
 * by row-level security, enqueued events reach the relay, and logins that bypass RLS are refused.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DeliveryEvent, type Relay, startRelay } from '../src/index.ts';
import { quoteIdentifier } from './support/database-url.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { countedKysely, SUBJECTS, type Subject } from '../support/driver-subjects.ts';
import { errorOf } from './support/error-of.ts';
import { QUIET_RELAY } from './support/relay-fixture.ts';
import { startWireCounter } from '../support/wire-counter.ts';

let fx: AppFixture;
let relay: Relay;
let bypassUrl: string;
/** An application login whose transactions default to REPEATABLE READ. */
let repeatableReadUrl: string;
const bypassRole = `once_bypass_${randomBytes(4).toString('hex')}`;
const delivered = new Map<string, DeliveryEvent>();

beforeAll(async () => {
  // The Kysely pool of the fixture is not used here: each library opens its own.
  fx = await createAppFixture(1);
  relay = await startRelay({
    ...QUIET_RELAY,
    connectionString: await fx.database.createLoginRole('relay'),
    sinks: { '>': async (event) => void delivered.set(event.dedupeId, event) },
  });
  const password = randomBytes(12).toString('hex');
  await fx.database.admin.query(
    `CREATE ROLE ${quoteIdentifier(bypassRole)} LOGIN NOSUPERUSER BYPASSRLS PASSWORD '${password}';
     GRANT ${quoteIdentifier((await fx.database.roles())!.app)} TO ${quoteIdentifier(bypassRole)}`,
  );
  const url = new URL(fx.database.adminUrl);
  url.username = bypassRole;
  url.password = password;
  bypassUrl = url.toString();
  repeatableReadUrl = await fx.database.createLoginRole('app');
  await fx.database.admin.query(
    `ALTER ROLE ${quoteIdentifier(decodeURIComponent(new URL(repeatableReadUrl).username))} SET default_transaction_isolation = 'repeatable read'`,
  );
});
afterAll(async () => {
  await relay?.stop();
  await fx?.close();
  await fx?.database.admin.query(`DROP ROLE IF EXISTS ${quoteIdentifier(bypassRole)}`).catch(() => {});
});

let unique = 0;
const freshKey = (label: string) => `${label}-${++unique}-${Date.now()}`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const storedKeys = (key: string) => fx.rows<{ tenant_id: string; status: string }>('idempotency_keys', `key = '${key}'`);
const storedEvents = (topic: string) => fx.rows('outbox_events', `topic = '${topic}'`);

describe.each(Object.keys(SUBJECTS))('%s', (library) => {
  let subject: Subject;
  beforeAll(() => {
    // 32 duplicates may all wait at once, plus one connection for the call they wait for.
    subject = SUBJECTS[library]!(fx.appUrl, 33);
  });
  afterAll(async () => {
    await subject?.close();
  });

  it('runs fn once for 32 concurrent duplicates: one business row, 32 equal results', async () => {
    const key = freshKey('storm');
    let calls = 0;
    const fn = async (tx: unknown) => {
      calls += 1;
      await subject.insertOrder(tx, key, 100);
      await sleep(150); // keep the first call open while the duplicates arrive
      return { orderId: `ord_${key}`, at: new Date('2026-01-02T03:04:05.678Z') };
    };
    const results = await Promise.all(
      Array.from({ length: 32 }, () => subject.withTenant('tenant-a', (tx) => subject.runIdempotent.detailed(tx, key, fn, { maxWaiting: 32 }))),
    );
    expect(calls).toBe(1);
    expect((await fx.orders('tenant-a')).filter((row) => row.key === key)).toHaveLength(1);
    expect(results.filter((result) => result.outcome === 'executed')).toHaveLength(1);
    for (const result of results) expect(result.value).toStrictEqual({ orderId: `ord_${key}`, at: '2026-01-02T03:04:05.678Z' });
  });

  it('leaves nothing when fn throws, and a retry executes afresh', async () => {
    const key = freshKey('throws');
    const topic = `${key}.event`;
    const failing = async (tx: unknown) => {
      await subject.insertOrder(tx, key, 1);
      await subject.enqueue(tx, { topic, payload: { key } });
      throw new Error('card declined');
    };
    const error = await errorOf(subject.withTenant('tenant-a', (tx) => subject.runIdempotent.detailed(tx, key, failing)));
    expect(error.message).toBe('card declined');
    expect((await fx.orders()).filter((row) => row.key === key)).toEqual([]);
    expect(await storedKeys(key)).toEqual([]);
    expect(await storedEvents(topic)).toEqual([]);
    const retry = await subject.withTenant('tenant-a', (tx) => subject.runIdempotent.detailed(tx, key, async () => 'ok'));
    expect(retry).toMatchObject({ value: 'ok', outcome: 'executed' });
  });

  it("undoes the claim, the rows and the events when the caller's transaction rolls back", async () => {
    const key = freshKey('outer');
    const topic = `${key}.event`;
    const error = await errorOf(
      subject.withTenant('tenant-a', async (tx) => {
        await subject.runIdempotent.detailed(tx, key, async (inner: unknown) => {
          await subject.insertOrder(inner, key, 5);
          await subject.enqueue(inner, { topic, payload: { key } });
          return 'done';
        });
        throw new Error('the caller changed its mind');
      }),
    );
    expect(error.message).toBe('the caller changed its mind');
    expect((await fx.orders()).filter((row) => row.key === key)).toEqual([]);
    expect(await storedKeys(key)).toEqual([]);
    expect(await storedEvents(topic)).toEqual([]);
  });

  it("isolates tenants: the same key is each tenant's own, and each sees only its own rows", async () => {
    const key = freshKey('tenants');
    let calls = 0;
    const fn = async (tx: unknown) => {
      calls += 1;
      await subject.insertOrder(tx, key, calls);
      return { seen: await subject.countOrders(tx, key) };
    };
    expect(await subject.withTenant('tenant-a', (tx) => subject.runIdempotent.detailed(tx, key, fn))).toMatchObject({
      value: { seen: 1 },
      outcome: 'executed',
    });
    expect(await subject.withTenant('tenant-b', (tx) => subject.runIdempotent.detailed(tx, key, fn))).toMatchObject({
      value: { seen: 1 },
      outcome: 'executed',
    });
    expect(await subject.withTenant('tenant-b', (tx) => subject.runIdempotent.detailed(tx, key, fn))).toMatchObject({ outcome: 'replayed' });
    expect(calls).toBe(2);
    expect((await storedKeys(key)).map((row) => row.tenant_id)).toEqual(['tenant-a', 'tenant-b']);
    expect(
      (await fx.orders())
        .filter((row) => row.key === key)
        .map((row) => row.tenant_id)
        .sort(),
    ).toEqual(['tenant-a', 'tenant-b']);
  });

  it('has an event enqueued in the transaction delivered by the relay, under its derived dedupe id', async () => {
    const key = freshKey('event');
    const topic = `${key}.event`;
    const { value } = await subject.withTenant('tenant-a', (tx) =>
      subject.runIdempotent.detailed(tx, key, async (inner: unknown) => subject.enqueue(inner, { topic, payload: { key, amount: 7 } })),
    );
    const { dedupeId } = value as { dedupeId: string };
    for (let waited = 0; !delivered.has(dedupeId) && waited < 30_000; waited += 50) await sleep(50);
    expect(delivered.get(dedupeId)).toMatchObject({ topic, tenantId: 'tenant-a', payload: { key, amount: 7 } });
  });

  it('runs receiveOnce and runIdempotentExternal through the same library', async () => {
    const messageId = freshKey('message');
    let handled = 0;
    const handle = () =>
      subject.receiveOnce({ messageId, tenant: 'tenant-a' }, async (tx) => {
        handled += 1;
        await subject.insertOrder(tx, messageId, 3);
        return 'stored';
      });
    expect([await handle(), await handle()]).toEqual(['stored', 'stored']);
    expect(handled).toBe(1);
    const key = freshKey('external');
    let effects = 0;
    const effect = async () => ++effects;
    expect([await subject.runIdempotentExternal('tenant-a', key, effect), await subject.runIdempotentExternal('tenant-a', key, effect)]).toEqual([1, 1]);
  });

  it('refuses to run outside a transaction: the database handle is not one', async () => {
    const error = await errorOf(subject.runIdempotent.detailed(subject.handle, freshKey('handle'), async () => 1));
    expect(error.code).toBe('NOT_IN_TRANSACTION');
    expect((await errorOf(subject.enqueue(subject.handle, { topic: 't', payload: 1 }))).code).toBe('NOT_IN_TRANSACTION');
  });

  it('refuses superuser and BYPASSRLS logins, as the root API does', async () => {
    for (const url of [fx.database.adminUrl, bypassUrl]) {
      const bypassing = SUBJECTS[library]!(url, 1);
      try {
        let ran = false;
        const error = await errorOf(bypassing.withTenant('tenant-a', async () => (ran = true)));
        expect(error.code).toBe('RLS_BYPASS');
        expect(ran).toBe(false);
      } finally {
        await bypassing.close();
      }
    }
  });
});

/** The libraries whose transaction withTenant opens (the others join the caller's). */
const OPENING = Object.keys(SUBJECTS).filter((name) => !name.includes("the caller's own transaction"));

describe.each(OPENING)('%s: the transaction withTenant opens', (library) => {
  it('is READ COMMITTED even where the login defaults to REPEATABLE READ, call after call', async () => {
    const subject = SUBJECTS[library]!(repeatableReadUrl, 1);
    try {
      for (let call = 0; call < 3; call += 1) {
        const key = freshKey('isolation');
        const { value } = await subject.withTenant('tenant-a', (tx) =>
          subject.runIdempotent.detailed(tx, key, async (inner: unknown) => {
            await subject.insertOrder(inner, key, 1);
            return subject.isolation(inner);
          }),
        );
        expect(value).toBe('read committed');
        expect((await fx.orders('tenant-a')).filter((row) => row.key === key)).toHaveLength(1);
      }
    } finally {
      await subject.close();
    }
  });

  it("costs pg-once's own statements of a fresh call the round trips they cost through Kysely", async () => {
    const server = new URL(fx.appUrl);
    const counter = await startWireCounter({ host: server.hostname, port: Number(server.port || 5432) });
    const roundTrips = async (name: string) => {
      const url = new URL(fx.appUrl);
      url.hostname = '127.0.0.1';
      url.port = String(counter.port);
      // Kysely's are counted on its client: through the counting proxy its path merges as behind a pooler.
      const onClient = { roundTrips: 0 };
      const subject = name === 'kysely' ? countedKysely(fx.appUrl, onClient) : SUBJECTS[name]!(url.toString(), 1);
      try {
        // fn writes nothing: its own statements cost what the library makes them cost (Drizzle over
        // postgres.js describes each one first), with or without pg-once.
        const call = (key: string) => subject.withTenant('tenant-a', (tx) => subject.runIdempotent.detailed(tx, key, async () => key));
        // The connection, the handle's first (role-checking) transaction, and a second one: a
        // library that prepares statements describes each on its first use.
        await call(freshKey('warm-up'));
        await call(freshKey('warm-up'));
        counter.reset();
        onClient.roundTrips = 0;
        await call(freshKey('counted'));
        return name === 'kysely' ? onClient.roundTrips : counter.count.roundTrips;
      } finally {
        await subject.close();
      }
    };
    try {
      const kysely = await roundTrips('kysely');
      // BEGIN, the tenant's statement and the claim in one round trip; the stored result with
      // COMMIT in another, all prepared (pipelined-query.ts): Kysely's connection (held BEGIN,
      // merging-connection.ts) and the transactions on node-postgres clients
      // (merging-pg-client.ts: pg-once/pg, Knex, Drizzle over node-postgres) alike. postgres.js
      // (alone or under Drizzle) sends BEGIN from its own code and pipelines the rest
      // (pipelined-statements.ts): one more. Prisma sends BEGIN and COMMIT from its engine.
      expect(kysely).toBe(2);
      const pipelined = ['kysely', 'pg (Pool)', 'knex', 'drizzle (node-postgres)'];
      const postgresJs = ['postgres.js', 'drizzle (postgres.js)'];
      expect(await roundTrips(library)).toBe(pipelined.includes(library) ? 2 : postgresJs.includes(library) ? 3 : 5);
    } finally {
      await counter.close();
    }
  });
});
