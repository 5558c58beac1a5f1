/**
 * zod schemas for every public option, parsed once at the public boundary. `z.input<>` is the
 * public type (what callers may pass, defaults optional); `z.output<>` is the resolved shape used
 * inside. Bad options throw {@link InvalidOptionsError} with every zod issue attached.
 */
import { z } from 'zod';
import { InvalidOptionsError } from './errors.ts';

/** A callback, validated only as "is a function" (zod 4 has no function schema). */
function callback<F extends (...args: never[]) => unknown>() {
  return z.custom<F>((value) => typeof value === 'function', { message: 'Expected a function' });
}

export const migrateOptionsSchema = z
  .object({
    /**
     * Also install (or upgrade) graphile-worker's schema, which the relay runs on, so no separate
     * step is needed. (Default: true)
     */
    installWorkerSchema: z.boolean().default(true),
    /** Receives one line per applied migration and per notable step. (Default: silent) */
    onLog: callback<(message: string) => void>().optional(),
  })
  .strict();
export type MigrateOptions = z.input<typeof migrateOptionsSchema>;
export type ResolvedMigrateOptions = z.output<typeof migrateOptionsSchema>;

/** Parses `input` with `schema`, or throws InvalidOptionsError naming `what` was being parsed. */
export function parseOptions<S extends z.ZodType>(schema: S, input: unknown, what: string): z.output<S> {
  const parsed = schema.safeParse(input ?? {});
  if (parsed.success) return parsed.data;
  throw new InvalidOptionsError(
    what,
    parsed.error.issues.map((issue) => ({ path: issue.path, message: issue.message, code: issue.code })),
    { cause: parsed.error },
  );
}
