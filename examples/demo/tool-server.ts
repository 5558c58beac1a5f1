/**
 * The tool server: what runs a tool call the orchestrator sends. Every call, first or duplicate,
 * takes the same path: withTenant (row-level security for the call's tenant) around
 * runIdempotent (claim the key, run the tool, store its result; or replay the stored result).
 */
import type { Kysely } from 'kysely';
import { keys, OnceError, runIdempotent, withTenant } from '../../src/index.ts';
import { runTool, type CallContext, type ToolInvocation } from './tools.ts';

/** A tool call as the orchestrator sends it: the model's tool and arguments, in a tenant's run. */
export type ToolCall = ToolInvocation & { tenantId: string; runId: string };

/**
 * How each call is counted. 'waited': a concurrent duplicate waited for the first call, then got
 * its result. 'rejected': it waited longer than WAIT_MS and was answered 409 (retryable), as an
 * HTTP tool server would. 'killed' is counted by whoever killed the process.
 */
export type CallOutcome = 'executed' | 'replayed' | 'waited' | 'rejected' | 'killed';

export type Reply =
  | { outcome: 'executed' | 'replayed' | 'waited'; waited: boolean; result: unknown }
  | { outcome: 'rejected'; status: number; code: string; retryAfterMs: number };

/**
 * How long a duplicate waits for a first call still in progress before it is answered 409 with
 * Retry-After. Short on purpose: an agent's tool call has a deadline, and the client retrying
 * later is cheaper than a connection held waiting.
 */
export const WAIT_MS = 100;

/**
 * The idempotency key, derived by the orchestrator, never by the model: the run, the tool and
 * a hash of the arguments. Network retries, resumes and queue redeliveries repeat the step too,
 * but a model re-invoking a call does so in a LATER step, so a key that included the step
 * (`keys.orchestrator({ runId, step, tool, args })`) would run it again. Within one run, the same
 * tool with the same arguments is one intent; across runs, two identical orders stay two orders.
 * (The AI SDK adapter's `contentKeys` option keys the same way: `<scope>:<tool>:<hash>`.)
 */
export function toolCallKey(call: ToolCall): string {
  return `${call.runId}:${keys.content(call.tool, call.args)}`;
}

export async function handleToolCall(db: Kysely<any>, call: ToolCall, work: CallContext['work']): Promise<Reply> {
  try {
    const { value, outcome, waited } = await withTenant(db, call.tenantId, (tx) =>
      runIdempotent.detailed(tx, toolCallKey(call), (t) => runTool(t, call, { runId: call.runId, work }), {
        // Fingerprinted: the same key with other arguments would be refused (422), not replayed.
        request: call.args,
        tool: call.tool,
        waitMs: WAIT_MS,
      }),
    );
    return { outcome: outcome === 'executed' ? 'executed' : waited ? 'waited' : 'replayed', waited, result: value };
  } catch (error) {
    if (error instanceof OnceError && error.retryable) {
      const retryAfterMs = 'retryAfterMs' in error && typeof error.retryAfterMs === 'number' ? error.retryAfterMs : 100;
      return { outcome: 'rejected', status: error.httpStatus, code: error.code, retryAfterMs };
    }
    throw error;
  }
}
