/**
 * idempotentTask: a LangGraph functional-API `task` whose function runs at most once per task
 * execution, even across a crash between its commit and the checkpointer recording its result.
 *
 * LangGraph already skips a task whose result was checkpointed. The gap is the window after the
 * task's effects committed and before its result was saved: a resume runs it again. The task id
 * closes it: LangGraph derives it (uuid5) from the checkpoint, the namespace, the step and the
 * call's position, so a resume from the same checkpoint gives the same id. The key is
 * `lg:<thread_id>:<checkpoint namespace>`, the namespace ending in `<task name>:<task id>`
 * (e.g. `lg:t1:workflow:6f1c…|charge:a592…`); a namespace too long for a key (deep subgraphs) is
 * replaced by its sha256. Run with `durability: "sync"`, so the checkpoint the ids derive from is
 * saved before the task runs.
 */
import type { Kysely, Transaction } from 'kysely';
import { getConfig, task, type LangGraphRunnableConfig, type TaskOptions } from '@langchain/langgraph';
import { InvalidKeyError } from '../../errors.ts';
import type { Jsonify } from '../../idempotency/jsonify.ts';
import { parseOptions } from '../../options.ts';
import {
  adapterRunOptionsSchema,
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

export interface IdempotentTaskOptions<INPUT> extends AdapterRunOptions {
  /** A Kysely instance connected as the application role. Each call runs in a transaction of its own. */
  db: Kysely<any>;
  /** The tenant, or a function of the task's config and input, e.g. `(config) => config.context.tenantId`. */
  tenant: Resolvable<string, [config: LangGraphRunnableConfig, input: INPUT]>;
}

const OWN_OPTIONS = ['db', 'tenant'] as const;

const optionsSchema = adapterRunOptionsSchema.extend({ db: databaseSchema, tenant: resolvableTextSchema });

/**
 * Defines a task (as `task(name, fn)` does) whose `fn(input, tx)` runs at most once per task
 * execution within the tenant; its writes commit with the claim and the stored result. `name` may
 * be LangGraph's TaskOptions (`{ name, retry, timeout }`).
 */
export function idempotentTask<INPUT, OUTPUT>(
  name: string | TaskOptions,
  fn: (input: INPUT, tx: Transaction<any>) => OUTPUT | PromiseLike<OUTPUT>,
  options: IdempotentTaskOptions<INPUT>,
): (input: INPUT) => Promise<Jsonify<OUTPUT>> {
  const parsed = parseOptions(optionsSchema, options, 'idempotentTask options');
  const run = pickRunOptions(options, OWN_OPTIONS);
  const taskOptions = typeof name === 'string' ? { name } : name;

  // task()'s type nests the Promise (Promise<Promise<T>>); at run time it is one Promise.
  const wrapped = async (input: INPUT): Promise<Jsonify<OUTPUT>> => {
    const config = getConfig();
    const tenantId = await resolve(options.tenant, config, input);
    const { value } = await runToolCall({
      db: parsed.db,
      tenantId,
      key: taskKey(config, taskOptions.name),
      tool: taskOptions.name,
      request: input ?? null,
      run,
      internalKey: true,
      fn: async (tx) => fn(input, tx),
    });
    return value;
  };
  return task(taskOptions, wrapped as (input: INPUT) => Promise<unknown>) as (input: INPUT) => Promise<Jsonify<OUTPUT>>;
}

function taskKey(config: LangGraphRunnableConfig, name: string): string {
  const what = `task "${name}"`;
  const threadId = threadIdOf(config.configurable, what);
  // executionInfo (recent @langchain/langgraph) and configurable.checkpoint_ns carry the same
  // namespace inside a task: `<parent ns>|<task name>:<task id>`.
  const namespace = config.executionInfo?.checkpointNs ?? config.configurable?.checkpoint_ns;
  const taskId = config.executionInfo?.taskId;
  if (typeof namespace !== 'string' || namespace.length === 0 || (taskId !== undefined && !namespace.endsWith(taskId))) {
    throw new InvalidKeyError(`pg-once: ${what} found no task id in its config; call it from inside an entrypoint or a graph node.`);
  }
  return langGraphKeys.task(threadId, namespace);
}
