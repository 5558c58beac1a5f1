/**
 * The relay's graceful stop. Returns within shutdownTimeoutMs whatever the network does: every
 * step is bounded by the deadline, and what has not finished by then is left to the leases
 * (queued events are free within a second, abandoned deliveries within leaseMs; both are
 * delivered again under the same dedupe id). In-flight deliveries get the first part of the
 * time, releasing and settling the rest.
 */
import type pg from 'pg';
import { DeliveryFailedError } from '../errors.ts';
import { within } from '../internal/within.ts';
import type { ResolvedRelayOptions } from './relay-options.ts';
import type { KeyRuns } from './key-runs.ts';
import type { OutcomeSettler } from './outcome-settler.ts';
import type { RelayLog } from './relay-log.ts';
import type { RelayDatabase } from './relay-pool.ts';
import { closeSinks } from './relay-sinks.ts';
import type { RelaySweeps } from './relay-sweeps.ts';
import type { InFlight } from './run-sink.ts';
import type { Sink } from './sink.ts';
import type { ClaimedEvent } from './sql/claim-events.ts';
import { relayStopped } from './sql/relay-registry.ts';
import { releaseEvents } from './sql/release-events.ts';
import type { TenantQueue } from './tenant-queue.ts';

/** Of shutdownTimeoutMs, at most this much (and at most half) is kept for releasing and settling, in milliseconds. */
const SHUTDOWN_CLEANUP_MILLISECONDS = 2_000;

/** What the shutdown reaches into: the relay's own state (start-relay.ts). */
export interface RelayParts {
  readonly id: string;
  readonly options: ResolvedRelayOptions;
  readonly db: RelayDatabase;
  readonly pool: pg.Pool;
  readonly ownsPool: boolean;
  readonly logger: RelayLog;
  readonly sinks: readonly Sink[];
  readonly inFlight: Map<string, InFlight>;
  readonly queue: TenantQueue<ClaimedEvent>;
  readonly runs: KeyRuns;
  readonly settler: OutcomeSettler;
  readonly timers: readonly NodeJS.Timeout[];
  /** Close the LISTEN connection and the like. */
  readonly closers: readonly (() => Promise<unknown>)[];
  readonly sweeps: RelaySweeps | undefined;
  readonly loopDone: Promise<void> | undefined;
  readonly signalHandler: (signal: NodeJS.Signals) => void;
  stopping: boolean;
  wake(): void;
}

export async function shutDownRelay(relay: RelayParts): Promise<void> {
  const { options, inFlight, logger, settler } = relay;
  const deadline = Date.now() + options.shutdownTimeoutMs;
  const deliveriesDeadline = deadline - Math.min(SHUTDOWN_CLEANUP_MILLISECONDS, options.shutdownTimeoutMs / 2);
  relay.stopping = true;
  relay.wake();
  process.removeListener('SIGTERM', relay.signalHandler);
  process.removeListener('SIGINT', relay.signalHandler);
  await within(relay.loopDone, deliveriesDeadline); // a claim may be out; it cannot hold us

  // Let running deliveries finish, within their share of the shutdown timeout.
  while (inFlight.size > 0 && Date.now() < deliveriesDeadline) {
    await new Promise((resolve) => setTimeout(resolve, Math.min(20, deliveriesDeadline - Date.now())));
  }
  // Give up on the rest: abort them and hand their events back, uncounted, with the queued ones.
  const abandoned = [...inFlight.values()];
  for (const entry of abandoned) {
    entry.released = true;
    entry.controller.abort(new DeliveryFailedError('the relay is shutting down'));
  }
  const unstarted = [...relay.queue.drain(), ...relay.runs.drain()];
  for (const timer of relay.timers) clearInterval(timer);
  const released = abandoned.map(({ event }) => event).concat(unstarted);
  await within(
    releaseEvents(relay.db, released, relay.id).catch((error: unknown) =>
      logger.error('releasing in-flight events failed; their leases will expire instead', { err: error, events: released.length }),
    ),
    deadline,
  );
  settler.settle();
  await within(settler.settling, deadline);
  await within(
    Promise.all([
      ...relay.closers.map((close) => close()),
      relay.sweeps?.runner.stop().catch((error: unknown) => logger.error('stopping the sweep scheduler failed', { err: error })),
      closeSinks(relay.sinks),
    ]),
    deadline,
  );
  await within(
    relayStopped(relay.db, relay.id).catch((error: unknown) => logger.warn("recording the relay's stop failed", { err: error })),
    deadline,
  );
  settler.closed = true; // a settle still retrying gives up: the leases take over
  await within(relay.sweeps?.pool?.end().catch(() => {}) ?? Promise.resolve(), deadline);
  if (relay.ownsPool)
    await within(
      relay.pool.end().catch(() => {}),
      deadline,
    );
  logger.stopped(released.length);
}
