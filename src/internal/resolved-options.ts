/**
 * runIdempotent options an adapter resolved once, when it was made, rather than on every call.
 * runIdempotent parses its options on each call (zod: defaults, ranges, unknown keys); an adapter
 * that serves every request of a route with the same options, plus the request and the tool,
 * would pay that parse per request for nothing (measured in bench/http.ts). Marked with a
 * module-private symbol: only pg-once's own code can mark an object, and only one it built from
 * options the same schema already accepted.
 */
import type { ResolvedRunIdempotentOptions, RunIdempotentOptions } from '../idempotency/run-idempotent-options.ts';

const RESOLVED = Symbol('pg-once resolved options');

/** `options` (the schema's own output, plus request and tool), marked as needing no parse. */
export function asResolved(options: ResolvedRunIdempotentOptions): RunIdempotentOptions {
  return Object.assign(options, { [RESOLVED]: true }) as RunIdempotentOptions;
}

export function isResolved(options: RunIdempotentOptions): options is RunIdempotentOptions & ResolvedRunIdempotentOptions {
  return (options as { [RESOLVED]?: true })[RESOLVED] === true;
}
