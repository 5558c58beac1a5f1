/**
 * pg-once for the MCP TypeScript SDK (`@modelcontextprotocol/sdk`): `import { withIdempotency,
 * callToolOnce } from 'pg-once/mcp'`. The server wraps a tool handler; the client sends the key.
 */
export { withIdempotency } from './mcp/with-idempotency.ts';
export type { IdempotentToolHandler, ToolExtra, WithIdempotencyOptions } from './mcp/with-idempotency.ts';
export { callToolOnce } from './mcp/call-tool-once.ts';
export type { CallToolOnceOptions } from './mcp/call-tool-once.ts';
export { ERROR_META, IDEMPOTENCY_KEY_META, OUTCOME_META } from './mcp/meta.ts';
export type { ErrorMeta } from './mcp/meta.ts';
