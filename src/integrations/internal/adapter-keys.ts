/**
 * The keys the MCP and LangGraph adapters write, in one place: each starts with its adapter's
 * reserved prefix (`mcp:`, `lg:`, `once:http:`; see src/internal/internal-key.ts), which runIdempotent refuses
 * in every key but the one an adapter is running. So a model that writes keys (through
 * `keys.fromModel` or a tool argument) can never claim an adapter's record, nor one adapter's
 * key another's. The formats are 0.1's, byte for byte: records written before an upgrade still
 * replay after it.
 */
import { createHash } from 'node:crypto';
import { contentKeyTail, encodeKeyPart, MAX_KEY_LENGTH } from '../../keys.ts';

export const mcpKeys = {
  /** A client's key (`_meta["dev.pg-once/idempotency-key"]` or keyFrom): `mcp:<key>`. */
  client: (clientKey: string): string => `mcp:${clientKey}`,
  /** A call without a key, by its tool and arguments: `mcp:content:<tool>:<hash>`. */
  content: (tool: string, args: unknown): string => `mcp:content:${contentKeyTail(tool, args)}`,
};

/** Principals longer than this (percent-encoded) go into HTTP keys as a hash. */
const MAX_PRINCIPAL_PART = 64;

export const httpKeys = {
  /**
   * An HTTP client's `Idempotency-Key`, scoped by the principal that sent it:
   * `once:http:<principal>:<key>`. The principal is percent-encoded (so it holds no ':' and the
   * key starts after the first ':' that follows it), empty when the adapter scopes by tenant only
   * (a principal of '' is the same: no principal), and `%h<sha256>` when it is long: encoding
   * never writes '%' before anything but '25' or '3A', so no principal's own text is ever taken
   * for another's hash. Distinct (principal, key) pairs give distinct keys.
   */
  client: (principal: string | undefined, clientKey: string): string => {
    if (principal === undefined) return `once:http::${clientKey}`;
    const encoded = encodeKeyPart(principal);
    const part = encoded.length <= MAX_PRINCIPAL_PART ? encoded : `%h${createHash('sha256').update(principal).digest('hex').slice(0, 32)}`;
    return `once:http:${part}:${clientKey}`;
  },
};

export const langGraphKeys = {
  /** A ToolNode call: `lg:<thread_id>:<toolCallId>`, the id percent-encoded. */
  toolCall: (threadId: string, toolCallId: string): string => `lg:${threadId}:${encodeKeyPart(toolCallId)}`,
  /** A tool call keyed by its input: `lg:<thread_id>:<tool>:<hash>`. */
  content: (threadId: string, tool: string, input: unknown): string => `lg:${threadId}:${contentKeyTail(tool, input)}`,
  /**
   * A task: `lg:<thread_id>:<checkpoint namespace>`, or the namespace's sha256 when the key
   * would be too long (deep subgraphs).
   */
  task: (threadId: string, namespace: string): string => {
    const key = `lg:${threadId}:${namespace}`;
    if (key.length <= MAX_KEY_LENGTH) return key;
    return `lg:${threadId}:${createHash('sha256').update(namespace).digest('hex').slice(0, 32)}`;
  },
};
