/**
 * runIdempotent options an adapter resolved once, when it was made, rather than on every call.
 * runIdempotent parses its options on each call (zod: defaults, ranges, unknown keys); an adapter
 * that serves every request of a route with the same options, plus the request and the tool,
 * would pay that parse per request for nothing (measured in bench/http.ts). Marked by identity in
 * a module-private set: only pg-once's own code can mark an object, and only one it built from
 * options the same schema already accepted.
 */
import type { ResolvedRunIdempotentOptions, RunIdempotentOptions } from '../options.ts';

const resolved = new WeakSet<object>();

/** Marks `options` (the schema's own output, plus request and tool) as needing no parse. */
export function asResolved(options: ResolvedRunIdempotentOptions): RunIdempotentOptions {
  resolved.add(options);
  return options as RunIdempotentOptions;
}

export function isResolved(options: RunIdempotentOptions): options is RunIdempotentOptions & ResolvedRunIdempotentOptions {
  return resolved.has(options);
}
