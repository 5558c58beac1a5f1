/**
 * Every code of README's error table reaches a caller as a coded OnceError, through the public
 * API, and the transaction misuses that used to surface as raw SQLSTATEs (25P02, 25001), as
 * Kysely's uncoded AbortedTransactionError, or as a wait that could never succeed, are coded at
 * once.
 */
import { readFileSync } from 'node:fs';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  CallAbortedError,
  OnceError,
  ReentrantCallError,
  runIdempotent,
  runIdempotentExternal,
  setRateLimit,
  StoredCallError,
  TransactionMisuseError,
  verifyWebhook,
  withTenant,
} from '../src/index.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { databaseUrlFor, quoteIdentifier } from './support/database-url.ts';
import { errorOf } from './support/error-of.ts';
import { createTestDatabase } from './support/test-database.ts';

let fx: AppFixture;
beforeAll(async () => {
  fx = await createAppFixture(8);
});
afterAll(async () => {
  await fx?.close();
});

let unique = 0;
const freshKey = (label: string) => `${label}-${++unique}-${Date.now()}`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const call = (tenant: string, key: string, fn: () => Promise<unknown> = async () => 'ok', options = {}) =>
  withTenant(fx.app, tenant, (tx) => runIdempotent(tx, key, fn, options));

describe('transaction misuse is coded, at once', () => {
  it('the same key inside its own call: REENTRANT_CALL, without waiting', async () => {
    const key = freshKey('nested');
    const error = await errorOf(
      withTenant(fx.app, 't', (tx) =>
        // waitMs of ten minutes: waiting for itself would time the test out.
        runIdempotent(tx, key, () => runIdempotent(tx, key, async () => 'inner', { waitMs: 600_000 }), { waitMs: 600_000 }),
      ),
    );
    expect(error).toBeInstanceOf(ReentrantCallError);
    expect(error).toMatchObject({ code: 'REENTRANT_CALL', retryable: false });
    // Nothing committed: the key runs normally afterwards.
    expect(await call('t', key)).toBe('ok');
  });

  it('the same key twice at once in one transaction (not nested): REENTRANT_CALL from the database', async () => {
    const key = freshKey('parallel');
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const results = await withTenant(fx.app, 't', async (tx) => {
      const first = runIdempotent(tx, key, async () => {
        await held;
        return 'first';
      });
      await sleep(20);
      const second = await errorOf(runIdempotent(tx, key, async () => 'second', { waitMs: 600_000 }));
      release();
      return [await first, second];
    });
    expect(results[0]).toBe('first');
    expect(results[1]).toMatchObject({ code: 'REENTRANT_CALL' });
  });

  it('fn that COMMITs the transaction itself: TRANSACTION_MISUSE, and retries get it at once instead of IN_PROGRESS', async () => {
    const key = freshKey('commit');
    const error = await errorOf(
      withTenant(fx.app, 't', (tx) =>
        runIdempotent(tx, key, async (t) => {
          await sql`COMMIT`.execute(t);
          return 'committed';
        }),
      ),
    );
    expect(error).toBeInstanceOf(TransactionMisuseError);
    expect(error).toMatchObject({ code: 'TRANSACTION_MISUSE', retryable: false });
    const [record] = await fx.rows<{ status: string }>('idempotency_keys', `key = '${key}'`);
    expect(record?.status).toBe('failed');
    const retry = await errorOf(call('t', key, async () => 'retry', { waitMs: 600_000 }));
    expect(retry).toBeInstanceOf(StoredCallError);
    expect(retry).toMatchObject({ code: 'TRANSACTION_MISUSE' });
  });

  it('fn that ROLLs BACK the transaction itself: TRANSACTION_MISUSE; nothing stays claimed', async () => {
    const key = freshKey('rollback');
    const error = await errorOf(
      withTenant(fx.app, 't', (tx) =>
        runIdempotent(tx, key, async (t) => {
          await sql`ROLLBACK`.execute(t);
          return 'rolled back';
        }),
      ),
    );
    expect(error).toMatchObject({ code: 'TRANSACTION_MISUSE' });
    expect(await call('t', key)).toBe('ok');
  });

  it('SET TRANSACTION ISOLATION inside withTenant: TRANSACTION_MISUSE instead of a raw 25001', async () => {
    const error = await errorOf(withTenant(fx.app, 't', (tx) => sql`SET TRANSACTION ISOLATION LEVEL SERIALIZABLE`.execute(tx)));
    expect(error).toBeInstanceOf(TransactionMisuseError);
    expect(error.cause).toMatchObject({ code: '25001' });
  });

  it('a failed call whose error was caught and the transaction used again: CALL_ABORTED, not a raw 25P02', async () => {
    const key = freshKey('caught');
    const error = await errorOf(
      withTenant(fx.app, 't', async (tx) => {
        await runIdempotent(tx, key, async () => {
          throw new Error('tool failed');
        }).catch(() => {});
        await sql`INSERT INTO orders (key, amount) VALUES (${key}, 1)`.execute(tx);
      }),
    );
    expect(error).toBeInstanceOf(CallAbortedError);
    expect(error).toMatchObject({ code: 'CALL_ABORTED' });
    expect(error.cause).toMatchObject({ message: 'tool failed' });
    expect((await fx.orders()).filter((row) => row.key === key)).toEqual([]);
  });

  it("a failed call whose error was swallowed: CALL_ABORTED, not Kysely's uncoded AbortedTransactionError", async () => {
    const key = freshKey('swallowed');
    const error = await errorOf(
      withTenant(fx.app, 't', async (tx) => {
        await runIdempotent(tx, key, async () => {
          throw new Error('tool failed');
        }).catch(() => {});
        return 'carried on';
      }),
    );
    expect(error).toMatchObject({ code: 'CALL_ABORTED' });
  });
});

