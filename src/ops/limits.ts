/**
 * Per-tenant rate limits on fresh executions: configured rows of once.rate_limits, checked by the
 * claim (once.claim_key, made by sql/0007_bounded_claims.sql, last replaced by
 * sql/0013_write_path.sql) and charged with the stored result (src/idempotency/store-outcome.ts).
 * Managed as the schema owner (`pg-once limits`); the application role can only read its own
 * tenant's row and the default.
 */
import { z } from 'zod';
import { assertOperatorRole } from './operator-role.ts';
import { type DatabaseTarget, withSession } from '../internal/session.ts';
import { textProblem } from '../internal/safe-text.ts';
import { parseOptions } from '../options.ts';

/** The tenant id of the default limit, applied to tenants without a row of their own. */
export const DEFAULT_LIMIT_TENANT = '*';

export const rateLimitSchema = z
  .object({
    /** The tenant, or '*' for the default of tenants without a limit of their own. */
    tenant: z
      .string()
      .min(1)
      .max(128)
      .refine((text) => textProblem(text) === undefined, 'must be well-formed text without control characters'),
    /** Limit only this tool's executions (Default: all tools together) */
    tool: z.string().max(128).default(''),
    /** Sustained rate of fresh executions, per second (fractions allowed: 0.5 = one every 2 s). */
    perSecond: z.number().positive().finite(),
    /** Executions allowed at once above the sustained rate, at least 1. */
    burst: z.number().int().min(1).max(1_000_000),
  })
  .strict();
/** A rate limit for {@link setRateLimit}. */
export interface RateLimit {
  /** The tenant (1..128 characters), or '*' for the default of tenants without a limit of their own. (Required) */
  tenant: string;
  /** Limit only this tool's executions. (Default: '', all tools together) */
  tool?: string;
  /** Sustained rate of fresh executions, per second (fractions allowed: 0.5 = one every 2 s). (Required) */
  perSecond: number;
  /** Executions allowed at once above the sustained rate, 1 to 1 000 000. (Required) */
  burst: number;
}

export interface RateLimitRow {
  tenant: string;
  tool: string;
  perSecond: number;
  burst: number;
  updatedAt: Date;
}

export async function setRateLimit(target: DatabaseTarget, limit: RateLimit): Promise<void> {
  const parsed = parseOptions(rateLimitSchema, limit, 'rate limit');
  await withSession(target, async (session) => {
    await assertOperatorRole(session, 'limits set');
    await session.query(
      `INSERT INTO once.rate_limits (tenant_id, tool, per_second, burst) VALUES ($1, $2, $3, $4)
       ON CONFLICT (tenant_id, tool) DO UPDATE SET per_second = excluded.per_second, burst = excluded.burst, updated_at = now()`,
      [parsed.tenant, parsed.tool, parsed.perSecond, parsed.burst],
    );
  });
}

/** Removes a limit (and its bucket state); returns whether there was one. */
export async function removeRateLimit(target: DatabaseTarget, selector: { tenant: string; tool?: string }): Promise<boolean> {
  return withSession(target, async (session) => {
    await assertOperatorRole(session, 'limits remove');
    const tool = selector.tool ?? '';
    const { rows } = await session.query(`DELETE FROM once.rate_limits WHERE tenant_id = $1 AND tool = $2 RETURNING 1`, [selector.tenant, tool]);
    // The buckets the limit filled go with it, or a limit set again later would start from the
    // old one's debt. The default's buckets are those of tenants without a limit of their own.
    await session.query(
      `DELETE FROM once.rate_limit_state s
        WHERE s.tool = $2
          AND (s.tenant_id = $1
               OR ($1 = $3
                   AND NOT EXISTS (SELECT 1 FROM once.rate_limits l WHERE l.tenant_id = s.tenant_id AND l.tool = s.tool)))`,
      [selector.tenant, tool, DEFAULT_LIMIT_TENANT],
    );
    return rows.length > 0;
  });
}

export async function listRateLimits(target: DatabaseTarget): Promise<RateLimitRow[]> {
  return withSession(target, async (session) => {
    await assertOperatorRole(session, 'limits list');
    const { rows } = await session.query<{ tenant_id: string; tool: string; per_second: number; burst: number; updated_at: Date }>(
      `SELECT tenant_id, tool, per_second, burst, updated_at FROM once.rate_limits ORDER BY tenant_id = '*' DESC, tenant_id, tool`,
    );
    return rows.map((row) => ({ tenant: row.tenant_id, tool: row.tool, perSecond: row.per_second, burst: row.burst, updatedAt: row.updated_at }));
  });
}
