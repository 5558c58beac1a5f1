/**
 * pg-once/graphile-worker: a team's own graphile-worker runners deliver the outbox (one chain of
 * drainOnce slices, whatever the number of runners) and run the sweeps.
 */
import { Logger, parseCronItems, parseCrontab, run, type Runner } from 'graphile-worker';
import { afterEach, expect, it, vi } from 'vitest';
import { OUTBOX_TASKS, outboxCronItems, outboxCrontab, outboxTasks, type OutboxTasksOptions } from '../src/integrations/graphile-worker.ts';
import type { DeliveryEvent } from '../src/index.ts';
import { fillOutbox, waitForOutbox } from './support/outbox-helpers.ts';
import { QUIET_RELAY, useRelayFixture } from './support/relay-fixture.ts';

const setting = useRelayFixture(8);
const runners: Runner[] = [];
const quietWorker = new Logger(() => () => {});

afterEach(async () => {
  await Promise.all(runners.splice(0).map((runner) => runner.stop()));
  await setting.fx.database.admin.query('DELETE FROM once.outbox_events; DELETE FROM graphile_worker._private_jobs');
});

/** A runner as a team would start it, on the relay login, with pg-once's tasks and cron items among its own. */
async function startRunner(options: Partial<OutboxTasksOptions>, workerUrl = setting.relayUrl): Promise<Runner> {
  const runner = await run({
    connectionString: workerUrl,
    concurrency: 4,
    noHandleSignals: true,
    pollInterval: 200,
    logger: quietWorker,
    taskList: {
      ...outboxTasks({ connectionString: setting.relayUrl, sinks: { '>': async () => {} }, logger: QUIET_RELAY.logger, ...options }),
      team_task: async () => {},
    },
    parsedCronItems: parseCronItems(outboxCronItems()),
  });
  runners.push(runner);
  return runner;
}

it('two runners deliver every event once (but for retries), each key in order, through one chain of deliver jobs', async () => {
  const refs = await fillOutbox(setting.fx.app, { count: 300, tenants: 3, orderingKeys: 5, perTransaction: 5 });
  const successes: DeliveryEvent[] = [];
  const failedOnce = new Set<string>();
  const sink = async (event: DeliveryEvent, { signal }: { signal: AbortSignal }) => {
    await new Promise((resolve) => setTimeout(resolve, Math.random() * 4));
    // A slice's end cuts what is running and hands it back: a sink stops when told (one that
    // finished anyway would deliver the event again, under the same dedupe id).
    signal.throwIfAborted();
    if ((event.payload as { seq: number }).seq % 17 === 0 && !failedOnce.has(event.dedupeId)) {
      failedOnce.add(event.dedupeId);
      throw new Error('receiver hiccup');
    }
    successes.push(event);
  };
  const options = { sinks: { '>': sink }, concurrency: 8, sliceMs: 1_000, pollIntervalMs: 20, backoff: { initialMs: 10, maxMs: 20 } };
  const [first, second] = [await startRunner(options), await startRunner(options)];
  let deliverJobs = 0;
  for (const runner of [first!, second!]) {
    runner.events.on('job:start', ({ job }) => {
      if (job.task_identifier === OUTBOX_TASKS.deliver) deliverJobs += 1;
    });
  }
  // One slice at a time: a slice has released or settled all it held before it adds the next
  // job, so two drains never hold leases at once (sampled all along).
  let mostDrainsAtOnce = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const { rows } = await setting.fx.database.admin.query<{ n: number }>(
        "SELECT count(DISTINCT locked_by)::int AS n FROM once.outbox_events WHERE status = 'pending' AND locked_by IS NOT NULL",
      );
      mostDrainsAtOnce = Math.max(mostDrainsAtOnce, rows[0]!.n);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  })();
  // What the watchdog does every minute, now: no chain yet, so it starts one.
  await first!.addJob(OUTBOX_TASKS.watchdog, {});
  await waitForOutbox(setting.fx.database.admin, (counts) => counts.delivered === refs.length, 60_000);

  expect(successes).toHaveLength(refs.length);
  expect(new Set(successes.map((event) => event.dedupeId)).size).toBe(refs.length);
  const lastId = new Map<string, bigint>();
  for (const event of successes) {
    const key = `${event.tenantId}/${event.orderingKey}`;
    expect(BigInt(event.id) > (lastId.get(key) ?? -1n), key).toBe(true);
    lastId.set(key, BigInt(event.id));
  }
  // The chain goes on after its first slice, one link at a time, however many runners.
  await vi.waitFor(() => expect(deliverJobs).toBeGreaterThanOrEqual(3), { timeout: 30_000, interval: 100 });
  sampling = false;
  await sampler;
  expect(mostDrainsAtOnce).toBeLessThanOrEqual(1);
  const { rows } = await setting.fx.database.admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM graphile_worker.jobs WHERE task_identifier = $1`, [
    OUTBOX_TASKS.deliver,
  ]);
  expect(rows[0]!.n).toBe(1); // the next link, waiting or running
}, 90_000);

it('the watchdog leaves a live chain alone', async () => {
  const runner = await startRunner({});
  // A chain link that waits (run far in the future): alive, so the watchdog adds nothing.
  await runner.addJob(OUTBOX_TASKS.deliver, {}, { jobKey: OUTBOX_TASKS.deliver, runAt: new Date(Date.now() + 3_600_000) });
  const done = new Promise<void>((resolve) => runner.events.on('job:complete', ({ job }) => job.task_identifier === OUTBOX_TASKS.watchdog && resolve()));
  await runner.addJob(OUTBOX_TASKS.watchdog, {});
  await done;
  const { rows } = await setting.fx.database.admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM graphile_worker.jobs WHERE task_identifier = $1`, [
    OUTBOX_TASKS.deliver,
  ]);
  expect(rows[0]!.n).toBe(1);
});

