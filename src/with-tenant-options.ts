/**
 * withTenant's options (src/tenant.ts), and so those of every driver's withTenant and of the
 * transactions runIdempotentExternal and receiveOnce open.
 */
import { z } from 'zod';

export const withTenantOptionsSchema = z
  .object({
    /**
     * Run even if the connection's role bypasses row-level security (superuser or BYPASSRLS), in
     * which case tenants are NOT isolated by the database. (Default: false, or `configure()`'s)
     */
    allowRlsBypass: z.boolean().optional(),
    /**
     * The transaction's idle_in_transaction_session_timeout, in milliseconds, set for it alone
     * (SET LOCAL), and only ever lower than the session's: a client host that vanishes mid-call
     * without closing its connection has its transaction, and the claim in it, ended by the server
     * after this long idle, instead of when TCP keepalive gives up (2 hours by default). Raise it
     * for a fn that pauses longer between two statements; 0 leaves the server's setting.
     * (Default: 60 000)
     */
    idleInTransactionTimeoutMs: z
      .number()
      .int()
      .min(0)
      .max(24 * 60 * 60 * 1_000)
      .optional(),
  })
  .strict();
/** Options of {@link withTenant}. */
export interface WithTenantOptions {
  /**
   * Run even if the connection's role bypasses row-level security (superuser or BYPASSRLS), in
   * which case tenants are NOT isolated by the database. (Default: false, or `configure()`'s)
   */
  allowRlsBypass?: boolean;
  /**
   * The transaction's `idle_in_transaction_session_timeout`, in milliseconds (0 to 86 400 000),
   * set for it alone (SET LOCAL) and never above the session's: a client host that vanishes
   * mid-call without closing its connection has its transaction, and the claim in it, ended by
   * the server after this long idle. 0 leaves the server's setting. (Default: 60 000)
   */
  idleInTransactionTimeoutMs?: number;
}