/** One way to make each code happen through the public API. */
const triggers: Record<string, () => Promise<unknown>> = {
  INVALID_OPTIONS: () => call('t', freshKey('o'), undefined, { waitMs: -1 }),
  INVALID_TENANT: () => call('', freshKey('t')),
  INVALID_KEY: () => call('t', ''),
  INVALID_REQUEST: () => call('t', freshKey('r'), undefined, { request: { amount: 1n } }),
  TENANT_MISSING: () => fx.app.transaction().execute((tx) => runIdempotent(tx, freshKey('m'), async () => 1)),
  RLS_BYPASS: () => withTenant(fx.database.kysely(fx.database.adminUrl), 't', async () => 1),
  NOT_IN_TRANSACTION: () => runIdempotent(fx.app as never, freshKey('n'), async () => 1),
  IDEMPOTENCY_KEY_REUSED: async () => {
    const key = freshKey('reused');
    await call('t', key, undefined, { request: { a: 1 } });
    return call('t', key, undefined, { request: { a: 2 } });
  },
  IDEMPOTENCY_IN_PROGRESS: async () => {
    const key = freshKey('busy');
    let release!: () => void;
    const first = call('t', key, () => new Promise((resolve) => (release = () => resolve('first'))));
    await sleep(50);
    try {
      return await call('t', key, undefined, { waitMs: 0 });
    } finally {
      release();
      await first;
    }
  },
  RESULT_NOT_SERIALIZABLE: () => call('t', freshKey('ns'), async () => 1n),
  RESULT_TOO_LARGE: () => call('t', freshKey('tl'), async () => 'x'.repeat(100), { maxResultBytes: 10 }),
  TRANSACTION_CONFLICT: async () => {
    // Two transactions taking two locks in opposite orders: Postgres aborts one (40P01).
    const locks = (first: number, second: number) =>
      withTenant(fx.app, 't', async (tx) => {
        await sql`SELECT pg_advisory_xact_lock(${first})`.execute(tx);
        await sleep(100);
        await sql`SELECT pg_advisory_xact_lock(${second})`.execute(tx);
      });
    const outcomes = await Promise.allSettled([locks(424_201, 424_202), locks(424_202, 424_201)]);
    const rejected = outcomes.find((outcome) => outcome.status === 'rejected');
    if (rejected) throw rejected.reason;
  },
  CALL_ABORTED: () =>
    withTenant(fx.app, 't', async (tx) => {
      await runIdempotent(tx, freshKey('ca'), async () => {
        throw new Error('x');
      }).catch(() => {});
    }),
  REENTRANT_CALL: () => {
    const key = freshKey('re');
    return withTenant(fx.app, 't', (tx) => runIdempotent(tx, key, () => runIdempotent(tx, key, async () => 1)));
  },
  TRANSACTION_MISUSE: () => withTenant(fx.app, 't', (tx) => sql`SET TRANSACTION ISOLATION LEVEL SERIALIZABLE`.execute(tx)),
  RATE_LIMITED: async () => {
    await setRateLimit(fx.database.adminUrl, { tenant: 'limited', perSecond: 0.01, burst: 1 });
    await call('limited', freshKey('rl'));
    return call('limited', freshKey('rl'));
  },
  LEASE_LOST: async () => {
    const key = freshKey('lease');
    let resume!: () => void;
    let running!: () => void;
    const started = new Promise<void>((resolve) => (running = resolve));
    const slow = runIdempotentExternal(
      fx.app,
      't',
      key,
      () =>
        new Promise((resolve) => {
          resume = () => resolve('slow');
          running();
        }),
      { leaseMs: 150 },
    );
    await started;
    await runIdempotentExternal(fx.app, 't', key, async () => 'taker', { waitMs: 5_000 });
    resume();
    return slow;
  },
  WEBHOOK_INVALID: async () => verifyWebhook({}, '{}', `whsec_${Buffer.alloc(32, 1).toString('base64')}`),
  WRONG_ROLE: async () => withTenant(fx.database.kysely(await fx.database.createLoginRole('relay')), 't', async () => 1),
  NOT_INSTALLED: async () => {
    const empty = await createTestDatabase({ empty: true });
    const user = `${empty.name}_plain`;
    await empty.admin.query(`CREATE ROLE ${quoteIdentifier(user)} LOGIN PASSWORD 'plain-login'`);
    try {
      const url = databaseUrlFor(inject('adminUrl'), empty.name, { user, password: 'plain-login' });
      return await withTenant(empty.kysely(url), 't', async () => 1);
    } finally {
      await empty.drop();
      await fx.database.admin.query(`DROP ROLE IF EXISTS ${quoteIdentifier(user)}`);
    }
  },
};

