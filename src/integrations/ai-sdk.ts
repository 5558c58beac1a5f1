/**
 * pg-once for the Vercel AI SDK (`ai`, v7): `idempotentTool` wraps a tool so that its `execute`
 * runs at most once per tool call, in a transaction of its own that also holds the tool's writes.
 *
 * The key is `<scope>:<tool name>:<sha256 of the canonical input>`, `scope` being the run (or
 * conversation) id from the application. The SDK never retries `execute` by itself, so
 * duplicates come from the application: a request retried after a timeout, a run resumed from
 * stored messages, two workers picking up the same run. A retried request asks the model again,
 * and real providers then issue NEW tool-call ids: keyed on the toolCallId, the retry would charge
 * a second time. Keyed on the input within the run, it replays, as it does when the model
 * re-issues a call it already made. The price: identical calls (same tool, same input) within one
 * scope run once, so an intent meant twice needs something in its input that tells them apart (an
 * order or intent id). `contentKeys: false` keys on the toolCallId instead
 * (`<scope>:<tool name>:<toolCallId>`), which catches only what re-sends the same ids: a resume
 * from stored messages, two workers on one stored step.
 *
 * The wrapped execute gets the transaction as a third argument: `execute(input, options, tx)`.
 * Every write the tool makes through `tx` (business rows, `enqueue`d events) commits with the
 * claim and the stored result, or not at all.
 */
import type { Kysely, Transaction } from 'kysely';
import type { Tool, ToolExecutionOptions } from 'ai';
import { z } from 'zod';
import { InvalidKeyError, InvalidOptionsError } from '../errors.ts';
import type { Jsonify } from '../idempotency/jsonify.ts';
import { contentKeyTail, outsideReservedNamespaces } from '../keys.ts';
import { parseOptions } from '../options.ts';
import {
  adapterRunOptionsSchema,
  callbackSchema,
  databaseSchema,
  encodeKeyPart,
  pickRunOptions,
  resolvableTextSchema,
  resolve,
  runToolCall,
  type AdapterRunOptions,
  type Resolvable,
} from './internal/run-tool-call.ts';

/** The execute function of a tool given to idempotentTool: the SDK's, plus the transaction. */
export type IdempotentExecute<INPUT, OUTPUT, CONTEXT> = (
  input: INPUT,
  options: ToolExecutionOptions<CONTEXT>,
  tx: Transaction<any>,
) => OUTPUT | PromiseLike<OUTPUT>;

/**
 * A tool as `tool()` takes it, whose execute may take the transaction as a third argument. A tool
 * already made with `tool()` fits too (its execute simply ignores the transaction).
 */
export type IdempotentToolDefinition<INPUT, OUTPUT, CONTEXT> = Omit<Tool<INPUT, OUTPUT, CONTEXT>, 'execute'> & {
  execute: IdempotentExecute<INPUT, OUTPUT, CONTEXT>;
};

/** Computes a value from the call: the SDK's execute options (`context`, `toolCallId`...) and the input. */
export type ToolCallResolvable<T, INPUT, CONTEXT> = Resolvable<T, [options: ToolExecutionOptions<CONTEXT>, input: INPUT]>;

export interface IdempotentToolOptions<INPUT, CONTEXT> extends AdapterRunOptions {
  /** A Kysely instance connected as the application role. Each call runs in a transaction of its own. */
  db: Kysely<any>;
  /**
   * The tool's name, as in the ToolSet given to generateText/streamText (a tool object does not
   * know its own name). Part of every key; stored for audit.
   */
  name: string;
  /** The tenant, or a function of the call, e.g. `({ context }) => context.tenantId`. */
  tenant: ToolCallResolvable<string, INPUT, CONTEXT>;
  /**
   * What keys are unique within: the agent run (or conversation) id, or a function of the call,
   * e.g. `({ context }) => context.runId`. Required unless `key` is given.
   */
  scope?: ToolCallResolvable<string, INPUT, CONTEXT>;
  /**
   * Derives the whole key yourself (then `scope` and `contentKeys` are not used). (Default:
   * `<scope>:<name>:<hash of input>`, or `<scope>:<name>:<toolCallId>` with `contentKeys: false`)
   */
  key?: (options: ToolExecutionOptions<CONTEXT>, input: INPUT) => string | PromiseLike<string>;
  /**
   * Key calls by their input within the scope, `<scope>:<name>:<hash of input>`, rather than by
   * their toolCallId. True catches a retried request whose model answers with new tool-call ids
   * (real providers do), and the model re-issuing a call under a new id; identical calls in one
   * scope then run once, also deliberate ones. False (`<scope>:<name>:<toolCallId>`) catches only
   * re-sends of the same ids: resumes from stored messages, two workers on one stored step.
   * (Default: true)
   */
  contentKeys?: boolean;
}

