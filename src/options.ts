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
import { textProblem } from './internal/safe-text.ts';

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
