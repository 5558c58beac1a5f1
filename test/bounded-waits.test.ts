/**
 * Waits that stay within their bounds: waiting duplicates do not take a pool from other callers,
 * waitMs counts the time queued for a connection, a role's statement_timeout does not cut a wait
 * short into a raw SQLSTATE, and a claim whose holder went silent is released by the server.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyInProgressError, runIdempotent, withTenant } from '../src/index.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { quoteIdentifier } from './support/database-url.ts';
import { errorOf } from './support/error-of.ts';

let fx: AppFixture;
beforeAll(async () => {
  fx = await createAppFixture(4);
});
afterAll(async () => {
  await fx?.close();
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
let unique = 0;
const freshKey = (label: string) => `${label}-${++unique}-${Date.now()}`;

/** A first call that holds its claim (and its transaction) until released. */
function holdClaim(db: typeof fx.app, tenant: string, key: string) {
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  let claimed!: () => void;
  const started = new Promise<void>((resolve) => (claimed = resolve));
  const done = withTenant(db, tenant, (tx) =>
    runIdempotent(tx, key, async () => {
      claimed();
      await held;
      return 'first';
    }),
  );
  return { started, release, done };
}

describe('waiting duplicates and the pool', () => {
  it('an unrelated tenant is not delayed by duplicates waiting on a pool smaller than their number', async () => {
    const db = fx.database.kysely(fx.appUrl, { max: 5 });
    const key = freshKey('pool');
    const first = holdClaim(db, 'tenant-busy', key);
    await first.started;
    const duplicates = Array.from({ length: 12 }, () =>
      withTenant(db, 'tenant-busy', (tx) => runIdempotent(tx, key, async () => 'duplicate', { waitMs: 10_000, maxWaiting: 2 })).catch(
        (error: unknown) => error,
      ),
    );
    await sleep(50); // the duplicates are queued or waiting
    // The first call is held until after this: duplicates waiting for it must not take the pool.
    // (Before the bound, the 12 filled the pool and this call queued until the first finished.)
    const unrelated = withTenant(db, 'tenant-other', (tx) => runIdempotent(tx, freshKey('other'), async () => 'unrelated'));
    expect(await Promise.race([unrelated, sleep(5_000).then(() => 'still queued')])).toBe('unrelated');
    first.release();
    expect(await first.done).toBe('first');
    // Every duplicate answered: the replay (it waited), or IDEMPOTENCY_IN_PROGRESS (no slot free).
    const outcomes = await Promise.all(duplicates);
    for (const outcome of outcomes) expect(outcome === 'first' || outcome instanceof IdempotencyInProgressError).toBe(true);
    expect(outcomes.filter((outcome) => outcome === 'first').length).toBeGreaterThan(0);
    await unrelated;
  });

  it('every duplicate answers within its waitMs, however many queue for the pool', async () => {
    const db = fx.database.kysely(fx.appUrl, { max: 3 });
    const key = freshKey('bounded');
    const first = holdClaim(db, 'tenant-busy', key);
    await first.started;
    const duplicates = Array.from({ length: 10 }, () =>
      errorOf(withTenant(db, 'tenant-busy', (tx) => runIdempotent(tx, key, async () => 'duplicate', { waitMs: 300 }))),
    );
    // The first call is still running when every one of them has answered.
    for (const error of await Promise.all(duplicates)) expect(error).toBeInstanceOf(IdempotencyInProgressError);
    first.release();
    expect(await first.done).toBe('first');
  });

  it('the time queued for a pooled connection counts against waitMs', async () => {
    const db = fx.database.kysely(fx.appUrl, { max: 2 });
    const key = freshKey('queued');
    const first = holdClaim(db, 'tenant-q', key);
    await first.started;
    let unblock!: () => void;
    const blocker = withTenant(db, 'tenant-q', () => new Promise<void>((resolve) => (unblock = resolve)));
    await sleep(20);
    // The pool is exhausted: the duplicate queues for a connection longer than its whole budget.
    const duplicate = errorOf(withTenant(db, 'tenant-q', (tx) => runIdempotent(tx, key, async () => 'duplicate', { waitMs: 300 })));
    await sleep(400);
    unblock();
    await blocker;
    await sleep(100); // a duplicate that restarted its 300 ms budget here would still be waiting
    first.release();
    expect(await duplicate).toBeInstanceOf(IdempotencyInProgressError);
    expect(await first.done).toBe('first');
  });
});