it('the watchdog restarts a chain whose worker died mid-slice', async () => {
  const refs = await fillOutbox(setting.fx.app, { count: 5, tenants: 2 });
  // The chain's job, locked by a worker that is gone (graphile-worker would free it after 4 hours).
  await setting.fx.database.admin.query(`SELECT graphile_worker.add_job($1, job_key := $1)`, [OUTBOX_TASKS.deliver]);
  await setting.fx.database.admin.query(`UPDATE graphile_worker._private_jobs SET locked_at = now() - interval '2 hours', locked_by = 'a-dead-worker'`);
  const runner = await startRunner({ sliceMs: 1_000 });
  await runner.addJob(OUTBOX_TASKS.watchdog, {});
  await waitForOutbox(setting.fx.database.admin, (counts) => counts.delivered === refs.length, 30_000);
});

it('the sweep task sweeps, recorded as any sweep', async () => {
  await setting.fx.database.admin.query(
    `INSERT INTO once.outbox_events (tenant_id, dedupe_id, topic, payload, status, delivered_at)
     VALUES ('tenant-a', 'old-1', 't', '{}', 'delivered', now() - interval '30 days')`,
  );
  const runner = await startRunner({});
  const done = new Promise<void>((resolve) => runner.events.on('job:complete', ({ job }) => job.task_identifier === OUTBOX_TASKS.sweep && resolve()));
  const { rows: before } = await setting.fx.database.admin.query<{ n: number }>('SELECT count(*)::int AS n FROM once.sweeps');
  await runner.addJob(OUTBOX_TASKS.sweep, {});
  await done;
  const { rows } = await setting.fx.database.admin.query<{ n: number; events: number }>(
    'SELECT (SELECT count(*)::int FROM once.sweeps) AS n, (SELECT count(*)::int FROM once.outbox_events) AS events',
  );
  expect(rows[0]).toEqual({ n: before[0]!.n + 1, events: 0 });
});

it('the deliver task refuses a login without the relay role with WRONG_ROLE', async () => {
  const runner = await startRunner({ connectionString: setting.fx.appUrl });
  const failed = new Promise<unknown>((resolve) =>
    runner.events.on('job:error', ({ job, error }) => job.task_identifier === OUTBOX_TASKS.deliver && resolve(error)),
  );
  await runner.addJob(OUTBOX_TASKS.deliver, {}, { jobKey: OUTBOX_TASKS.deliver });
  expect(await failed).toMatchObject({ code: 'WRONG_ROLE' });
});

it('gives its cron items as items and as crontab lines, the same; a bad schedule is refused', () => {
  const fromItems = parseCronItems(outboxCronItems()).map(({ identifier, task, options }) => ({ identifier, task, options }));
  const fromCrontab = parseCrontab(outboxCrontab()).map(({ identifier, task, options }) => ({ identifier, task, options }));
  expect(fromCrontab).toEqual(fromItems);
  expect(fromItems.map((item) => item.task)).toEqual([OUTBOX_TASKS.watchdog, OUTBOX_TASKS.sweep]);
  expect(outboxCronItems({ sweepSchedule: false }).map((item) => item.task)).toEqual([OUTBOX_TASKS.watchdog]);
  expect(() => outboxCronItems({ sweepSchedule: 'every tuesday' })).toThrow(expect.objectContaining({ code: 'INVALID_OPTIONS' }));
});
