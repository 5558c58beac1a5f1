/**
 * callToolOnce: the client side of withIdempotency. Sends a tools/call with the idempotency key in
 * `_meta["dev.pg-once/idempotency-key"]`, and retries under the same key when a retry is safe:
 * after a request timeout (the server may still be running the first attempt; the retry waits for
 * it and gets its result) and after an IDEMPOTENCY_IN_PROGRESS error result.
 */
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { RequestOptions } from '@modelcontextprotocol/sdk/shared/protocol.js';
import type { CallToolRequest } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import { assertKeyForm } from '../../keys.ts';
import { parseOptions } from '../../options.ts';
import { mcpKeys } from '../internal/adapter-keys.ts';
import { ERROR_META, IDEMPOTENCY_KEY_META, type ErrorMeta } from './meta.ts';

/** JSON-RPC error code the SDK raises when a request gets no answer within its timeout. */
const MCP_REQUEST_TIMEOUT = -32_001;
/** Longest pause between attempts, in milliseconds, whatever the server's retryAfterMs says. */
const MAX_RETRY_PAUSE_MILLISECONDS = 5_000;

const callToolOnceOptionsSchema = z
  .object({
    /**
     * The idempotency key of this intent: generate it once (e.g. `crypto.randomUUID()`) and store
     * it with the intent, so every retry, from this process or a restarted one, sends the same.
     */
    key: z.string(),
    /** Further attempts after a timeout or an IDEMPOTENCY_IN_PROGRESS answer. (Default: 2) */
    retries: z.number().int().min(0).max(20).default(2),
    /** The SDK's per-request options (timeout, signal...), used for every attempt. (Default: the SDK's) */
    request: z.custom<RequestOptions>((value) => typeof value === 'object' && value !== null).optional(),
  })
  .strict();
export type CallToolOnceOptions = z.input<typeof callToolOnceOptionsSchema>;

type CallToolResponse = Awaited<ReturnType<Client['callTool']>>;

/** Calls a tool with an idempotency key; see the module comment for what is retried. */
export async function callToolOnce(client: Client, params: CallToolRequest['params'], options: CallToolOnceOptions): Promise<CallToolResponse> {
  const { key, retries, request } = parseOptions(callToolOnceOptionsSchema, options, 'callToolOnce options');
  assertKeyForm(key);
  // The server prefixes the key with 'mcp:', so 4 characters of the limit are spoken for.
  assertKeyForm(mcpKeys.client(key));
  const withKey = { ...params, _meta: { ...params._meta, [IDEMPOTENCY_KEY_META]: key } };
  for (let attempt = 0; ; attempt += 1) {
    let result: CallToolResponse;
    try {
      result = await client.callTool(withKey, undefined, request);
    } catch (error) {
      if (attempt < retries && (error as { code?: unknown } | null)?.code === MCP_REQUEST_TIMEOUT) continue;
      throw error;
    }
    const meta = (result._meta as Record<string, unknown> | undefined)?.[ERROR_META] as ErrorMeta | undefined;
    if (attempt < retries && result.isError === true && meta?.code === 'IDEMPOTENCY_IN_PROGRESS') {
      await new Promise((resolve) => setTimeout(resolve, Math.min(meta.retryAfterMs ?? 100, MAX_RETRY_PAUSE_MILLISECONDS)));
      continue;
    }
    return result;
  }
}
