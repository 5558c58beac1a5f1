/**
 * Process-wide defaults, set once at start-up with `configure()`. Per-call options win over them.
 */
import { z } from 'zod';
import { callback, parseOptions } from './options.ts';
import type { DedupeAuditEvent } from './idempotency/audit-event.ts';

export const settingsSchema = z
  .object({
    /**
     * Let withTenant run on a role that bypasses row-level security (superuser or BYPASSRLS).
     * Tenants are then NOT isolated by the database. (Default: false)
     */
    allowRlsBypass: z.boolean().optional(),
    /** Called for every dedupe audit event (replay, wait, key reuse, model-key rejection). */
    logger: callback<(event: DedupeAuditEvent) => void>().optional(),
  })
  .strict();
/** Process-wide defaults for {@link configure}. */
export interface Settings {
  /**
   * Let withTenant run on a role that bypasses row-level security (superuser or BYPASSRLS).
   * Tenants are then NOT isolated by the database. (Default: false)
   */
  allowRlsBypass?: boolean;
  /** Called for every dedupe audit event (replay, wait, key reuse, model-key rejection). (Default: none) */
  logger?: (event: DedupeAuditEvent) => void;
}

let current: z.output<typeof settingsSchema> = {};

/** Sets process-wide defaults; keys left out keep their current value. */
export function configure(settings: Settings): void {
  current = { ...current, ...parseOptions(settingsSchema, settings, 'configure() settings') };
}

export function settings(): Readonly<z.output<typeof settingsSchema>> {
  return current;
}
