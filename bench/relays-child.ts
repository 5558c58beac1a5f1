/**
 * One relay process of the many-relays bench (bench/relays.ts): startRelay with a sink that
 * records when it was called for which event, and a count of the relay's statements and the
 * client-side time of its claims and settles (the relay's own code is not touched: every
 * pg.Client query of this process is timed from the outside).
 *
 * Environment: DATABASE_URL (a relay login), SINK_MS (the sink's latency, 0 = instant),
 * CONCURRENCY (default 32), SWEEP=1 (run the relay's cron sweeps; default off).
 * Protocol: prints "READY" once the relay runs; on stdin "mark" starts counting statements again
 * (the idle part), "stop" stops the relay and prints one line "RESULT <json>" (ChildResult).
 * Times are process.hrtime (CLOCK_MONOTONIC, the same clock in every process of the machine), so
 * the parent can order deliveries of different processes and compare them with its commits.
 */
import { createInterface } from 'node:readline';
import pg from 'pg';
import { startRelay } from '../src/index.ts';

export interface ChildResult {
  /** Per sink call: the event's `s` (its sequence number in the run), and when (monotonic ms). */
  seqs: number[];
  ats: number[];
  /** Client-side round trips of the claim and settle statements (ms). */
  claimMs: number[];
  claimRows: number;
  settleMs: number[];
  /** Statements sent since the last "mark" (or the start), and over how many seconds. */
  statements: number;
  seconds: number;
}

const monotonicMs = () => Number(process.hrtime.bigint()) / 1e6;
const sinkMs = Number(process.env.SINK_MS ?? 0);
const result: ChildResult = { seqs: [], ats: [], claimMs: [], claimRows: 0, settleMs: [], statements: 0, seconds: 0 };
let markedAt = monotonicMs();

/** The claim and the settle, by statement name or, should the names change, by their text. */
function kindOf(config: unknown): 'claim' | 'settle' | undefined {
  if (typeof config !== 'object' || config === null) return undefined;
  const { name, text } = config as { name?: string; text?: string };
  if (name === 'once_claim_events' || text?.includes('WITH RECURSIVE tenants')) return 'claim';
  if (name === 'once_mark_delivered' || text?.includes("SET status = 'delivered'")) return 'settle';
  return undefined;
}

const prototype = pg.Client.prototype as unknown as { query: (...args: unknown[]) => unknown };
const original = prototype.query;
prototype.query = function (this: unknown, ...args: unknown[]) {
  result.statements += 1;
  const kind = kindOf(args[0]);
  if (kind === undefined) return original.apply(this, args);
  const started = monotonicMs();
  const done = (rows?: number) => {
    const ms = monotonicMs() - started;
    if (kind === 'claim') {
      result.claimMs.push(ms);
      result.claimRows += rows ?? 0;
    } else result.settleMs.push(ms);
  };
  // pg-pool passes a callback (pool.query); a checked-out client returns a promise.
  const last = args.at(-1);
  if (typeof last === 'function') {
    args[args.length - 1] = (error: unknown, res: { rowCount?: number | null } | undefined) => {
      if (!error) done(res?.rowCount ?? 0);
      return (last as (...a: unknown[]) => unknown)(error, res);
    };
    return original.apply(this, args);
  }
  const returned = original.apply(this, args);
  if (returned && typeof (returned as Promise<unknown>).then === 'function') {
    (returned as Promise<{ rowCount?: number | null }>).then(
      (res) => done(res?.rowCount ?? 0),
      () => {},
    );
  }
  return returned;
};

const relay = await startRelay({
  connectionString: process.env.DATABASE_URL!,
  handleSignals: false,
  // Warnings and errors only: four relays' start and stop lines would bury the bench's output.
  logger: { warn: (message: string) => console.error(message), error: (message: string, error: unknown) => console.error(message, error) },
  concurrency: Number(process.env.CONCURRENCY ?? 32),
  ...(process.env.SWEEP === '1' ? {} : { sweep: false as const }),
  sinks: {
    '>': async (event) => {
      result.seqs.push((event.payload as { s: number }).s);
      result.ats.push(monotonicMs());
      if (sinkMs > 0) await new Promise((resolve) => setTimeout(resolve, sinkMs));
    },
  },
});
process.stdout.write('READY\n');

for await (const line of createInterface({ input: process.stdin })) {
  if (line === 'mark') {
    result.statements = 0;
    markedAt = monotonicMs();
  } else if (line === 'stop') {
    result.seconds = (monotonicMs() - markedAt) / 1_000;
    const statements = result.statements;
    await relay.stop();
    result.statements = statements; // stop()'s own statements are not what the relay costs running
    // Written to a pipe, stdout is asynchronous: exit only once the whole line is out.
    await new Promise((resolve) => process.stdout.write(`RESULT ${JSON.stringify(result)}\n`, resolve));
    break;
  }
}
process.exit(0);
