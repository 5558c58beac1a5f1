/**
 * The options of the HTTP adapters (`pg-once/express`, `/fastify`, `/hono`), one interface for
 * all three: `R` is what the framework calls a request (Express's `Request`, Fastify's
 * `FastifyRequest`, Hono's `Context`), `DB` the Kysely database type the handler's transaction
 * carries. Parsed once, when the middleware is made, by the schema below.
 */
import type { Kysely } from 'kysely';
import { z } from 'zod';
import { parseOptions } from '../options.ts';
import type { ResolvedRunIdempotentOptions } from '../idempotency/run-idempotent-options.ts';
import { adapterRunOptionsSchema, callbackSchema, databaseSchema, type AdapterRunOptions } from '../integrations/internal/run-tool-call.ts';

/** A value computed from the request, e.g. `(req) => req.user.tenantId`. */
export type FromRequest<R, T> = (request: R) => T | PromiseLike<T>;

export interface HttpIdempotencyOptions<R, DB = any> extends Omit<AdapterRunOptions, 'waitMs'> {
  /** A Kysely instance connected as the application role. Each request runs in a transaction of its own. */
  db: Kysely<DB>;
  /**
   * The tenant of the request, from its authenticated principal (never from its body). Undefined
   * refuses the request with 400 `INVALID_TENANT` and nothing runs.
   */
  tenant: FromRequest<R, string | undefined>;
  /**
   * Who, within the tenant, sent the request (a user or API client id): keys are scoped by it, so
   * two clients of one tenant that pick the same key never see each other's answers.
   * (Default: none, keys are scoped by tenant only)
   */
  principal?: FromRequest<R, string | undefined>;
  /** The request header that carries the key. (Default: `'Idempotency-Key'`) */
  header?: string;
  /**
   * The methods whose requests must carry a key: one without it is answered 400 (`INVALID_KEY`)
   * and nothing runs. A request of another method is keyed when it carries one. (Default: `['POST', 'PATCH']`)
   */
  methods?: readonly string[];
  /**
   * Whether a key is required on `methods`. False lets a request without one run unkeyed (still in
   * a transaction). (Default: true)
   */
  required?: boolean;
  /**
   * Request headers that are part of the fingerprint besides method, path and body (names, any
   * case), e.g. `['content-type', 'accept']`. (Default: none)
   */
  fingerprintHeaders?: readonly string[];
  /**
   * Response headers a replay repeats (names, any case), besides `content-type`; the replay also
   * says `Idempotent-Replayed: true`. (Default: `['location', 'content-language']`)
   */
  replayHeaders?: readonly string[];
  /**
   * Which answers are stored and replayed, by status. An answer that is not stored rolls back the
   * handler's writes and leaves the key free, so a retry runs afresh; an error the handler throws
   * never stores (unless `storeError` says so). (Default: `status < 500`)
   */
  store?: (status: number) => boolean;
  /**
   * How long a concurrent duplicate waits for the first request, in milliseconds, then replays
   * its answer; past it, 409 `IDEMPOTENCY_IN_PROGRESS` with `Retry-After`. A waiting duplicate
   * holds a pooled connection. (Default: 0, answer 409 at once, as the IETF draft advises)
   */
  waitMs?: number;
  /**
   * The `type` URI of the problem+json bodies of pg-once's refusals, from the error code.
   * (Default: `https://github.com/pg-once/pg-once/blob/main/docs/http.md#<code in lower case>`,
   * e.g. `...#idempotency_key_reused`)
   */
  problemType?: (code: string) => string;
}

/** Where a problem code is explained: docs/http.md has one anchor per code it answers. */
const DOCS_URL = 'https://github.com/pg-once/pg-once/blob/main/docs/http.md';

/** A header name as RFC 9110 defines a token. */
const headerName = z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'must be an HTTP header name');

export const httpIdempotencyOptionsSchema = adapterRunOptionsSchema.extend({
  db: databaseSchema,
  tenant: callbackSchema,
  principal: callbackSchema.optional(),
  header: headerName.default('Idempotency-Key'),
  methods: z
    .array(z.string().regex(/^[A-Za-z]+$/, 'must be an HTTP method'))
    .readonly()
    .default(['POST', 'PATCH']),
  required: z.boolean().default(true),
  fingerprintHeaders: z.array(headerName).readonly().default([]),
  replayHeaders: z.array(headerName).readonly().default(['location', 'content-language']),
  store: callbackSchema.optional(),
  waitMs: adapterRunOptionsSchema.shape.waitMs.unwrap().default(0),
  problemType: callbackSchema.optional(),
});

/** The options as the core uses them: names lower-cased, defaults filled in. */
export interface ResolvedHttpIdempotency<R> {
  db: Kysely<any>;
  tenant: FromRequest<R, string | undefined>;
  principal: FromRequest<R, string | undefined> | undefined;
  /** Lower case. */
  header: string;
  /** Upper case. */
  methods: ReadonlySet<string>;
  required: boolean;
  /** Lower case, sorted. */
  fingerprintHeaders: readonly string[];
  /** Lower case, `content-type` included. */
  replayHeaders: ReadonlySet<string>;
  store: (status: number) => boolean;
  problemType: (code: string) => string;
  /**
   * Passed to runIdempotent (waitMs, ttl, version, storeError, ...), resolved here with the
   * core's defaults, so that runIdempotent does not parse them again on every request.
   */
  run: Omit<ResolvedRunIdempotentOptions, 'request' | 'tool'>;
}

export function resolveHttpIdempotency<R>(options: HttpIdempotencyOptions<R>, what: string): ResolvedHttpIdempotency<R> {
  const parsed = parseOptions(httpIdempotencyOptionsSchema, options, what);
  // Everything that is not the adapter's own is a runIdempotent option, parsed by the core's
  // schema (adapterRunOptionsSchema) with its defaults; waitMs has the adapter's default. The
  // callbacks are taken from `options` below, where they have their types.
  const { db, tenant, principal, header, methods, required, fingerprintHeaders, replayHeaders, store, problemType, ...run } = parsed;
  return {
    db,
    tenant: options.tenant,
    principal: options.principal,
    header: header.toLowerCase(),
    methods: new Set(methods.map((method) => method.toUpperCase())),
    required,
    fingerprintHeaders: [...new Set(fingerprintHeaders.map((name) => name.toLowerCase()))].sort(),
    replayHeaders: new Set(['content-type', ...replayHeaders.map((name) => name.toLowerCase())]),
    store: options.store ?? ((status) => status < 500),
    problemType: options.problemType ?? ((code) => `${DOCS_URL}#${code.toLowerCase()}`),
    run,
  };
}
