/** runIdempotentExternal's options (run-idempotent-external.ts): runIdempotent's, and the lease's. */
import { z } from 'zod';
import { type WithTenantOptions, withTenantOptionsSchema } from '../with-tenant-options.ts';
import { type RunIdempotentOptions, runIdempotentOptionsSchema } from './run-idempotent-options.ts';

export const runIdempotentExternalOptionsSchema = runIdempotentOptionsSchema
  .extend({
    /**
     * How long the committed claim is reserved for this call, in milliseconds. A worker that dies
     * holds the key this long; a live one extends it with heartbeat(). (Default: 60 000)
     */
    leaseMs: z
      .number()
      .int()
      .min(100)
      .max(24 * 60 * 60 * 1_000)
      .default(60_000),
    /** Renew the lease automatically at this interval while fn runs, in milliseconds. (Default: never; call heartbeat()) */
    heartbeatIntervalMs: z.number().int().min(10).optional(),
    /** Cancels the call: fn's signal aborts. (Default: none) */
    signal: z.custom<AbortSignal>((value) => value instanceof AbortSignal).optional(),
    /** Options for the two transactions the call opens. (Default: none) */
    tenantOptions: withTenantOptionsSchema.optional(),
  })
  .strict();
/** Options of {@link runIdempotentExternal}: those of runIdempotent, and the lease's. */
export interface RunIdempotentExternalOptions extends RunIdempotentOptions {
  /**
   * How long the committed claim is reserved for this call, in milliseconds (100 to 86 400 000).
   * A worker that dies holds the key this long; a live one extends it with heartbeat().
   * (Default: 60 000)
   */
  leaseMs?: number;
  /**
   * Renew the lease automatically at this interval while fn runs, in milliseconds (at least 10,
   * at most a third of leaseMs). (Default: never; call heartbeat())
   */
  heartbeatIntervalMs?: number;
  /** Cancels the call: fn's signal aborts; an already-aborted signal claims nothing. (Default: none) */
  signal?: AbortSignal;
  /** Options for the two transactions the call opens. (Default: none) */
  tenantOptions?: WithTenantOptions;
}
export type ResolvedRunIdempotentExternalOptions = z.output<typeof runIdempotentExternalOptionsSchema>;
