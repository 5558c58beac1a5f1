/**
 * The two-phase mode against real Postgres and a real downstream API that dedupes on
 * Idempotency-Key: crashes after the effect, live leases, heartbeats, failures, lost leases.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  downstreamKey,
  IdempotencyInProgressError,
  LeaseLostError,
  RateLimitedError,
  runIdempotentExternal,
  setRateLimit,
  StoredCallError,
  type ExternalCallContext,
} from '../src/index.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { startPaymentApi, type PaymentApi } from './support/payment-api.ts';

let fx: AppFixture;
let api: PaymentApi;
beforeAll(async () => {
  fx = await createAppFixture(8);
  api = await startPaymentApi();
});
afterAll(async () => {
  await api?.close();
  await fx?.close();
});
beforeEach(() => {
  api.requests.length = 0;
  api.charges.clear();
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
let n = 0;
const freshKey = (label: string) => `${label}-${++n}-${Date.now()}`;

/** Charges through the payment API under the call's downstream key; counts its runs. */
function charger(amount = 4200) {
  const fn = async ({ fetch }: ExternalCallContext) => {
    fn.runs += 1;
    const response = await fetch(api.url, { method: 'POST', body: JSON.stringify({ amount }) });
    return (await response.json()) as { chargeId: string; amount: number };
  };
  fn.runs = 0;
  return fn;
}

