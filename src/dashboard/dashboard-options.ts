/**
 * The options of `dashboardHandler()`: a hand-written interface (its JSDoc is what editors show)
 * and the zod schema that validates it once, when the handler is made. The type test in
 * test/types.test.ts keeps the two in step.
 */
import type { IncomingMessage } from 'node:http';
import { z } from 'zod';
import type { DatabaseTarget } from '../internal/session.ts';
import { callback, durationSchema } from '../options.ts';
import { cronSchema, DEFAULT_SWEEP_SCHEDULE } from '../ops/sweep-schedule.ts';

/** Tokens shorter than this are refused: a dashboard token guards every tenant's events. */
export const MIN_TOKEN_LENGTH = 16;

export interface DashboardOptions {
  /**
   * The database: a connection string (the handler opens a pool of `poolSize` connections and
   * `close()` ends it), a `pg.Pool` or a Kysely instance (yours to close). Its login must be granted
   * the database's relay role (`pg-once roles`); a superuser is never needed.
   */
  database: DatabaseTarget;
  /**
   * Secret tokens that unlock the dashboard, several during a rotation, each at least 16
   * characters. A browser logs in once with a form and gets a session cookie; scripts send
   * `Authorization: Bearer <token>`. The audit rows name a token by a fingerprint of it.
   * (Default: none)
   */
  tokens?: readonly string[];
  /**
   * Authentication by the application the handler is mounted in (its session, basic auth, SSO):
   * resolves to the name of who is asking, written into audit rows, or to undefined to refuse.
   * Used when no token matched. (Default: none)
   */
  authorize?: (request: IncomingMessage) => string | undefined | Promise<string | undefined>;
  /**
   * Serve without authentication, and then only to clients on loopback (127.0.0.0/8, ::1); every
   * other client is refused. What `pg-once dashboard` does on 127.0.0.1 without a token.
   * Without tokens or `authorize`, this must be set explicitly. (Default: false)
   */
  allowUnauthenticatedLoopback?: boolean;
  /** Pages only: requeue and discard are refused and their buttons hidden. (Default: false) */
  readOnly?: boolean;
  /**
   * The path the handler is mounted under, for the links it writes, e.g. '/ops/once'. A request
   * whose URL still starts with it (node:http) has it removed; one whose framework already removed
   * it (Express's app.use) is routed as is. (Default: '')
   */
  basePath?: string;
  /** The relays' sweep schedule (cron, UTC), to show when the next sweep is due. (Default: '*\/5 * * * *') */
  sweepSchedule?: string;
  /** Rows per page of every list. (Default: 50) */
  pageSize?: number;
  /** How long a browser session lasts after logging in with a token: milliseconds or text like '12h'. (Default: '12h') */
  sessionTtl?: number | string;
  /** Connections in the pool opened for a connection string. (Default: 4) */
  poolSize?: number;
}

const HOUR_MILLISECONDS = 60 * 60 * 1_000;

export const dashboardOptionsSchema = z
  .object({
    database: z.union([z.string().min(1), z.custom<Exclude<DatabaseTarget, string>>((value) => typeof value === 'object' && value !== null)]),
    tokens: z
      .array(z.string().min(MIN_TOKEN_LENGTH, `a token must be at least ${MIN_TOKEN_LENGTH} characters`))
      .readonly()
      .optional(),
    authorize: callback<NonNullable<DashboardOptions['authorize']>>().optional(),
    allowUnauthenticatedLoopback: z.boolean().default(false),
    readOnly: z.boolean().default(false),
    basePath: z
      .string()
      .regex(/^(\/[A-Za-z0-9._~-]+)*$/, "expected '' or a path like '/ops/once' (no trailing slash)")
      .default(''),
    // Parsed now: a bad schedule would otherwise fail every overview page.
    sweepSchedule: cronSchema.default(DEFAULT_SWEEP_SCHEDULE),
    pageSize: z.number().int().min(1).max(1_000).default(50),
    sessionTtl: durationSchema({ positive: true, max: { milliseconds: 30 * 24 * HOUR_MILLISECONDS, text: '30 days' } }).default(12 * HOUR_MILLISECONDS),
    poolSize: z.number().int().min(1).max(100).default(4),
  })
  .strict()
  .refine((options) => (options.tokens?.length ?? 0) > 0 || options.authorize !== undefined || options.allowUnauthenticatedLoopback, {
    message: "give tokens, authorize, or allowUnauthenticatedLoopback: true (the dashboard shows every tenant's events)",
    path: ['tokens'],
  });

export type ResolvedDashboardOptions = z.output<typeof dashboardOptionsSchema>;
