/**
 * The building blocks every public option schema shares, written once: durations, callbacks,
 * safe text, and parseOptions, which parses options once at the public boundary and throws
 * {@link InvalidOptionsError} with every zod issue attached.
 *
 * Each API's own schema sits beside the API (src/idempotency/run-idempotent-options.ts,
 * src/outbox/relay-options.ts, ...), each with its public type: a hand-written interface with a
 * doc comment per field, because a type derived with `z.input<>` emits zod's types into the .d.ts
 * (`z.ZodDefault<z.ZodNumber>`) and loses the comments, so editors would show nothing.
 * test/option-types.test.ts keeps each interface and its schema's input in step; `z.output<>` is
 * the resolved shape used inside.
 */
import { z } from 'zod';
import { InvalidOptionsError, type OnceIssue } from './errors.ts';
import { parseDuration } from './internal/duration.ts';
import { sweepCronItems } from './sweep-schedule.ts';
import { textProblem } from './internal/safe-text.ts';
import { rolePrefixProblem } from './internal/role-names.ts';

/**
 * A callback, validated only as "is a function" (zod 4 has no function schema): its parameters
 * and result are the interface's to state. `message` says what was expected instead.
 */
export function callback<F extends (...args: never[]) => unknown>(message = 'Expected a function') {
  return z.custom<F>((value) => typeof value === 'function', { message });
}

/** What a duration may be, besides a duration. */
export interface DurationBounds {
  /** Refuse 0. (Default: 0 is accepted) */
  positive?: boolean;
  /** The longest accepted, in milliseconds, and how the refusal names it ('10 years'). (Default: no bound) */
  max?: { milliseconds: number; text: string };
}

/**
 * A duration: milliseconds, or text like '7d' or '1h30m' (internal/duration.ts); parsed to
 * milliseconds. Negative durations are always refused.
 */
export function durationSchema(bounds: DurationBounds = {}) {
  const { positive = false, max } = bounds;
  const expected = `expected a ${positive ? 'positive ' : ''}duration${max ? ` up to ${max.text}` : ''}: milliseconds or text like '15m', '24h', '7d'`;
  return z.union([z.number(), z.string()]).transform((value, context) => {
    const milliseconds = parseDuration(value);
    if (milliseconds === undefined || milliseconds < 0 || (positive && milliseconds === 0) || (max && milliseconds > max.milliseconds)) {
      context.addIssue({ code: 'custom', message: `${expected} (got ${JSON.stringify(value)})` });
      return z.NEVER;
    }
    return milliseconds;
  });
}

/** A string stored as an identifier, `min..max` characters: see internal/safe-text.ts for what is refused and why. */
export function safeText(max: number, min = 1) {
  return z
    .string()
    .min(min)
    .max(max)
    .superRefine((text, context) => {
      const problem = textProblem(text);
      if (problem) context.addIssue({ code: 'custom', message: problem });
    });
}

/** Rows a sweep deletes per statement. */
export const sweepBatchSizeSchema = z.number().int().min(1).max(100_000);

/** A cron expression (UTC, graphile-worker's syntax), refused at once rather than at every tick. */
export const cronSchema = z.string().superRefine((schedule, context) => {
  try {
    sweepCronItems(schedule);
  } catch (error) {
    context.addIssue({ code: 'custom', message: `not a cron schedule: ${(error as Error).message}` });
  }
});

/** A role prefix: see internal/role-names.ts for what is accepted and why. */
export const rolePrefixSchema = z.string().superRefine((prefix, context) => {
  const problem = rolePrefixProblem(prefix);
  if (problem) context.addIssue({ code: 'custom', message: problem });
});

export const migrateOptionsSchema = z
  .object({
    /**
     * Also install (or upgrade) graphile-worker's schema, which the relay runs on, so no separate
     * step is needed. (Default: true)
     */
    installWorkerSchema: z.boolean().default(true),
    /**
     * Names this database's roles at install: `<rolePrefix>_app`, `_relay` and `_maintenance`.
     * Roles are cluster-wide, so every database gets its own. Later runs use the installed roles
     * and refuse a different prefix. (Default: `once_<database name>`; see `pg-once roles`)
     */
    rolePrefix: rolePrefixSchema.optional(),
    /** Receives one line per applied migration (after the commit) and per notable step. (Default: silent) */
    onLog: callback<(message: string) => void>().optional(),
  })
  .strict();
/** Options of {@link migrate}. */
export interface MigrateOptions {
  /**
   * Also install (or upgrade) graphile-worker's schema, which the relay runs on, so no separate
   * step is needed. (Default: true)
   */
  installWorkerSchema?: boolean;
  /**
   * Names this database's roles at install: `<rolePrefix>_app`, `_relay` and `_maintenance`.
   * Roles are cluster-wide, so every database gets its own. Later runs use the installed roles
   * and refuse a different prefix. (Default: `once_<database name>`; see `pg-once roles`)
   */
  rolePrefix?: string;
  /** Receives one line per applied migration (after the commit) and per notable step. (Default: silent) */
  onLog?: (message: string) => void;
}
export type ResolvedMigrateOptions = z.output<typeof migrateOptionsSchema>;

/** Parses `input` with `schema`, or throws InvalidOptionsError naming `what` was being parsed. */
export function parseOptions<S extends z.ZodType>(schema: S, input: unknown, what: string): z.output<S> {
  const parsed = schema.safeParse(input ?? {});
  if (parsed.success) return parsed.data;
  throw new InvalidOptionsError(what, parsed.error.issues.flatMap(toOnceIssues), { cause: parsed.error });
}

function toOnceIssues(issue: z.core.$ZodIssue): OnceIssue[] {
  // One issue per unknown key, with the key in its path, so callers can find the field without
  // reading messages.
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => ({ path: [...issue.path, key], message: `unknown option "${key}"`, code: issue.code }));
  }
  // A union (e.g. `false | { ...options }`) reports only "Invalid input"; the branch whose
  // issues reach deepest is the one the caller meant, and its issues name the field.
  if (issue.code === 'invalid_union' && issue.errors.length > 0) {
    const depth = (branch: readonly z.core.$ZodIssue[]) => Math.max(...branch.map((inner) => inner.path.length));
    const meant = [...issue.errors].sort((a, b) => depth(b) - depth(a))[0]!;
    if (depth(meant) > 0) {
      return meant.flatMap((inner) => toOnceIssues({ ...inner, path: [...issue.path, ...inner.path] } as z.core.$ZodIssue));
    }
  }
  return [{ path: issue.path, message: issue.message, code: issue.code }];
}
