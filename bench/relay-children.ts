/**
 * The relay processes of the many-relays bench (bench/relays.ts): each a child running
 * bench/relays-child.ts, started and stopped together, with what it printed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { processCpuSeconds } from './cpu-time.ts';
import type { ChildResult } from './relays-child.ts';
import type { BenchDatabase } from './setup.ts';

export interface RelayPlan {
  relays: number;
  sinkMs: number;
  concurrency: number;
}

/** A relay child process and what it printed. */
export class RelayChild {
  readonly process: ChildProcess;
  readonly ready: Promise<void>;
  readonly result: Promise<ChildResult>;

  constructor(env: Record<string, string>) {
    this.process = spawn(process.execPath, [new URL('./relays-child.ts', import.meta.url).pathname], {
      env: { ...process.env, ...env },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    let output = '';
    let onReady!: () => void;
    this.ready = new Promise<void>((resolve) => (onReady = resolve));
    this.result = new Promise<ChildResult>((resolve, reject) => {
      this.process.stdout!.on('data', (data: Buffer) => {
        output += data.toString();
        if (output.includes('READY\n')) onReady();
      });
      this.process.on('exit', (code) => {
        const line = output.split('\n').find((l) => l.startsWith('RESULT '));
        try {
          if (!line) throw new Error(`relay child exited with ${code} before its result`);
          resolve(JSON.parse(line.slice('RESULT '.length)) as ChildResult);
        } catch (error) {
          reject(error);
        }
      });
    });
    // A child that dies before READY must not leave the bench waiting forever.
    this.result.catch(() => onReady());
  }

  send(line: 'mark' | 'stop'): void {
    this.process.stdin!.write(`${line}\n`);
  }

  cpuSeconds(): number {
    return processCpuSeconds(this.process.pid!) ?? Number.NaN;
  }
}

export async function startChildren(bench: BenchDatabase, plan: RelayPlan, sweep = false): Promise<RelayChild[]> {
  const children = Array.from(
    { length: plan.relays },
    () => new RelayChild({ DATABASE_URL: bench.relayUrl, SINK_MS: String(plan.sinkMs), CONCURRENCY: String(plan.concurrency), SWEEP: sweep ? '1' : '0' }),
  );
  await Promise.all(children.map((child) => child.ready));
  return children;
}

export async function stopChildren(children: RelayChild[]): Promise<ChildResult[]> {
  for (const child of children) child.send('stop');
  return Promise.all(children.map((child) => child.result));
}
