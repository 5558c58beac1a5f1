/**
 * What the framework adapters share: one way to run a tool call (withTenant + runIdempotent, so
 * the claim, the tool's writes and its stored result commit together), the options common to all
 * of them, and the encoding of key parts. The adapters differ only in where the tenant, the key
 * and the request come from.
 */
import type { Kysely, Transaction } from 'kysely';
import { z } from 'zod';
import { outsideInternalKey, runWithInternalKey } from '../../internal/internal-key.ts';
import { isTransaction } from '../../internal/is-transaction.ts';
import { IdempotencyInProgressError } from '../../errors.ts';
import { type IdempotentOutcome, runIdempotent } from '../../idempotency/run-idempotent.ts';
import { withTenant } from '../../tenant.ts';
import { runIdempotentOptionsSchema, type ResolvedRunIdempotentOptions, type RunIdempotentOptions } from '../../idempotency/run-idempotent-options.ts';
import { callback } from '../../options.ts';
import { asResolved } from '../../internal/resolved-options.ts';

/**
 * The runIdempotent options an adapter passes through (ttl, version, waitMs, storeError,
 * maxResultBytes, logger, and any added later). `request` and `tool` are set by the adapter: the
 * request is the tool's input, the tool is its name.
 */
export type AdapterRunOptions = Omit<RunIdempotentOptions, 'request' | 'tool'>;

/** A value, or a function computing it from the framework's call context. */
export type Resolvable<T, Args extends unknown[]> = T | ((...args: Args) => T | PromiseLike<T>);

/** Any callback of the framework's (see callback() in options.ts). */
export const callbackSchema = callback();

/** A non-empty string, or a function returning one at call time. */
export const resolvableTextSchema = z.union([z.string().min(1), callbackSchema]);

/**
 * A Kysely instance (a pool), not a transaction: the adapter opens its own transaction per call so
 * that the tenant is set on it and the call's writes commit with its claim.
 */
export const databaseSchema = z.custom<Kysely<any>>(
  (value) =>
    typeof value === 'object' &&
    value !== null &&
    !isTransaction(value) &&
    typeof (value as Kysely<any>).transaction === 'function' &&
    typeof (value as Kysely<any>).selectFrom === 'function',
  { message: 'Expected a Kysely instance (not a transaction): each tool call runs in a transaction of its own' },
);

/** The pass-through runIdempotent options, validated with the core's own schema. */
export const adapterRunOptionsSchema = runIdempotentOptionsSchema.omit({ request: true, tool: true });

export async function resolve<T, Args extends unknown[]>(value: Resolvable<T, Args>, ...args: Args): Promise<T> {
  return typeof value === 'function' ? await (value as (...args: Args) => T | PromiseLike<T>)(...args) : value;
}

/** Percent-encodes ':' and '%' in a key part, so a key's parts can always be told apart. */
export { encodeKeyPart } from '../../keys.ts';

export interface ToolCallRun<T> {
  db: Kysely<any>;
  tenantId: string;
  key: string;
  /** The tool's name, for audit rows. */
  tool: string | undefined;
  /** Fingerprinted: the same key with another request is refused (IdempotencyKeyReusedError). */
  request: unknown;
  run: AdapterRunOptions;
  fn: (tx: Transaction<any>) => Promise<T>;
  /**
   * Whether `run` is the schema's own output (with its defaults), resolved once when the adapter
   * was made: runIdempotent then does not parse it again on every call (internal/resolved-options.ts).
   * (Default: false)
   */
  runResolved?: boolean;
  /**
   * Whether `key` is the adapter's own, in its reserved namespace (adapter-keys.ts). False for a
   * key the user derived (a `key` option): that one obeys the rules of user keys.
   */
  internalKey: boolean;
  /**
   * The framework's cancellation of this call (MCP: `extra.signal`, aborted when the client
   * cancels, or times out, the request). A call that waits for a concurrent duplicate stops
   * waiting once it aborts. (Default: none, the wait runs its whole waitMs)
   */
  signal?: AbortSignal;
}

/**
 * How long a waiting duplicate waits in one transaction, in milliseconds. The wait is a lock wait
 * inside one SQL statement, which an AbortSignal cannot reach; waiting in slices, each its own
 * transaction, lets a cancelled call stop within a slice and give its pooled connection back,
 * instead of holding it until the first call ends or waitMs runs out. A call that meets no
 * duplicate never notices: its claim returns at once.
 */
const WAIT_SLICE_MILLISECONDS = 500;

/** Runs one tool call at most once per (tenant, key): its own transaction, the tenant set on it. */
export async function runToolCall<T>(call: ToolCallRun<T>): Promise<IdempotentOutcome<T>> {
  const { signal } = call;
  if (signal === undefined) return runInTransaction(call, call.run);
  const deadline = Date.now() + waitMsSchema.parse(call.run.waitMs);
  for (;;) {
    const waitMs = Math.max(0, Math.min(WAIT_SLICE_MILLISECONDS, deadline - Date.now()));
    try {
      return await runInTransaction(call, { ...call.run, waitMs });
    } catch (error) {
      // Still in progress: wait another slice, unless the caller is gone or the wait is over.
      if (!(error instanceof IdempotencyInProgressError) || signal.aborted || Date.now() >= deadline) throw error;
    }
  }
}

/** The core's own waitMs schema, so its default applies here too. */
const waitMsSchema = runIdempotentOptionsSchema.shape.waitMs;

function runInTransaction<T>(call: ToolCallRun<T>, run: AdapterRunOptions): Promise<IdempotentOutcome<T>> {
  const given = { ...run, request: call.request, ...(call.tool === undefined ? {} : { tool: call.tool }) };
  const options = call.runResolved ? asResolved(given as ResolvedRunIdempotentOptions) : given;
  return withTenant(call.db, call.tenantId, (tx) =>
    call.internalKey
      ? runWithInternalKey(call.key, () => runIdempotent.detailed(tx, call.key, outsideInternalKey(call.fn), options))
      : runIdempotent.detailed(tx, call.key, call.fn, options),
  );
}

/** Splits an adapter's options into its own fields and the runIdempotent options it passes on. */
export function pickRunOptions<O extends object>(options: O, own: readonly (keyof O)[]): AdapterRunOptions {
  const run = { ...options } as Record<string, unknown>;
  for (const key of own) delete run[key as string];
  return run as AdapterRunOptions;
}