describe('runIdempotentExternal', () => {
  it('commits the claim, runs the effect outside the transaction, stores the result, replays it', async () => {
    const key = freshKey('basic');
    const fn = charger();
    const first = await runIdempotentExternal.detailed(fx.app, 'tenant-x', key, fn, { tool: 'charge_card', request: { amount: 4200 } });
    const again = await runIdempotentExternal.detailed(fx.app, 'tenant-x', key, fn, { tool: 'charge_card', request: { amount: 4200 } });
    expect(first.outcome).toBe('executed');
    expect(again).toEqual({ ...first, outcome: 'replayed' });
    expect(fn.runs).toBe(1);
    expect(api.requests).toEqual([downstreamKey('tenant-x', key, '')]);
    const [record] = await fx.rows<{ status: string; locked_until: Date | null; lease_token: string | null }>('idempotency_keys', `key = '${key}'`);
    expect(record).toMatchObject({ status: 'completed', locked_until: null, lease_token: null });
  });

  it('after a crash between the effect and its record, the next call takes over and the API charges once', async () => {
    const key = freshKey('crash');
    const leaseMs = 800;
    const child = spawn(process.execPath, ['test/fixtures/external-effect.ts'], {
      env: { ...process.env, DATABASE_URL: fx.appUrl, TENANT: 'tenant-x', KEY: key, API_URL: api.url, LEASE_MS: String(leaseMs) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
    expect(line).toBe('EFFECT_DONE');
    child.kill('SIGKILL');
    await once(child, 'exit');
    expect(api.charges.size).toBe(1);

    // The claim is committed and leased: a call now waits for the lease to run out, takes over,
    // and runs fn again with the same downstream key, which the API dedupes.
    const fn = charger();
    const outcome = await runIdempotentExternal.detailed(fx.app, 'tenant-x', key, fn, { leaseMs, waitMs: 10_000 });
    expect(outcome.outcome).toBe('executed');
    expect(fn.runs).toBe(1);
    expect(api.requests).toEqual([downstreamKey('tenant-x', key, ''), downstreamKey('tenant-x', key, '')]);
    expect(api.charges.size).toBe(1); // exactly one effect
    expect(outcome.value).toEqual([...api.charges.values()][0]);
    expect(await runIdempotentExternal(fx.app, 'tenant-x', key, charger())).toEqual(outcome.value);
  });

  it('a duplicate during a live lease waits, then replays', async () => {
    const key = freshKey('live');
    let release!: () => void;
    const slow = charger();
    const first = runIdempotentExternal(fx.app, 'tenant-x', key, async (context) => {
      await new Promise<void>((resolve) => (release = resolve));
      return slow(context);
    });
    await sleep(100);
    const duplicate = charger();
    const waiting = runIdempotentExternal.detailed(fx.app, 'tenant-x', key, duplicate, { waitMs: 5_000 });
    await sleep(100);
    release();
    const [value, replay] = await Promise.all([first, waiting]);
    expect(replay).toMatchObject({ outcome: 'replayed', waited: true, value });
    expect(duplicate.runs).toBe(0);
    expect(api.charges.size).toBe(1);
  });

  it('a duplicate gives up after waitMs with IdempotencyInProgressError', async () => {
    const key = freshKey('busy');
    let release!: () => void;
    const first = runIdempotentExternal(fx.app, 'tenant-x', key, async () => {
      await new Promise<void>((resolve) => (release = resolve));
      return 'done';
    });
    await sleep(100);
    await expect(runIdempotentExternal(fx.app, 'tenant-x', key, async () => 'dup', { waitMs: 150 })).rejects.toBeInstanceOf(IdempotencyInProgressError);
    release();
    expect(await first).toBe('done');
  });

  it('heartbeat keeps a call three leases long from being taken over', async () => {
    const key = freshKey('heartbeat');
    const leaseMs = 300;
    const fn = charger();
    const long = runIdempotentExternal(
      fx.app,
      'tenant-x',
      key,
      async (context) => {
        for (let i = 0; i < 9; i += 1) {
          await sleep(100);
          expect(await context.heartbeat()).toBe(true);
        }
        return fn(context);
      },
      { leaseMs },
    );
    await sleep(450); // past the first lease
    const duplicate = charger();
    const replay = await runIdempotentExternal.detailed(fx.app, 'tenant-x', key, duplicate, { leaseMs, waitMs: 5_000 });
    expect(replay.outcome).toBe('replayed');
    expect(replay.value).toEqual(await long);
    expect(duplicate.runs).toBe(0);
    expect(fn.runs).toBe(1);
  });

  it('without a heartbeat the lease runs out: another call takes over and the slow one gets LeaseLostError', async () => {
    const key = freshKey('lost');
    let slowSignal: AbortSignal | undefined;
    const slow = runIdempotentExternal(
      fx.app,
      'tenant-x',
      key,
      async (context) => {
        slowSignal = context.signal;
        await sleep(600);
        return charger()(context);
      },
      { leaseMs: 200 },
    );
    await sleep(300);
    const taker = charger();
    const takenOver = await runIdempotentExternal.detailed(fx.app, 'tenant-x', key, taker, { leaseMs: 5_000 });
    expect(takenOver.outcome).toBe('executed');
    await expect(slow).rejects.toBeInstanceOf(LeaseLostError);
    expect(slowSignal).toBeDefined();
    expect(api.charges.size).toBe(1); // both ran the effect, under one key: charged once
    expect(await runIdempotentExternal(fx.app, 'tenant-x', key, charger())).toEqual(takenOver.value);
  });

  it("without a heartbeat, fn's signal aborts when its lease runs out, before another worker can take over", async () => {
    const key = freshKey('expiry');
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let signal!: AbortSignal;
    const abortedFirst: string[] = [];
    let running!: () => void;
    const started = new Promise<void>((resolve) => (running = resolve));
    const slow = runIdempotentExternal(
      fx.app,
      'tenant-x',
      key,
      async (context) => {
        running();
        signal = context.signal;
        signal.addEventListener('abort', () => abortedFirst.push('aborted'));
        await held;
        return 'slow';
      },
      { leaseMs: 200 },
    );
    await started;
    // Another worker takes over as soon as the database lets it; by then the signal has aborted.
    const taker = await runIdempotentExternal.detailed(
      fx.app,
      'tenant-x',
      key,
      async () => {
        abortedFirst.push('taken over');
        return 'taker';
      },
      { waitMs: 5_000 },
    );
    expect(taker.outcome).toBe('executed');
    expect(abortedFirst).toEqual(['aborted', 'taken over']);
    expect(signal.reason).toBeInstanceOf(LeaseLostError);
    release();
    await expect(slow).rejects.toBeInstanceOf(LeaseLostError);
  });

  it('a heartbeat keeps the signal from aborting; a lease left to run out aborts it even with no one waiting', async () => {
    const kept = freshKey('kept');
    const value = await runIdempotentExternal(
      fx.app,
      'tenant-x',
      kept,
      async (context) => {
        // Six heartbeats over more than the lease: the signal stays quiet. The margin (a beat
        // every fifth of the lease) is wide because a loaded CI machine stretches each sleep.
        for (let i = 0; i < 6; i += 1) {
          await sleep(200);
          expect(await context.heartbeat()).toBe(true);
        }
        return context.signal.aborted;
      },
      { leaseMs: 1_000 },
    );
    expect(value).toBe(false);

    const lapsed = freshKey('lapsed');
    const outcome = await runIdempotentExternal(
      fx.app,
      'tenant-x',
      lapsed,
      async (context) => {
        await new Promise((resolve) => context.signal.addEventListener('abort', resolve));
        // Past its lease, a heartbeat no longer renews it: the worker was told to stop.
        return { aborted: context.signal.aborted, renewed: await context.heartbeat() };
      },
      { leaseMs: 150 },
    );
    // Nobody took it over, so the result is still stored under its token.
    expect(outcome).toEqual({ aborted: true, renewed: false });
    expect(await runIdempotentExternal(fx.app, 'tenant-x', lapsed, async () => ({ aborted: false, renewed: true }))).toEqual(outcome);
  });

  it('an already-aborted signal runs nothing and claims nothing', async () => {
    const key = freshKey('pre-aborted');
    const fn = charger();
    const reason = new Error('cancelled by the caller');
    const error = await runIdempotentExternal(fx.app, 'tenant-x', key, fn, { signal: AbortSignal.abort(reason) }).catch((e: unknown) => e);
    expect(error).toBe(reason);
    expect(fn.runs).toBe(0);
    expect(await fx.rows('idempotency_keys', `key = '${key}'`)).toEqual([]);
  });

  it('a duplicate polling a live lease holds no connection, and its wait is audited as waited', async () => {
    const key = freshKey('poll');
    let release!: () => void;
    let running!: () => void;
    const started = new Promise<void>((resolve) => (running = resolve));
    const first = runIdempotentExternal(fx.app, 'tenant-x', key, async () => {
      await new Promise<void>((resolve) => {
        release = resolve;
        running();
      });
      return 'done';
    });
    await started;
    const waiting = runIdempotentExternal.detailed(fx.app, 'tenant-x', key, async () => 'dup', { waitMs: 5_000 });
    await sleep(150);
    const { rows } = await fx.database.admin.query(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'`,
    );
    expect(rows[0].n).toBe(0);
    release();
    expect(await waiting).toMatchObject({ value: 'done', outcome: 'replayed', waited: true });
    await first;
    const audit = await fx.rows<{ kind: string }>('dedupe_audit', `key = '${key}'`);
    expect(audit.map((row) => row.kind)).toEqual(['waited']);
  });

  it('a failure that is not stored gives the key back; a stored one replays', async () => {
    const key = freshKey('fails');
    await expect(
      runIdempotentExternal(fx.app, 'tenant-x', key, async () => {
        throw new Error('gateway timeout');
      }),
    ).rejects.toThrow('gateway timeout');
    expect(await fx.rows('idempotency_keys', `key = '${key}'`)).toEqual([]);
    const retry = charger();
    expect((await runIdempotentExternal.detailed(fx.app, 'tenant-x', key, retry)).outcome).toBe('executed');

    const declined = freshKey('declined');
    const storeError = (error: unknown) => (error as { code?: string }).code === 'card_declined';
    const decline = async () => {
      throw Object.assign(new Error('Your card was declined.'), { code: 'card_declined' });
    };
    await expect(runIdempotentExternal(fx.app, 'tenant-x', declined, decline, { storeError })).rejects.toThrow('declined');
    const replayed = await runIdempotentExternal(fx.app, 'tenant-x', declined, charger(), { storeError }).catch((e: unknown) => e);
    expect(replayed).toBeInstanceOf(StoredCallError);
    expect(replayed).toMatchObject({ code: 'card_declined', message: 'Your card was declined.' });
  });

  it('applies rate limits, taking the token before the effect', async () => {
    await setRateLimit(fx.database.adminUrl, { tenant: 'tenant-limited', perSecond: 0.01, burst: 1 });
    await runIdempotentExternal(fx.app, 'tenant-limited', freshKey('rl'), async () => 1);
    const fn = charger();
    await expect(runIdempotentExternal(fx.app, 'tenant-limited', freshKey('rl'), fn)).rejects.toBeInstanceOf(RateLimitedError);
    expect(fn.runs).toBe(0);
  });

  it('validates its arguments before writing', async () => {
    await expect(runIdempotentExternal(fx.app, 'tenant-x', '', async () => 1)).rejects.toMatchObject({ code: 'INVALID_KEY' });
    await expect(runIdempotentExternal(fx.app, '', 'k', async () => 1)).rejects.toMatchObject({ code: 'INVALID_TENANT' });
    await expect(runIdempotentExternal(fx.app, 'tenant-x', 'k', async () => 1, { leaseMs: 1 })).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
  });
});
