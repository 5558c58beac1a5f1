/**
 * withIdempotency: wraps an MCP tool handler (`server.registerTool(name, config, handler)`) so that
 * it runs at most once per idempotency key within the caller's tenant.
 *
 * The key cannot come from the protocol: `extra.requestId` is new on every retry. It comes from the
 * client, in `_meta["dev.pg-once/idempotency-key"]` (see callToolOnce), or from an argument via
 * `keyFrom`. The tenant comes from the authenticated principal (`extra.authInfo`), never from the
 * arguments, so one client cannot replay, or collide with, another's results.
 */
import type { Kysely, Transaction } from 'kysely';
import type { RequestHandlerExtra } from '@modelcontextprotocol/sdk/shared/protocol.js';
import type { CallToolResult, ServerNotification, ServerRequest } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import { IdempotencyInProgressError, InvalidKeyError, InvalidTenantError, OnceError, RateLimitedError } from '../../errors.ts';
import { StoredCallError } from '../../idempotency/stored-error.ts';
import { parseOptions } from '../../options.ts';
import { adapterRunOptionsSchema, callbackSchema, databaseSchema, pickRunOptions, runToolCall, type AdapterRunOptions } from '../internal/run-tool-call.ts';
import { mcpKeys } from '../internal/adapter-keys.ts';
import { ERROR_META, IDEMPOTENCY_KEY_META, OUTCOME_META, type ErrorMeta } from './meta.ts';

/** What the MCP SDK passes a tool handler besides its arguments. */
export type ToolExtra = RequestHandlerExtra<ServerRequest, ServerNotification>;

/** A tool handler given to withIdempotency: the SDK's, plus the transaction as a third argument. */
export type IdempotentToolHandler<ARGS> = (args: ARGS, extra: ToolExtra, tx: Transaction<any>) => CallToolResult | PromiseLike<CallToolResult>;

/** 10 minutes: long enough for retries of one intent, short enough that a later identical request is a new one. */
const DEFAULT_CONTENT_KEY_TTL_MILLISECONDS = 10 * 60 * 1_000;

export interface WithIdempotencyOptions<ARGS> extends AdapterRunOptions {
  /** A Kysely instance connected as the application role. Each call runs in a transaction of its own. */
  db: Kysely<any>;
  /**
   * The tool's name, as registered. Fingerprinted with the arguments, so a key sent to another
   * tool is refused rather than replayed; also used in content keys and audit rows.
   */
  name: string;
  /**
   * The tenant of the authenticated principal, e.g. `(extra) => extra.authInfo?.clientId`.
   * Returning undefined (no authenticated principal) refuses the call with an INVALID_TENANT error
   * result, and nothing runs.
   */
  tenantFrom: (extra: ToolExtra) => string | undefined | PromiseLike<string | undefined>;
  /**
   * Where the idempotency key comes from, e.g. `(extra, args) => args.requestId`. A key read from
   * the arguments is written by the model: consider `keys.fromModel` to refuse weak ones.
   * (Default: `extra._meta["dev.pg-once/idempotency-key"]`, as set by callToolOnce)
   */
  keyFrom?: (extra: ToolExtra, args: ARGS) => string | undefined | PromiseLike<string | undefined>;
  /**
   * Whether the tool changes anything (writes, charges, sends). Decides the default of
   * `onMissingKey`. (Default: true)
   */
  sideEffecting?: boolean;
  /**
   * What a call without a key gets. 'refuse': an error result (code INVALID_KEY) and nothing runs.
   * 'content': a key derived from the tool and its arguments, kept for `contentKeyTtl`, so that
   * identical calls within that window run once. (Default: 'refuse' when `sideEffecting`, else
   * 'content')
   */
  onMissingKey?: 'refuse' | 'content';
  /** How long a content key (see `onMissingKey`) is kept: milliseconds, or e.g. '10m'. (Default: '10m') */
  contentKeyTtl?: number | string;
  /**
   * Store results with `isError: true` and replay them. A tool error is often transient (an
   * upstream timeout), so by default such a call rolls back (its writes too) and a retry runs
   * afresh, as when the handler throws. (Default: false)
   */
  storeErrorResults?: boolean;
}

const OWN_OPTIONS = ['db', 'name', 'tenantFrom', 'keyFrom', 'sideEffecting', 'onMissingKey', 'contentKeyTtl', 'storeErrorResults'] as const;

const withIdempotencyOptionsSchema = adapterRunOptionsSchema.extend({
  db: databaseSchema,
  name: z.string().min(1).max(64),
  tenantFrom: callbackSchema,
  keyFrom: callbackSchema.optional(),
  sideEffecting: z.boolean().default(true),
  onMissingKey: z.enum(['refuse', 'content']).optional(),
  // The core's own ttl schema (milliseconds or text like '10m', at most 10 years), without its default.
  contentKeyTtl: adapterRunOptionsSchema.shape.ttl.unwrap().optional(),
  storeErrorResults: z.boolean().default(false),
});

