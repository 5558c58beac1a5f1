/**
 * runIdempotent's options (run-idempotent.ts), which the adapters pass through (ai-sdk, MCP,
 * LangGraph, the HTTP middleware) and runIdempotentExternal and receiveOnce extend.
 */
import { z } from 'zod';
import { callback, durationSchema, safeText } from '../options.ts';
import type { DedupeAuditEvent } from './audit-event.ts';

const DAY_MILLISECONDS = 24 * 60 * 60 * 1_000;
const MAX_TTL_MILLISECONDS = 10 * 365 * DAY_MILLISECONDS;
/** 1 MiB. */
const DEFAULT_MAX_RESULT_BYTES = 1_048_576;

export const runIdempotentOptionsSchema = z
  .object({
    /**
     * The tool's arguments. Fingerprinted (sha256 of RFC 8785 canonical JSON, so key order never
     * matters); the same key with a different request throws IdempotencyKeyReusedError.
     * (Default: none, and then any later call with a request counts as different)
     */
    request: z.unknown().optional(),
    /** How long the result is kept and replayed: milliseconds or e.g. '24h'. (Default: '24h') */
    ttl: durationSchema({ positive: true, max: { milliseconds: MAX_TTL_MILLISECONDS, text: '10 years' } }).default(DAY_MILLISECONDS),
    /** Part of the key space: a new version never replays an old version's result. (Default: '') */
    version: safeText(64, 0).default(''),
    /** The tool's name, stored for audit and metrics. (Default: none) */
    tool: safeText(128).optional(),
    /**
     * How long a concurrent duplicate waits for the first call to finish, in milliseconds, before
     * IdempotencyInProgressError. (Default: 10 000)
     */
    waitMs: z.number().int().min(0).max(600_000).default(10_000),
    /**
     * Which errors of `fn` are permanent results: stored as a `failed` record and re-thrown on
     * every replay. (Default: none are; the call rolls back and a retry executes afresh)
     */
    storeError: callback<(error: unknown) => boolean>().optional(),
    /** Largest result accepted, in bytes of JSON. (Default: 1 048 576, i.e. 1 MiB) */
    maxResultBytes: z.number().int().positive().default(DEFAULT_MAX_RESULT_BYTES),
    /** Called for every dedupe audit event of this call. (Default: `configure()`'s logger) */
    logger: callback<(event: DedupeAuditEvent) => void>().optional(),
    /**
     * How many connections of this call's pool (its Kysely instance) may wait for concurrent
     * duplicates at once. A waiting duplicate holds its connection; one that finds this many
     * already waiting answers IdempotencyInProgressError at once instead, so the rest of the pool
     * keeps serving other calls. Keep it below the pool's size. (Default: 4)
     */
    maxWaiting: z.number().int().min(0).max(10_000).default(4),
  })
  .strict();
/** Options of {@link runIdempotent} (and, through them, of the adapters). */
export interface RunIdempotentOptions {
  /**
   * The tool's arguments. Fingerprinted (sha256 of RFC 8785 canonical JSON, so key order never
   * matters); the same key with a different request throws IdempotencyKeyReusedError (422).
   * (Default: none, and then any later call with a request counts as different)
   */
  request?: unknown;
  /**
   * How long the result is kept and replayed: milliseconds, or text such as '15m', '24h', '7d',
   * '1h30m'; at most 10 years. (Default: '24h')
   */
  ttl?: number | string;
  /**
   * Part of the key space, up to 64 characters: a new version never replays an old version's
   * result. (Default: '')
   */
  version?: string;
  /** The tool's name (1..128 characters), stored for audit and metrics. (Default: none) */
  tool?: string;
  /**
   * How long a concurrent duplicate waits for the first call to finish, in milliseconds (0 to
   * 600 000), before IdempotencyInProgressError (409, retryable); the time withTenant queued for
   * a pooled connection counts against it. (Default: 10 000)
   */
  waitMs?: number;
  /**
   * Which errors of `fn` are permanent results: stored as a `failed` record and re-thrown on
   * every replay as a StoredCallError. (Default: none are; the call rolls back and a retry
   * executes afresh)
   */
  storeError?: (error: unknown) => boolean;
  /** Largest result accepted, in bytes of JSON; larger is ResultTooLargeError. (Default: 1 048 576, i.e. 1 MiB) */
  maxResultBytes?: number;
  /** Called for every dedupe audit event of this call. (Default: `configure()`'s logger) */
  logger?: (event: DedupeAuditEvent) => void;
  /**
   * How many connections of this call's pool (its Kysely instance) may wait for concurrent
   * duplicates at once. A waiting duplicate holds its connection; one that finds this many
   * already waiting answers IdempotencyInProgressError at once instead, so the rest of the pool
   * keeps serving other calls. Keep it below the pool's size. (Default: 4)
   */
  maxWaiting?: number;
}
export type ResolvedRunIdempotentOptions = z.output<typeof runIdempotentOptionsSchema>;
