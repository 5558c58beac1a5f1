/** What enqueue() (enqueue.ts) takes: one outbox event, checked before it is written. */
import { z } from 'zod';
import { safeText } from '../options.ts';

export const outboxEventSchema = z
  .object({
    /** Where the relay routes the event, e.g. 'orders.created'. */
    topic: safeText(255),
    /** The event body (any JSON value). */
    payload: z.unknown(),
    /**
     * Events sharing an ordering key are delivered in commit order; events without one flow in
     * parallel. (Default: none)
     */
    orderingKey: safeText(255).optional(),
    /** Extra headers passed to the sink: names 1..128 characters, values up to 4 096. (Default: {}) */
    headers: z
      // zod builds the parsed record by assignment, and `result['__proto__'] = value` sets a
      // prototype instead of a key: such a header would vanish silently. Refuse it instead.
      .custom<Record<string, unknown>>(
        (value) => typeof value !== 'object' || value === null || !Object.hasOwn(value, '__proto__'),
        'a header may not be named __proto__',
      )
      .pipe(z.record(safeText(128), safeText(4_096).or(z.literal(''))))
      .default({}),
    /**
     * The id receivers dedupe on: 1..255 characters of `A-Z a-z 0-9 - . _ ~ : / + = @`, so it
     * travels in any header. (Default: inside runIdempotent, derived from tenant, key, version
     * and the event's position in the call; elsewhere a random UUID)
     */
    dedupeId: safeText(255).optional(),
  })
  .strict();
/** An event for {@link enqueue}. */
export interface OutboxEvent {
  /** Where the relay routes the event, e.g. 'orders.created' (1..255 characters). (Required) */
  topic: string;
  /** The event body: any JSON value, at most MAX_PAYLOAD_BYTES of JSON. (Required) */
  payload: unknown;
  /**
   * Events sharing an ordering key (1..255 characters) are delivered in commit order; events
   * without one flow in parallel. (Default: none)
   */
  orderingKey?: string;
  /**
   * Extra headers passed to the sink: names 1..128 characters, string values up to 4 096; no
   * header named `__proto__`. (Default: {})
   */
  headers?: Record<string, unknown>;
  /**
   * The id receivers dedupe on: 1..255 characters of `A-Z a-z 0-9 - . _ ~ : / + = @`, so it
   * travels in any header. (Default: inside runIdempotent, derived from tenant, key, version
   * and the event's position in the call; elsewhere a random UUID)
   */
  dedupeId?: string;
}