const OWN_OPTIONS = ['db', 'name', 'tenant', 'scope', 'key', 'contentKeys'] as const;

const idempotentToolOptionsSchema = adapterRunOptionsSchema
  .extend({
    db: databaseSchema,
    name: z.string().min(1).max(64),
    tenant: resolvableTextSchema,
    scope: resolvableTextSchema.optional(),
    key: callbackSchema.optional(),
    contentKeys: z.boolean().default(true),
  })
  .refine((options) => options.scope !== undefined || options.key !== undefined, {
    message: 'give `scope` (e.g. the run id), or `key` to derive keys yourself',
    path: ['scope'],
  });

/**
 * Wraps an AI SDK tool so that its `execute` runs at most once per key within a tenant, with its
 * writes, its claim and its stored result in one transaction. A repeated call returns the stored
 * result without running `execute`; the same key with a different input is refused
 * (IdempotencyKeyReusedError); a concurrent duplicate waits for the first and returns its result.
 *
 * The result goes through JSON on the first call and on every replay alike, so the model sees
 * the same output both times (a Date becomes its ISO string).
 */
export function idempotentTool<INPUT, OUTPUT, CONTEXT = unknown>(
  definition: IdempotentToolDefinition<INPUT, OUTPUT, CONTEXT>,
  options: IdempotentToolOptions<INPUT, CONTEXT>,
): Tool<INPUT, Jsonify<OUTPUT>, CONTEXT> {
  const parsed = parseOptions(idempotentToolOptionsSchema, options, 'idempotentTool options');
  const execute = (definition as { execute?: unknown }).execute;
  if (typeof execute !== 'function') {
    throw new InvalidOptionsError('idempotentTool tool', [
      { path: ['execute'], message: 'the tool has no execute function, so there is nothing to run once', code: 'custom' },
    ]);
  }
  const run = pickRunOptions(options, OWN_OPTIONS);
  const { db, name } = parsed;
  const deriveKey = keyDeriver<INPUT, CONTEXT>(options, name, parsed.contentKeys);

  return {
    ...definition,
    execute: async (input: INPUT, callOptions: ToolExecutionOptions<CONTEXT>) => {
      const tenantId = await resolve(options.tenant, callOptions, input);
      const key = await deriveKey(callOptions, input);
      const { value } = await runToolCall({
        db,
        tenantId,
        key,
        tool: name,
        request: input,
        run,
        // The AI SDK has no namespace of its own: its keys are the application's, built from its scope.
        internalKey: false,
        fn: async (tx) => {
          const result = await (execute as IdempotentExecute<INPUT, OUTPUT, CONTEXT>)(input, callOptions, tx);
          if (isAsyncIterable(result)) {
            // Preliminary outputs are shown to the user as they stream; a replay could not show
            // them again, and only a final value can be stored.
            throw new TypeError(`pg-once: tool "${name}" streams its output (execute returned an AsyncIterable); idempotentTool needs a single result.`);
          }
          return result;
        },
      });
      return value;
    },
  } as unknown as Tool<INPUT, Jsonify<OUTPUT>, CONTEXT>;
}

function keyDeriver<INPUT, CONTEXT>(
  options: IdempotentToolOptions<INPUT, CONTEXT>,
  name: string,
  contentKeys: boolean,
): (callOptions: ToolExecutionOptions<CONTEXT>, input: INPUT) => Promise<string> {
  if (options.key) {
    const key = options.key;
    return async (callOptions, input) => key(callOptions, input);
  }
  const scope = options.scope!;
  return async (callOptions, input) => {
    const prefix = await resolve(scope, callOptions, input);
    if (typeof prefix !== 'string' || prefix.length === 0) {
      throw new InvalidKeyError(`pg-once: the scope of tool "${name}" must be a non-empty string (got ${typeof prefix}).`);
    }
    if (contentKeys) return outsideReservedNamespaces(`${prefix}:${contentKeyTail(name, input)}`);
    const toolCallId = callOptions?.toolCallId;
    if (typeof toolCallId !== 'string' || toolCallId.length === 0) {
      throw new InvalidKeyError(
        `pg-once: tool "${name}" was called without a toolCallId; call it through generateText/streamText, or use content keys (the default) or key.`,
      );
    }
    return outsideReservedNamespaces(`${prefix}:${encodeKeyPart(name)}:${encodeKeyPart(toolCallId)}`);
  };
}

function isAsyncIterable(value: unknown): value is AsyncIterable<unknown> {
  return typeof value === 'object' && value !== null && typeof (value as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function';
}
