/**
 * The whole demo: a database, a relay and a downstream receiver; then every agent run, with its
 * planned duplicates; then wait for the relay to deliver everything, and report.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Kysely, PostgresDialect } from 'kysely';
import type pg from 'pg';
import { httpSink, startRelay, type Relay } from '../../src/index.ts';
import { startWebhookReceiver, type WebhookReceiver } from '../webhook-receiver.ts';
import { runAgent } from './agent.ts';
import { runCrashingRun } from './crash.ts';
import { openDemoDatabase } from './database.ts';
import { quietPool } from './quiet-pool.ts';
import type { DemoOptions } from './options.ts';
import { planDemo, type RunPlan } from './plan.ts';
import { startProgress } from './progress.ts';
import { sleep } from './random.ts';
import { checks, formatReport, readStored, type Downstream } from './report.ts';
import { DemoStats } from './stats.ts';
import { handleToolCall } from './tool-server.ts';
import { type Attempt, duplicatingSender } from './transport.ts';

/** Agent runs in flight at once, over all tenants. */
const CONCURRENT_RUNS = 32;
/** Connections of the tool server's pool (the application role). */
const APP_POOL_SIZE = 20;
/**
 * Share of events whose first delivery the receiver applies and then answers 503, as if its
 * answer were lost: the relay delivers them again, and the receiver drops the repeat.
 */
const LOST_ACK_SHARE = 0.03;
const DELIVERY_TIMEOUT_MS = 60_000;

export async function runDemo(options: DemoOptions): Promise<boolean> {
  const started = performance.now();
  const plan = planDemo(options);
  console.log(`pg-once demo: ${options.tenants} tenants × ${options.runs} agent runs, seed ${options.seed}`);

  const database = await openDemoDatabase(options);
  console.log(`  ${database.description}: database ${database.name} migrated, login roles granted its app and relay roles`);
  let receiver: WebhookReceiver | undefined;
  let relay: Relay | undefined;
  let app: Kysely<any> | undefined;
  try {
    const effects: Record<string, number> = {};
    const secret = `whsec_${randomBytes(32).toString('base64')}`;
    const lostAcks = new Set<string>();
    receiver = await startWebhookReceiver({
      secret,
      onEvent: (event) => {
        effects[event.type] = (effects[event.type] ?? 0) + 1;
      },
      answerAfterEffect: (event) => {
        if (!loseAck(options.seed, event.id)) return 200;
        lostAcks.add(event.id);
        return 503;
      },
    });
    const relayProblems: string[] = [];
    relay = await startRelay({
      connectionString: database.relayUrl,
      sinks: { '>': httpSink({ url: receiver.url, secret, timeoutMs: 5_000 }) },
      backoff: { initialMs: 20, maxMs: 1_000 },
      sweep: false,
      handleSignals: false,
      // Retries after the receiver's 503s are expected; anything else is kept for the report.
      logger: { warn: () => {}, error: (message: string) => relayProblems.push(message) },
    });
    console.log(`  relay: httpSink (Standard Webhooks) → receiver at ${receiver.url}, dedupes by webhook-id`);
    app = new Kysely<any>({ dialect: new PostgresDialect({ pool: quietPool(database.appUrl, APP_POOL_SIZE) }) });

    const stats = new DemoStats();
    const abandoned: Promise<unknown>[] = [];
    const db = app;
    const attempt: Attempt = async (call, workMs) => {
      const reply = await handleToolCall(db, call, () => sleep(workMs));
      stats.record(call, reply);
      return reply;
    };
    console.log(`  running ${plan.runs.length.toLocaleString('en-US')} agent runs (create_order → charge_card → send_email), ${CONCURRENT_RUNS} at a time`);
    const progress = startProgress(plan.runs.length, stats);
    try {
      await forEachConcurrently(plan.runs, CONCURRENT_RUNS, async (run: RunPlan) => {
        if (run.crash) await runCrashingRun(run, database.appUrl, stats);
        else await runAgent(run, duplicatingSender(run, attempt, abandoned));
        stats.runsDone += 1;
      });
      await Promise.all(abandoned);
    } finally {
      progress.stop();
    }

    console.log('  waiting for the relay to deliver every event');
    await waitForDelivery(database.admin, DELIVERY_TIMEOUT_MS);
    const stored = await readStored(database.admin, database.relayUrl);
    const downstream: Downstream = { ...receiver.counts, effects, lostAnswers: lostAcks.size };
    const results = checks(plan, stats, stored, downstream);
    const seconds = (performance.now() - started) / 1_000;
    console.log(`\n${formatReport(plan, stats, stored, downstream, results, seconds)}`);
    for (const problem of relayProblems.slice(0, 5)) console.log(`  relay: ${problem}`);
    return results.every((result) => result.ok);
  } finally {
    await relay?.stop();
    await receiver?.close();
    await app?.destroy();
    const kept = await database.close();
    if (kept) console.log(`  kept: ${kept}`);
  }
}

/**
 * Runs `fn` over `items`, at most `limit` at a time, in order of start. After a failure no new
 * item starts; the first error is thrown once the running ones have settled, so nothing is still
 * using the database when the caller cleans up.
 */
async function forEachConcurrently<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { error: unknown } | undefined;
  const lane = async () => {
    while (next < items.length && !failure) {
      try {
        await fn(items[next++]!);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  if (failure) throw failure.error;
}

/** Whether the receiver "loses" its answer to the first delivery of this event (seeded, ~3%). */
function loseAck(seed: number, dedupeId: string): boolean {
  return createHash('sha256').update(`${seed}:${dedupeId}`).digest().readUInt32BE(0) / 2 ** 32 < LOST_ACK_SHARE;
}

async function waitForDelivery(admin: pg.Pool, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const { rows } = await admin.query<{ n: number }>("SELECT count(*)::int AS n FROM once.outbox_events WHERE status = 'pending'");
    if (rows[0]!.n === 0) return;
    await sleep(50);
  }
}