/** Carries an isError result out of the transaction so that the call rolls back. */
class ErrorResultRollback extends Error {
  readonly result: CallToolResult;

  constructor(result: CallToolResult) {
    super('pg-once: the tool returned an error result; rolled back');
    this.result = result;
  }
}

/**
 * Wraps an MCP tool handler so that it runs at most once per (tenant, key). A repeated call gets
 * the stored result (marked `_meta["dev.pg-once/outcome"]: "replayed"`); a concurrent duplicate
 * waits for the first; the same key with other arguments gets an IDEMPOTENCY_KEY_REUSED error
 * result. pg-once's own refusals are error results with `_meta["dev.pg-once/error"]`, never
 * thrown, so the client can branch on their code.
 *
 * The handler gets the transaction as a third argument: its writes commit with the claim and the
 * stored result. Tools need an `inputSchema` (an empty shape `{}` will do): without one the SDK
 * calls the handler without arguments.
 */
export function withIdempotency<ARGS>(
  handler: IdempotentToolHandler<ARGS>,
  options: WithIdempotencyOptions<ARGS>,
): (args: ARGS, extra: ToolExtra) => Promise<CallToolResult> {
  const parsed = parseOptions(withIdempotencyOptionsSchema, options, 'withIdempotency options');
  const run = pickRunOptions(options, OWN_OPTIONS);
  const { db, name, storeErrorResults } = parsed;
  const onMissingKey = parsed.onMissingKey ?? (parsed.sideEffecting ? 'refuse' : 'content');
  const contentKeyTtl = parsed.contentKeyTtl ?? DEFAULT_CONTENT_KEY_TTL_MILLISECONDS;

  return async (args, extra) => {
    try {
      const tenantId = await options.tenantFrom(extra);
      if (tenantId === undefined) {
        throw new InvalidTenantError(`pg-once: tool "${name}" needs an authenticated principal to scope its idempotency keys; none came with the request.`);
      }
      const clientKey = options.keyFrom ? await options.keyFrom(extra, args) : extra._meta?.[IDEMPOTENCY_KEY_META];
      let key: string;
      let ttl = run.ttl;
      if (clientKey === undefined || clientKey === null) {
        if (onMissingKey === 'refuse') {
          throw new InvalidKeyError(
            `pg-once: tool "${name}" has side effects and needs an idempotency key: send one in ` +
              `_meta["${IDEMPOTENCY_KEY_META}"] (callToolOnce does), the same on every retry of this call.`,
          );
        }
        key = mcpKeys.content(name, args ?? {});
        ttl = contentKeyTtl;
      } else if (typeof clientKey !== 'string' || clientKey.length === 0) {
        throw new InvalidKeyError(
          `pg-once: the idempotency key of tool "${name}" must be a non-empty string (got ${typeof clientKey === 'string' ? 'an empty string' : typeof clientKey}).`,
        );
      } else {
        key = mcpKeys.client(clientKey);
      }

      const outcome = await runToolCall({
        db,
        tenantId,
        key,
        tool: name,
        // The tool's name is part of the request: a key is one intent, and sending it to another
        // tool is a client bug to refuse, not a result to replay.
        request: { tool: name, arguments: args ?? {} },
        run: { ...run, ttl },
        internalKey: true,
        // A client that cancelled (or timed out) is not waiting for the answer: stop waiting too.
        signal: extra.signal,
        fn: async (tx) => {
          const result = await handler(args, extra, tx);
          if (result?.isError === true && !storeErrorResults) throw new ErrorResultRollback(result);
          return result;
        },
      });
      const result = outcome.value as CallToolResult;
      return { ...result, _meta: { ...result._meta, [OUTCOME_META]: outcome.outcome } };
    } catch (error) {
      if (error instanceof ErrorResultRollback) return error.result;
      if (error instanceof OnceError || error instanceof StoredCallError) return errorResult(error);
      throw error;
    }
  };
}

/** An MCP error result for one of pg-once's errors, with its code where clients can branch on it. */
function errorResult(error: OnceError | StoredCallError): CallToolResult {
  const meta: ErrorMeta = {
    code: String(error.code ?? error.name),
    retryable: error.retryable ?? false,
    ...(error.httpStatus === undefined ? {} : { httpStatus: error.httpStatus }),
    // Every error that says when to come back (IDEMPOTENCY_IN_PROGRESS, RATE_LIMITED) passes it on.
    ...(error instanceof IdempotencyInProgressError || error instanceof RateLimitedError ? { retryAfterMs: error.retryAfterMs } : {}),
  };
  return { isError: true, content: [{ type: 'text', text: error.message }], _meta: { [ERROR_META]: meta } };
}