/** Codes only a relay, a sink, migrate or a pooler raise: each has its own tests, named here. */
const testedElsewhere: Record<string, string> = {
  DELIVERY_FAILED: 'test/http-sink.test.ts',
  DELIVERY_REJECTED: 'test/http-sink.test.ts',
  MIGRATION_CHECKSUM_MISMATCH: 'test/migrate.test.ts',
  MIGRATION_DATABASE_AHEAD: 'test/migrate.test.ts',
  MIGRATION_FAILED: 'test/managed-postgres.test.ts',
  INSTALLATION_UNSAFE: 'test/installation-check.test.ts',
  ROLES_CONFLICT: 'test/managed-postgres.test.ts',
  POOLER_SETTING_REQUIRED: 'test/pgbouncer-relay.test.ts',
  SINK_MISCONFIGURED: 'test/nats-sink.test.ts',
  EVENT_NOT_FOUND: 'test/relay.test.ts',
  DOORBELL_UNAVAILABLE: 'test/relay-doorbell.test.ts',
};

/** The codes the documented error table lists (`MIGRATION_*` stands for the three migration codes). */
function documentedCodes(): string[] {
  const guide = readFileSync(new URL('../docs/getting-started.md', import.meta.url), 'utf8');
  const table = guide.slice(guide.indexOf('## Errors'));
  const codes = [...table.matchAll(/^\| (.+?) \|/gm)].flatMap((row) => [...row[1]!.matchAll(/`([A-Z_*]+)`/g)].map((m) => m[1]!));
  return codes.flatMap((code) => (code === 'MIGRATION_*' ? ['MIGRATION_CHECKSUM_MISMATCH', 'MIGRATION_DATABASE_AHEAD', 'MIGRATION_FAILED'] : [code]));
}

describe('every code in the error table of docs/getting-started.md reaches callers', () => {
  it('has a trigger here or a named test elsewhere for each documented code', () => {
    const codes = documentedCodes();
    expect(codes.length).toBeGreaterThan(20);
    for (const code of codes) expect([code, code in triggers || code in testedElsewhere]).toEqual([code, true]);
    for (const [code, file] of Object.entries(testedElsewhere)) {
      expect([code, readFileSync(new URL(`../${file}`, import.meta.url), 'utf8').includes(code) || file]).toEqual([code, true]);
    }
  });

  for (const [code, trigger] of Object.entries(triggers)) {
    it(code, async () => {
      const error = await errorOf(trigger());
      expect(error).toBeInstanceOf(OnceError);
      expect(error.code).toBe(code);
    });
  }
});
