/**
 * A worker in a process of its own, so that a crash is a real one: the demo kills it with SIGKILL
 * in the middle of a tool call, while its transaction holds the claim, the business row and the
 * outbox event, none of them committed. Postgres rolls all of it back when the connection dies.
 *
 * Input: DEMO_WORKER_JOB, JSON { appUrl, plan, hangInside? }. Runs the plan's agent run from its
 * start (the run's last checkpoint) and reports on stdout, one JSON line each:
 *   { type: 'reply', call, reply }   an answer of the tool server
 *   { type: 'inside', intent }       inside the tool call of `hangInside`, writes done; it hangs here
 *   { type: 'done' }
 */
import { Kysely, PostgresDialect } from 'kysely';
import { runAgent } from './agent.ts';
import { quietPool } from './quiet-pool.ts';
import type { Intent, RunPlan } from './plan.ts';
import { sleep } from './random.ts';
import { handleToolCall } from './tool-server.ts';
import { sendUntilAnswered } from './transport.ts';

export interface WorkerJob {
  appUrl: string;
  plan: RunPlan;
  /** Hang inside this intent's tool call (to be killed there). */
  hangInside?: Intent;
}

const job = JSON.parse(process.env.DEMO_WORKER_JOB ?? 'null') as WorkerJob | null;
if (!job) throw new Error('worker-process: set DEMO_WORKER_JOB (it is started by examples/demo.ts)');

const emit = (message: object) => process.stdout.write(`${JSON.stringify(message)}\n`);
const db = new Kysely<any>({ dialect: new PostgresDialect({ pool: quietPool(job.appUrl, 2) }) });

await runAgent(job.plan, (call, intent) => {
  const work = (workMs: number) =>
    intent === job.hangInside
      ? async () => {
          emit({ type: 'inside', intent });
          await new Promise(() => {}); // the tool's work never ends here: SIGKILL comes first
        }
      : () => sleep(workMs);
  return sendUntilAnswered(
    async (c, workMs) => {
      const reply = await handleToolCall(db, c, work(workMs));
      emit({ type: 'reply', call: c, reply });
      return reply;
    },
    call,
    job.plan.workMs[intent]!,
  );
});
emit({ type: 'done' });
await db.destroy();
