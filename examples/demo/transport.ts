/**
 * Between the orchestrator and the tool server: where the duplicates come from. A call that times
 * out is sent again; a queue hands one message to two consumers at once. Each attempt is a full
 * tool call on the server; the client keeps whichever answer reaches it.
 */
import type { Intent, RunPlan } from './plan.ts';
import { sleep } from './random.ts';
import type { Reply, ToolCall } from './tool-server.ts';
import type { SendCall } from './agent.ts';

/** One attempt on the tool server: `workMs` is how long the tool works if it runs. */
export type Attempt = (call: ToolCall, workMs: number) => Promise<Reply>;

/** The client gives up waiting for an answer after this long and sends the call again. */
export const CLIENT_TIMEOUT_MS = 60;
const MAX_ATTEMPTS = 50;

/** Sends until answered: a 409 (a duplicate still in progress) is retried after its Retry-After. */
export async function sendUntilAnswered(attempt: Attempt, call: ToolCall, workMs: number): Promise<unknown> {
  for (let i = 1; ; i++) {
    const reply = await attempt(call, workMs);
    if (reply.outcome !== 'rejected') return reply.result;
    if (i === MAX_ATTEMPTS) throw new Error(`${call.tool} of ${call.runId}: still ${reply.code} after ${i} attempts`);
    await sleep(reply.retryAfterMs);
  }
}

/**
 * The orchestrator's sender for one run, with the run's planned duplicates. Attempts whose answer
 * the client no longer waits for still run to the end on the server; they are collected in
 * `abandoned` so the demo can wait for them before it counts.
 */
export function duplicatingSender(plan: RunPlan, attempt: Attempt, abandoned: Promise<unknown>[]): SendCall {
  return async (call: ToolCall, intent: Intent, reinvoked: boolean) => {
    const workMs = plan.workMs[intent]!;
    if (reinvoked) return sendUntilAnswered(attempt, call, workMs);
    const retry = plan.networkRetry?.intent === intent ? plan.networkRetry : undefined;
    if (retry?.kind === 'slow') {
      // The tool is slow this time; the client times out and sends the call again while the
      // first attempt still holds the claim. The retry waits for it, or gets a 409 and retries.
      const first = attempt(call, retry.slowMs);
      abandoned.push(first);
      await Promise.race([first, sleep(CLIENT_TIMEOUT_MS)]);
    } else if (retry?.kind === 'lost') {
      // The call ran and committed, but its answer was lost on the way back; after its timeout
      // the client sends it again and gets the stored result.
      await attempt(call, workMs);
      await sleep(CLIENT_TIMEOUT_MS);
    }
    if (plan.redelivery?.intent === intent) {
      // At-least-once delivery: two consumers get the same message at (nearly) the same time.
      const [answer] = await Promise.all([sendUntilAnswered(attempt, call, workMs), sendUntilAnswered(attempt, call, workMs)]);
      return answer;
    }
    return sendUntilAnswered(attempt, call, workMs);
  };
}
