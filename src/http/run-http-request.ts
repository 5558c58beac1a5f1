/**
 * The framework-independent part of the HTTP adapters: from a request's facts and a way to run
 * its handler, the answer to send. Each adapter (src/integrations/express.ts, fastify.ts,
 * hono.ts) only reads its framework's request, captures the handler's answer as bytes, and sends
 * what this returns.
 *
 * The handler runs inside withTenant + runIdempotent, so its writes and enqueued events commit
 * with the key and the stored answer, or not at all; the answer goes to the client only after the
 * commit, so no client ever sees an answer that a crash could still take back.
 */
import { createHash } from 'node:crypto';
import type { Transaction } from 'kysely';
import { InvalidKeyError, InvalidTenantError } from '../errors.ts';
import { withTenant } from '../tenant.ts';
import { httpKeys } from '../integrations/internal/adapter-keys.ts';
import { runToolCall } from '../integrations/internal/run-tool-call.ts';
import { textProblem } from '../internal/safe-text.ts';
import { replayedAnswer, storedAnswer, type CapturedAnswer, type StoredAnswer } from './http-answer.ts';
import type { ResolvedHttpIdempotency } from './http-idempotency-options.ts';
import { httpRequestText } from './http-fingerprint.ts';
import { parseIdempotencyKey } from './parse-idempotency-key.ts';
import { isRefusal, problemAnswer } from './problem-answer.ts';

/** What the core needs to know of a request; each adapter reads it from its framework. */
export interface HttpRequestFacts {
  /** Upper case. */
  method: string;
  /** The request target as received: path and query. Fingerprinted. */
  target: string;
  /** The route's pattern (`/orders/:id`), for audit rows and rate limits by tool. (Default: none) */
  route: string | undefined;
  header(name: string): string | undefined;
  /**
   * The body as the application's parser left it: a JSON value (fingerprinted canonically, so key
   * order and spacing do not matter), bytes (fingerprinted as they are), or undefined.
   */
  body(): unknown;
}

/**
 * How a request ended. `executed`: the handler ran and its answer committed (the adapter sends it
 * with every header the handler set). `replayed`: a stored answer. `refused`: one of pg-once's
 * problems. `rolled-back`: an answer `store` declined (5xx by default): sent, its writes undone.
 * `unkeyed`: no key; the handler ran in a plain withTenant transaction.
 */
export interface HttpOutcome {
  kind: 'executed' | 'replayed' | 'refused' | 'rolled-back' | 'unkeyed';
  /** The handler's answer as captured (executed, rolled-back, unkeyed), else bytes. */
  answer: CapturedAnswer;
}

/**
 * Runs the handler and captures its answer; throws what the handler throws. The answer's headers
 * need hold only `config.replayHeaders`: an adapter sends the handler's own answer with all of its
 * headers itself.
 */
export type RunHandler<DB> = (tx: Transaction<DB>) => Promise<CapturedAnswer>;

/** Carries an answer that must not be stored out of runIdempotent, which then rolls back. */
class Unstored extends Error {
  readonly answer: CapturedAnswer;
  constructor(answer: CapturedAnswer) {
    super(`pg-once: the handler answered ${answer.status}, which is not stored; its writes roll back`);
    this.name = 'Unstored';
    this.answer = answer;
  }
}

/** sha256 of a body that is not a JSON value: bytes are fingerprinted as they are. */
function fingerprintBody(body: unknown): unknown {
  if (body instanceof Uint8Array) return { sha256: createHash('sha256').update(body).digest('hex') };
  if (body instanceof ArrayBuffer) return fingerprintBody(new Uint8Array(body));
  return body ?? null;
}

/** The tool name of a route, for audit rows and rate limits by tool, checked once per route; null: none. */
const tools = new Map<string, string | null>();
/** Routes are the application's own patterns, a bounded set; this only caps a pathological one. */
const MAX_TOOLS_KEPT = 10_000;

function toolOf(method: string, route: string | undefined): string | undefined {
  if (route === undefined) return undefined;
  const name = `${method} ${route}`;
  let tool = tools.get(name);
  if (tool === undefined) {
    // As runIdempotent's `tool` option requires (1 to 128 characters that Postgres stores as
    // given); a route that cannot be one is simply not named, rather than failing its requests.
    const cut = name.slice(0, 128);
    tool = textProblem(cut) === undefined ? cut : null;
    if (tools.size < MAX_TOOLS_KEPT) tools.set(name, tool);
  }
  return tool ?? undefined;
}

export async function runHttpRequest<R, DB>(
  config: ResolvedHttpIdempotency<R>,
  request: R,
  facts: HttpRequestFacts,
  handler: RunHandler<DB>,
): Promise<HttpOutcome> {
  // The handler's own errors go to the framework as they are, also a OnceError of a nested call:
  // only pg-once's refusals of this request become problems. Tracked by identity, not wrapped, so
  // that `storeError` sees (and stores) the handler's error itself.
  const thrown = new Set<unknown>();
  const run = async (tx: Transaction<DB>): Promise<CapturedAnswer> => {
    try {
      return await handler(tx);
    } catch (error) {
      thrown.add(error);
      throw error;
    }
  };
  try {
    const clientKey = parseIdempotencyKey(facts.header(config.header), config.header);
    if (clientKey === undefined && config.required && config.methods.has(facts.method)) {
      throw new InvalidKeyError(
        `pg-once: ${facts.method} needs an ${config.header} header (a unique value per operation, e.g. a UUID), sent again unchanged on every retry.`,
      );
    }
    const tenant = await config.tenant(request);
    if (tenant === undefined) {
      throw new InvalidTenantError('pg-once: the request names no tenant (no authenticated principal): nothing ran.');
    }
    if (clientKey === undefined) return await runUnkeyed(config, tenant, run);

    const principal = config.principal ? await config.principal(request) : undefined;
    const headers: Record<string, string | null> = {};
    for (const name of config.fingerprintHeaders) headers[name] = facts.header(name) ?? null;
    // Read before the transaction opens: a slow upload must not hold a pooled connection.
    const body = fingerprintBody(await facts.body());
    let executed: CapturedAnswer | undefined;
    const outcome = await runToolCall<StoredAnswer>({
      db: config.db,
      tenantId: tenant,
      key: httpKeys.client(principal, clientKey),
      tool: toolOf(facts.method, facts.route),
      request: httpRequestText({ method: facts.method, target: facts.target, headers, body }),
      run: config.run,
      runResolved: true,
      internalKey: true,
      fn: async (tx) => {
        const answer = await run(tx as Transaction<DB>);
        if (!config.store(answer.status)) throw new Unstored(answer);
        executed = answer;
        return storedAnswer(answer, config.replayHeaders);
      },
    });
    if (outcome.outcome === 'executed') return { kind: 'executed', answer: executed! };
    return { kind: 'replayed', answer: replayedAnswer(outcome.value) };
  } catch (error) {
    if (error instanceof Unstored) return { kind: 'rolled-back', answer: error.answer };
    if (thrown.has(error)) throw error;
    if (isRefusal(error)) return { kind: 'refused', answer: problemAnswer(error, config.problemType) };
    throw error;
  }
}

async function runUnkeyed<R, DB>(config: ResolvedHttpIdempotency<R>, tenant: string, handler: RunHandler<DB>): Promise<HttpOutcome> {
  const answer = await withTenant(config.db, tenant, async (tx) => {
    const answer = await handler(tx as Transaction<DB>);
    // The same rule as keyed requests: an answer that would not be stored undoes its writes.
    if (!config.store(answer.status)) throw new Unstored(answer);
    return answer;
  });
  return { kind: 'unkeyed', answer };
}
