/**
 * runIdempotentExternal(db, tenantId, key, fn, opts): the two-phase mode, for effects that cannot
 * join the transaction (a payment API whose charge id the agent needs now).
 *
 * 1. A short transaction claims the key and COMMITS it as in-progress, with a lease.
 * 2. fn({ idempotencyKey, signal, heartbeat, fetch }) runs outside any transaction. idempotencyKey
 *    is derived from (tenant, key, version): identical for every attempt, so a downstream API that
 *    honours idempotency keys performs the effect once even if fn runs twice.
 * 3. A second short transaction stores the result (or the stored failure), guarded by the lease
 *    token.
 * A duplicate while the lease is live waits (bounded by waitMs), then replays. A worker that dies
 * mid-call holds the key until its lease runs out; the next call then takes over and runs fn again
 * with the same idempotencyKey. heartbeat() extends the lease for long calls; without it, fn's
 * signal aborts when the lease runs out.
 */
import { createHash, randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import { kyselyDriver } from '../drivers/kysely-driver.ts';
import { LeaseLostError, RateLimitedError } from '../errors.ts';
import { assertValidKey } from '../keys.ts';
import { parseOptions } from '../options.ts';
import {
  type ResolvedRunIdempotentExternalOptions,
  type RunIdempotentExternalOptions,
  runIdempotentExternalOptionsSchema,
} from './run-idempotent-external-options.ts';
import type { Driver } from '../internal/driver.ts';
import type { TransactionClient } from '../internal/transaction-client.ts';
import { withTenantFor } from '../tenant.ts';
import { traceCall } from '../telemetry.ts';
import { claim } from './claim.ts';
import type { ClaimRow } from './sql/claim-key.ts';
import { claimRequest, type IdempotentOutcome, inProgressError, mustWait, rateCharge, settleClaim, storableResult, wantsStored } from './claim-outcome.ts';
import type { Jsonify } from './jsonify.ts';
import { chargeBucket, giveBackRateLimited, releaseLease, renewLease, storeLeased } from './sql/lease-statements.ts';
import { markRecordedFailure } from './recorded-failure.ts';
import type { RecordId } from './sql/store-outcome.ts';
import { describeError } from './stored-error.ts';
import { sleep } from '../internal/sleep.ts';

export interface ExternalCallContext {
  /** The key to pass downstream (e.g. an Idempotency-Key header): the same on every attempt. */
  idempotencyKey: string;
  /** Aborted when the lease is lost to another worker, or when opts.signal aborts. */
  signal: AbortSignal;
  /** Extends the lease by leaseMs from now; resolves false (and aborts `signal`) if it was lost. */
  heartbeat(): Promise<boolean>;
  /** fetch with `Idempotency-Key: <idempotencyKey>` and `signal` attached. */
  fetch(input: string | URL | Request, init?: RequestInit): Promise<Response>;
}

/** The downstream key of a call: a pure function of tenant, key and version. */
export function downstreamKey(tenantId: string, key: string, version: string): string {
  return `once_${createHash('sha256')
    .update(JSON.stringify(['external', tenantId, key, version]))
    .digest('hex')
    .slice(0, 40)}`;
}

/** Headers that carry a call's idempotency key downstream (Stripe, Adyen, most payment APIs). */
export function idempotencyHeaders(idempotencyKey: string): Record<string, string> {
  return { 'Idempotency-Key': idempotencyKey };
}

/** Runs `fn` in a short transaction of its own, with the tenant set: one phase of a call. */
type InTenant = <R>(fn: (tx: TransactionClient) => Promise<R>) => Promise<R>;

async function runExternalDetailed<T>(
  tenantTransaction: (tenantOptions: ResolvedRunIdempotentExternalOptions['tenantOptions']) => InTenant,
  tenantId: string,
  key: string,
  fn: (context: ExternalCallContext) => Promise<T>,
  options?: RunIdempotentExternalOptions,
): Promise<IdempotentOutcome<T>> {
  assertValidKey(key);
  const opts = parseOptions(runIdempotentExternalOptionsSchema, options ?? {}, 'runIdempotentExternal options');
  // Cancelled before it began: nothing is claimed and fn never runs.
  opts.signal?.throwIfAborted();
  const token = randomUUID();
  const inTenant = tenantTransaction(opts.tenantOptions);
  const record: RecordId = { tenantId, key, version: opts.version };

  // Phase 1: claim and commit (or replay, or a recorded error that withTenant commits).
  const claimed = await claimLeased<T>(inTenant, tenantId, key, opts, token);
  if ('outcome' in claimed) return claimed;
  if (opts.signal?.aborted) {
    await inTenant((tx) => releaseLease(tx, record, token)).catch(() => {});
    opts.signal.throwIfAborted();
  }

  // Phase 2: the effect, outside any transaction.
  const idempotencyKey = downstreamKey(tenantId, key, opts.version);
  const controller = new AbortController();
  const onCallerAbort = () => controller.abort(opts.signal!.reason);
  opts.signal?.addEventListener('abort', onCallerAbort, { once: true });
  const lease = leaseClock(claimed.claimedAt, opts.leaseMs, () =>
    controller.abort(new LeaseLostError(`pg-once: the lease of key "${key}" ran out before the call finished; another worker may take it over.`)),
  );
  const heartbeat = async () => {
    if (controller.signal.aborted) return false;
    const sentAt = performance.now();
    const held = await inTenant((tx) => renewLease(tx, record, token, opts.leaseMs));
    if (!held) controller.abort(new LeaseLostError(`pg-once: the lease of key "${key}" was taken over by another worker.`));
    else if (!controller.signal.aborted) lease.renewed(sentAt);
    return held && !controller.signal.aborted;
  };
  const timer = opts.heartbeatIntervalMs === undefined ? undefined : setInterval(() => void heartbeat().catch(() => {}), opts.heartbeatIntervalMs);
  const context: ExternalCallContext = {
    idempotencyKey,
    signal: controller.signal,
    heartbeat,
    fetch: (input, init = {}) => {
      const headers = new Headers(init.headers);
      headers.set('Idempotency-Key', idempotencyKey);
      const signal = init.signal ? AbortSignal.any([init.signal, controller.signal]) : controller.signal;
      return fetch(input, { ...init, headers, signal });
    },
  };

  let value: T;
  try {
    value = await fn(context);
  } catch (error) {
    if (wantsStored(opts.storeError, error)) {
      await inTenant((tx) => storeLeased(tx, record, token, { status: 'failed', errorText: JSON.stringify(describeError(error)) }));
      throw error;
    }
    // Not stored: give the key back, so a retry executes afresh (with the same downstream key).
    await inTenant((tx) => releaseLease(tx, record, token)).catch(() => {});
    throw error;
  } finally {
    if (timer) clearInterval(timer);
    lease.stop();
    opts.signal?.removeEventListener('abort', onCallerAbort);
  }

  // Phase 3: store, if this worker still holds the lease.
  let text: string | undefined;
  try {
    text = storableResult(value, key, opts.maxResultBytes);
  } catch (error) {
    await inTenant((tx) => releaseLease(tx, record, token)).catch(() => {});
    throw error;
  }
  const stored = await inTenant((tx) => storeLeased(tx, record, token, { status: 'completed', resultText: text }));
  if (!stored) {
    throw new LeaseLostError(
      `pg-once: the lease of key "${key}" ran out and another worker took the call over before this result was stored; ` +
        'retry to get the stored result (the effect used the same downstream idempotency key).',
    );
  }
  return { value: (text === undefined ? undefined : JSON.parse(text)) as Jsonify<T>, outcome: 'executed', waited: claimed.waited };
}

/**
 * Phase 1: claim with a lease and commit, each attempt in a short transaction of its own. A
 * duplicate of a call in flight (its lease live, or its claim not yet committed) polls with
 * backoff BETWEEN transactions, so it holds no pooled connection while it waits; `waitMs` bounds
 * the whole wait, pool included, and the caller's signal ends it.
 */
async function claimLeased<T>(
  inTenant: InTenant,
  tenantId: string,
  key: string,
  opts: ResolvedRunIdempotentExternalOptions,
  token: string,
): Promise<IdempotentOutcome<T> | { waited: boolean; claimedAt: number }> {
  const request = { ...claimRequest(key, opts), lease: { ms: opts.leaseMs, token } };
  const deadline = performance.now() + opts.waitMs;
  let waited = false;
  let pause = 25;
  for (;;) {
    const left = Math.max(0, deadline - performance.now());
    const step = await inTenant(async (tx): Promise<IdempotentOutcome<T> | { waited: boolean; claimedAt: number } | { busy: ClaimRow }> => {
      // Before the claim is sent: the lease the database grants ends no earlier than this + leaseMs.
      const claimedAt = performance.now();
      const found = await claim(tx, request, { waitMs: left, block: false, waited });
      if (mustWait(found, key)) return { busy: found };
      const settled = settleClaim<T>(found, key, opts);
      if (settled) return settled;
      const charge = rateCharge(found);
      if (charge && !(await chargeBucket(tx, tenantId, charge))) {
        // Lost the race for the last token: undo the claim, keep an audit row, as the claim would.
        await giveBackRateLimited(tx, { tenantId, key, version: opts.version }, opts.tool, charge);
        throw markRecordedFailure(new RateLimitedError(key, Math.max(1, Math.ceil(charge.emissionMs))));
      }
      return { waited: found.waited, claimedAt };
    });
    if (!('busy' in step)) return step;
    waited = true;
    const remaining = deadline - performance.now();
    if (remaining <= 0) throw inProgressError(request, step.busy);
    await sleep(Math.min(pause, remaining), opts.signal);
    pause = Math.min(pause * 2, 500);
  }
}

/**
 * When this worker's lease ends, by the local clock: from just before the claim (or a renewal)
 * was sent, which is no later than the database's own start of it, so the signal aborts before
 * the database would let another worker take over. A timer fires `onExpired` then, whether or not
 * fn ever calls heartbeat(): without it, a worker past its lease ran on unaware while another
 * took the call over.
 */
function leaseClock(startedAt: number, leaseMs: number, onExpired: () => void) {
  let endsAt = startedAt + leaseMs;
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(onExpired, Math.max(0, endsAt - performance.now()));
  };
  arm();
  return {
    renewed(sentAt: number) {
      endsAt = Math.max(endsAt, sentAt + leaseMs);
      arm();
    },
    stop: () => clearTimeout(timer),
  };
}

