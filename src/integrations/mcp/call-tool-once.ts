/**
 * callToolOnce: the client side of withIdempotency. Sends a tools/call with the idempotency key in
 * `_meta["dev.pg-once/idempotency-key"]`, and retries under the same key when a retry is safe:
 * after a request timeout (the server may still be running the first attempt; the retry waits for
 * it and gets its result) and after an IDEMPOTENCY_IN_PROGRESS error result.
 *
 * Retries back off exponentially, with jitter. Retrying at once after a timeout is what a slow
 * tool cannot take: each attempt lands while the first still runs, and waits on the server, so a
 * few clients retrying together fill the server's pool with waiting duplicates and delay every
 * other tenant's calls. (The SDK cancels a timed-out request, and withIdempotency stops a cancelled
 * duplicate's wait, but only within a slice of its wait: the pause still matters.)
 */
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { RequestOptions } from '@modelcontextprotocol/sdk/shared/protocol.js';
import type { CallToolRequest } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import { assertKeyForm } from '../../keys.ts';
import { parseOptions } from '../../options.ts';
import { defaultBackoff, type BackoffPolicy } from '../../outbox/backoff.ts';
import { callbackSchema } from '../internal/run-tool-call.ts';
import { mcpKeys } from '../internal/adapter-keys.ts';
import { ERROR_META, IDEMPOTENCY_KEY_META, type ErrorMeta } from './meta.ts';
import { sleep } from '../../internal/sleep.ts';

/** JSON-RPC error code the SDK raises when a request gets no answer within its timeout. */
const MCP_REQUEST_TIMEOUT = -32_001;
/** Longest pause the server's retryAfterMs can ask for, in milliseconds. */
const MAX_RETRY_AFTER_MILLISECONDS = 5_000;

export interface CallToolOnceOptions {
  /**
   * The idempotency key of this intent: generate it once (e.g. `crypto.randomUUID()`) and store
   * it with the intent, so every retry, from this process or a restarted one, sends the same.
   * 1..251 characters without control characters. (Required)
   */
  key: string;
  /** Further attempts after a timeout or an IDEMPOTENCY_IN_PROGRESS answer, 0..20. (Default: 2) */
  retries?: number;
  /**
   * The pause before each retry, in milliseconds, from the number of attempts made so far (1 for
   * the pause after the first). An IDEMPOTENCY_IN_PROGRESS answer's `retryAfterMs` (at most 5 s)
   * lengthens it, never shortens it. (Default: `defaultBackoff({ initialMs: 250, maxMs: 5_000 })`:
   * 125..250 ms after the first attempt, doubling after each, half of each pause random)
   */
  backoff?: BackoffPolicy;
  /**
   * The SDK's per-request options (timeout, signal...), used for every attempt. Aborting `signal`
   * also ends a pause between attempts, and the SDK tells the server, which stops waiting.
   * (Default: the SDK's)
   */
  request?: RequestOptions;
}

const DEFAULT_BACKOFF = defaultBackoff({ initialMs: 250, maxMs: 5_000 });

const callToolOnceOptionsSchema = z
  .object({
    key: z.string(),
    retries: z.number().int().min(0).max(20).default(2),
    backoff: callbackSchema.optional(),
    request: z.custom<RequestOptions>((value) => typeof value === 'object' && value !== null).optional(),
  })
  .strict();

type CallToolResponse = Awaited<ReturnType<Client['callTool']>>;

/** Calls a tool with an idempotency key; see the module comment for what is retried. */
export async function callToolOnce(client: Client, params: CallToolRequest['params'], options: CallToolOnceOptions): Promise<CallToolResponse> {
  const { key, retries, request } = parseOptions(callToolOnceOptionsSchema, options, 'callToolOnce options');
  const backoff = options.backoff ?? DEFAULT_BACKOFF;
  assertKeyForm(key);
  // The server prefixes the key with 'mcp:', so 4 characters of the limit are spoken for.
  assertKeyForm(mcpKeys.client(key));
  const withKey = { ...params, _meta: { ...params._meta, [IDEMPOTENCY_KEY_META]: key } };
  for (let attempt = 1; ; attempt += 1) {
    let retryAfterMs = 0;
    try {
      const result = await client.callTool(withKey, undefined, request);
      const meta = (result._meta as Record<string, unknown> | undefined)?.[ERROR_META] as ErrorMeta | undefined;
      if (attempt > retries || result.isError !== true || meta?.code !== 'IDEMPOTENCY_IN_PROGRESS') return result;
      retryAfterMs = Math.min(meta.retryAfterMs ?? 0, MAX_RETRY_AFTER_MILLISECONDS);
    } catch (error) {
      if (attempt > retries || (error as { code?: unknown } | null)?.code !== MCP_REQUEST_TIMEOUT) throw error;
    }
    await sleep(Math.max(backoff(attempt), retryAfterMs), request?.signal);
  }
}
