/**
 * idempotentLangGraphTool: wraps the function of a LangChain tool (the first argument of `tool()`
 * from @langchain/core/tools) so that it runs at most once per tool call of a thread, key
 * `lg:<thread_id>:<toolCallId>`.
 *
 * Why these ids hold: the AIMessage carrying the tool calls is checkpointed before ToolNode runs,
 * so a node retry, a resume after a crash (`graph.invoke(null, config)`) or a second worker
 * resuming the same thread all run the very same tool calls, ids included. That holds only if
 * that checkpoint was written before the tools ran: run the graph with `durability: "sync"`. With
 * the default "async", a crash can lose it, the model is called again, and its new tool calls
 * carry new ids.
 */
import type { Kysely, Transaction } from 'kysely';
import type { ToolRuntime } from '@langchain/core/tools';
import { z } from 'zod';
import { InvalidKeyError } from '../../errors.ts';
import type { Jsonify } from '../../idempotency/jsonify.ts';
import { parseOptions } from '../../options.ts';
import {
  adapterRunOptionsSchema,
  callbackSchema,
  databaseSchema,
  pickRunOptions,
  resolvableTextSchema,
  resolve,
  runToolCall,
  type AdapterRunOptions,
  type Resolvable,
} from '../internal/run-tool-call.ts';
import { langGraphKeys } from '../internal/adapter-keys.ts';
import { threadIdOf } from './thread-id.ts';

/** A tool function given to idempotentLangGraphTool: LangChain's, plus the transaction. */
export type IdempotentToolFunction<INPUT, OUTPUT, RUNTIME> = (input: INPUT, runtime: RUNTIME, tx: Transaction<any>) => OUTPUT | PromiseLike<OUTPUT>;

export interface IdempotentLangGraphToolOptions<INPUT, RUNTIME> extends AdapterRunOptions {
  /** A Kysely instance connected as the application role. Each call runs in a transaction of its own. */
  db: Kysely<any>;
  /** The tenant, or a function of the call, e.g. `(runtime) => runtime.context.tenantId`. */
  tenant: Resolvable<string, [runtime: RUNTIME, input: INPUT]>;
  /** The tool's name, for audit rows and content keys. (Default: the name in the tool call) */
  name?: string;
  /** Derives the whole key yourself. (Default: `lg:<thread_id>:<toolCallId>`, or the content key) */
  key?: (runtime: RUNTIME, input: INPUT) => string | PromiseLike<string>;
  /**
   * Key calls by their input rather than their id, `lg:<thread_id>:<name>:<hash of input>`: catches
   * the model re-issuing a call it already made under a new id, and also runs deliberate
   * identical calls once per thread. (Default: false)
   */
  contentKeys?: boolean;
}

const OWN_OPTIONS = ['db', 'tenant', 'name', 'key', 'contentKeys'] as const;

const optionsSchema = adapterRunOptionsSchema.extend({
  db: databaseSchema,
  tenant: resolvableTextSchema,
  name: z.string().min(1).max(64).optional(),
  key: callbackSchema.optional(),
  contentKeys: z.boolean().default(false),
});

/**
 * Returns a tool function to give to `tool(fn, { name, schema })`: it runs `fn(input, runtime,
 * tx)` at most once per key within the tenant, its writes committing with the claim and the
 * stored result; a repeated call returns the stored result (as JSON round-trips it) without
 * running `fn`.
 */
export function idempotentLangGraphTool<INPUT, OUTPUT, RUNTIME extends ToolRuntime<any, any> = ToolRuntime>(
  fn: IdempotentToolFunction<INPUT, OUTPUT, RUNTIME>,
  options: IdempotentLangGraphToolOptions<INPUT, RUNTIME>,
): (input: INPUT, runtime: RUNTIME) => Promise<Jsonify<OUTPUT>> {
  const parsed = parseOptions(optionsSchema, options, 'idempotentLangGraphTool options');
  const run = pickRunOptions(options, OWN_OPTIONS);

  return async (input, runtime) => {
    const name = parsed.name ?? runtime?.toolCall?.name;
    const tenantId = await resolve(options.tenant, runtime, input);
    const key = options.key ? await options.key(runtime, input) : toolCallKey(runtime, input, name, parsed.contentKeys);
    const { value } = await runToolCall({
      db: parsed.db,
      tenantId,
      key,
      tool: name,
      request: input,
      run,
      internalKey: options.key === undefined,
      fn: async (tx) => fn(input, runtime, tx),
    });
    return value;
  };
}

function toolCallKey(runtime: ToolRuntime<any, any>, input: unknown, name: string | undefined, contentKeys: boolean): string {
  const what = `tool "${name ?? 'unnamed'}"`;
  const threadId = threadIdOf(runtime?.configurable, what);
  if (contentKeys) {
    if (name === undefined) throw new InvalidKeyError(`pg-once: contentKeys need the tool's name: pass \`name\`, or call the tool through ToolNode.`);
    return langGraphKeys.content(threadId, name, input);
  }
  // ToolNode sets runtime.toolCallId; a tool invoked with a ToolCall directly has config.toolCall.
  const toolCallId = runtime?.toolCallId || runtime?.toolCall?.id;
  if (typeof toolCallId !== 'string' || toolCallId.length === 0) {
    throw new InvalidKeyError(
      `pg-once: ${what} was called without a tool call id; run it through ToolNode (or invoke it with a ToolCall), or use contentKeys or key.`,
    );
  }
  return langGraphKeys.toolCall(threadId, toolCallId);
}
