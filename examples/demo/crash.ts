/**
 * A crash and restart of a worker mid-run. The run goes to a worker process, which is killed with
 * SIGKILL inside one of its tool calls. A restarted worker then resumes the run from its last
 * checkpoint (its start): the calls that had committed replay their stored results, the one that
 * was killed runs for the first time (its uncommitted claim died with the connection).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { RunPlan } from './plan.ts';
import type { DemoStats } from './stats.ts';
import type { WorkerJob } from './worker-process.ts';

const WORKER = fileURLToPath(new URL('./worker-process.ts', import.meta.url));

export async function runCrashingRun(plan: RunPlan, appUrl: string, stats: DemoStats): Promise<void> {
  const first = await runWorker({ appUrl, plan, hangInside: plan.crash!.intent }, stats);
  if (first.signal !== 'SIGKILL') throw new Error(`the worker of ${plan.runId} was to be killed mid-call, but it ${describe(first)}`);
  const resumed = await runWorker({ appUrl, plan }, stats);
  if (!resumed.done || resumed.code !== 0) throw new Error(`the resumed worker of ${plan.runId} ${describe(resumed)}`);
}

interface WorkerExit {
  done: boolean;
  code: number | null;
  signal: NodeJS.Signals | null;
}

async function runWorker(job: WorkerJob, stats: DemoStats): Promise<WorkerExit> {
  const child = spawn(process.execPath, [WORKER], {
    env: { ...process.env, DEMO_WORKER_JOB: JSON.stringify(job) },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  let done = false;
  for await (const line of createInterface({ input: child.stdout! })) {
    const message = JSON.parse(line);
    if (message.type === 'reply') stats.record(message.call, message.reply);
    else if (message.type === 'done') done = true;
    else if (message.type === 'inside') {
      child.kill('SIGKILL');
      stats.recordKilled();
    }
  }
  const [code, signal] = await exited;
  return { done, code, signal };
}

function describe(exit: WorkerExit): string {
  return exit.signal ? `died of ${exit.signal}` : `exited with code ${exit.code}${exit.done ? '' : ' before finishing'}`;
}