describe('waitMs 0: 409 for duplicates only', () => {
  it("a fresh key is claimed when its claim's own write waits on a lock no duplicate holds", async () => {
    // A claim that holds its key's advisory lock inserts the record; that INSERT can wait on
    // locks that have nothing to do with a duplicate: a relation extension lock (seen under the
    // HTTP suite's 200 concurrent requests), or here, as a stand-in one can hold on purpose, a
    // SHARE lock (what CREATE INDEX takes). With waitMs 0 it used to get a 1 ms lock_timeout, and
    // the brand-new key was answered IDEMPOTENCY_IN_PROGRESS with nothing in progress.
    const locker = await fx.database.admin.connect();
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE once.idempotency_keys IN SHARE MODE');
      const key = freshKey('share-locked');
      const call = withTenant(fx.app, 'tenant-locked', (tx) => runIdempotent(tx, key, async () => 'ran', { waitMs: 0 })).catch((error: unknown) => error);
      await sleep(200); // the claim's INSERT is waiting for the lock
      await locker.query('COMMIT');
      expect(await call).toBe('ran');
    } finally {
      locker.release();
    }
  });

  it('a duplicate of a call in flight is still refused at once', async () => {
    const key = freshKey('zero-wait');
    const first = holdClaim(fx.app, 'tenant-zero', key);
    await first.started;
    let firstEnded = false;
    void first.done.then(() => (firstEnded = true));
    const error = await errorOf(withTenant(fx.app, 'tenant-zero', (tx) => runIdempotent(tx, key, async () => 'duplicate', { waitMs: 0 })));
    expect(error).toBeInstanceOf(IdempotencyInProgressError);
    expect(firstEnded).toBe(false); // refused while the first was still held, not after it
    first.release();
    expect(await first.done).toBe('first');
  });
});

describe('statement and idle timeouts', () => {
  it("a role's statement_timeout shorter than the wait does not end it with SQLSTATE 57014", async () => {
    const url = await fx.database.createLoginRole('app');
    const user = decodeURIComponent(new URL(url).username);
    await fx.database.admin.query(`ALTER ROLE ${quoteIdentifier(user)} SET statement_timeout = '1s'`);
    const db = fx.database.kysely(url, { max: 4 });
    const key = freshKey('statement-timeout');
    const first = holdClaim(db, 'tenant-st', key);
    await first.started;
    const duplicate = withTenant(db, 'tenant-st', (tx) => runIdempotent.detailed(tx, key, async () => 'duplicate', { waitMs: 5_000 }));
    await sleep(1_500); // past the role's statement_timeout
    first.release();
    expect(await duplicate).toMatchObject({ value: 'first', outcome: 'replayed', waited: true });
    // The role's own timeout applies again to the statements after the claim.
    const timeout = await withTenant(db, 'tenant-st', async (tx) => {
      await runIdempotent(tx, key, async () => 'x');
      return (await sql<{ statement_timeout: string }>`SHOW statement_timeout`.execute(tx)).rows[0]!.statement_timeout;
    });
    expect(timeout).toBe('1s');
  });

  it('transactions carry a local idle-in-transaction timeout, never raising a lower one', async () => {
    const show = (options?: { idleInTransactionTimeoutMs: number }) =>
      withTenant(
        fx.app,
        'tenant-idle',
        async (tx) => (await sql<{ v: string }>`SELECT current_setting('idle_in_transaction_session_timeout') AS v`.execute(tx)).rows[0]!.v,
        options,
      );
    expect(await show()).toBe('1min');
    expect(await show({ idleInTransactionTimeoutMs: 250 })).toBe('250ms');
    expect(await show({ idleInTransactionTimeoutMs: 0 })).toBe('0');
    const url = await fx.database.createLoginRole('app');
    await fx.database.admin.query(`ALTER ROLE ${quoteIdentifier(decodeURIComponent(new URL(url).username))} SET idle_in_transaction_session_timeout = '5s'`);
    const strict = fx.database.kysely(url, { max: 1 });
    expect(
      await withTenant(
        strict,
        'tenant-idle',
        async (tx) => (await sql<{ v: string }>`SELECT current_setting('idle_in_transaction_session_timeout') AS v`.execute(tx)).rows[0]!.v,
      ),
    ).toBe('5s');
    // Outside pg-once's transactions the session's own setting is untouched.
    expect((await sql<{ v: string }>`SELECT current_setting('idle_in_transaction_session_timeout') AS v`.execute(strict)).rows[0]!.v).toBe('5s');
  });

  it('a claim whose holder went silent mid-call is released when the server ends its idle transaction', async () => {
    const key = freshKey('silent');
    const silentDb = fx.database.kysely(fx.appUrl, { max: 1 });
    let claimed!: () => void;
    const started = new Promise<void>((resolve) => (claimed = resolve));
    let wake!: () => void;
    const quiet = new Promise<void>((resolve) => (wake = resolve));
    // The holder claims, then sends nothing more: as a host that vanished without a FIN looks
    // to the server (the connection just goes quiet).
    const silent = withTenant(
      silentDb,
      'tenant-silent',
      (tx) =>
        runIdempotent(tx, key, async () => {
          claimed();
          await quiet;
          return 'silent';
        }),
      { idleInTransactionTimeoutMs: 300 },
    );
    await started;
    const retry = await withTenant(fx.app, 'tenant-silent', (tx) => runIdempotent.detailed(tx, key, async () => 'retried', { waitMs: 10_000 }));
    expect(retry).toMatchObject({ value: 'retried', outcome: 'executed' });
    // The holder, back, finds its connection closed by the server: nothing of it committed.
    wake();
    await expect(silent).rejects.toThrow();
    expect(await withTenant(fx.app, 'tenant-silent', (tx) => runIdempotent(tx, key, async () => 'third'))).toBe('retried');
  });
});