/** The two-phase call's signature for a library whose database handle is `Db`. */
export interface RunIdempotentExternal<Db> {
  <T>(db: Db, tenantId: string, key: string, fn: (context: ExternalCallContext) => Promise<T>, options?: RunIdempotentExternalOptions): Promise<Jsonify<T>>;
  /** Also says what happened. */
  detailed<T>(
    db: Db,
    tenantId: string,
    key: string,
    fn: (context: ExternalCallContext) => Promise<T>,
    options?: RunIdempotentExternalOptions,
  ): Promise<IdempotentOutcome<T>>;
}

/** runIdempotentExternal for one database library: each phase is a withTenant transaction of its own. */
export function runIdempotentExternalFor<Db extends object, Tx extends object>(driver: Driver<Db, Tx>): RunIdempotentExternal<Db> {
  /** The span and counters around every two-phase call (no-ops without an OpenTelemetry SDK). */
  function detailed<T>(
    db: Db,
    tenantId: string,
    key: string,
    fn: (context: ExternalCallContext) => Promise<T>,
    options?: RunIdempotentExternalOptions,
  ): Promise<IdempotentOutcome<T>> {
    const tenantTransaction =
      (tenantOptions: ResolvedRunIdempotentExternalOptions['tenantOptions']): InTenant =>
      (run) =>
        withTenantFor(driver, db, tenantId, (tx) => run(driver.client(tx)!), tenantOptions);
    return traceCall({ key, tool: options?.tool, mode: 'external', tenantId }, () => runExternalDetailed(tenantTransaction, tenantId, key, fn, options));
  }
  return Object.assign(
    async function runIdempotentExternal<T>(
      db: Db,
      tenantId: string,
      key: string,
      fn: (context: ExternalCallContext) => Promise<T>,
      options?: RunIdempotentExternalOptions,
    ): Promise<Jsonify<T>> {
      return (await detailed(db, tenantId, key, fn, options)).value;
    },
    { detailed },
  );
}

/**
 * Runs an effect that cannot join a transaction at most once per (tenant, key, version), in two
 * phases around a committed, leased claim. Returns the result as JSON round-trips it; replays
 * return the stored result. `runIdempotentExternal.detailed` also says what happened.
 */
export const runIdempotentExternal: RunIdempotentExternal<Kysely<any>> = runIdempotentExternalFor(kyselyDriver);
