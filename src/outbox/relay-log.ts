/**
 * What the relay tells its operator, as one-line records with fields (never values interpolated
 * into the message, so that lines group and filter by message and are queried by field):
 * - start, with the settings the relay runs with (no secrets: no connection password, no sink
 *   options), and stop, with what it did;
 * - each retry with its reason, and each dead event with its id, tenant, topic, dedupe id and
 *   reason: rate-limited per topic (log-rate-limit.ts), since a receiver that is down fails every
 *   event of its topics, and a log that floods hides the one line that matters. Dead events get
 *   a burst per window before counting starts (each one is someone's lost effect until requeued,
 *   and the first few name the ids to look at); `pg-once outbox dead` lists every one of them;
 * - the relay's own trouble (claims or settles failing, connections lost), rate-limited per
 *   message: a database that is down fails the claim every second and the lease renewal ten
 *   times a second.
 * A logger of the relay's first shape (message-first warn and error) gets the trouble it always
 * got, as text, and none of the newer lines, which would change what it receives.
 */
import { DeliveryRejectedError } from '../errors.ts';
import { lineLogger } from '../internal/line-logger.ts';
import { textFields } from '../internal/log-line.ts';
import type { ResolvedRelayOptions } from './relay-options.ts';
import { LogRateLimit } from './log-rate-limit.ts';
import { isStructuredLogger, type MessageRelayLogger, type RelayLogFields, type RelayLogger, type StructuredRelayLogger } from './relay-logger.ts';
import type { ClaimedEvent } from './sql/claim-events.ts';
import type { Failure } from './sql/mark-failed.ts';

/** Length of a rate-limit window, in milliseconds: a failing topic costs one retry line per window. */
const LOG_WINDOW_MILLISECONDS = 10_000;
/** Dead events of a topic logged in full per window before they are only counted. */
const DEAD_BURST = 10;

type Level = 'info' | 'warn' | 'error';
type DeadReason = 'rejected' | 'max_attempts' | 'exhausted';

interface Line {
  level: Level;
  message: string;
  fields: RelayLogFields;
}

/** The default logger: text lines on stderr, where the relay's warnings have always gone. */
function defaultLogger(): StructuredRelayLogger {
  return lineLogger({ format: 'text', write: (line) => void process.stderr.write(line) });
}

/**
 * The host, port, database and user of a connection string, for the start line; never the
 * password (nor query parameters, which may hold one). Undefined for what is not a URL.
 */
function databaseOf(connectionString: string | undefined): string | undefined {
  if (connectionString === undefined) return undefined;
  try {
    const url = new URL(connectionString);
    const user = url.username ? `${decodeURIComponent(url.username)}@` : '';
    return `${user}${url.host}${url.pathname}`;
  } catch {
    return undefined;
  }
}

export class RelayLog {
  private readonly relayId: string;
  private readonly structured: StructuredRelayLogger | undefined;
  private readonly messages: MessageRelayLogger | undefined;
  /** What this relay did, for the stop line. */
  private readonly counts = { delivered: 0, retried: 0, dead: 0 };
  private startedAt = Date.now();
  private readonly retries = new LogRateLimit<RelayLogFields>(LOG_WINDOW_MILLISECONDS, 1, (fields, suppressed) =>
    this.report(
      { level: 'warn', message: suppressed ? 'delivery failed, retrying; more retries suppressed' : 'delivery failed, retrying', fields },
      suppressed,
    ),
  );
  private readonly deaths = new LogRateLimit<RelayLogFields>(LOG_WINDOW_MILLISECONDS, DEAD_BURST, (fields, suppressed) =>
    this.report({ level: 'error', message: suppressed ? 'event is dead; more dead events suppressed' : 'event is dead', fields }, suppressed),
  );
  private readonly trouble = new LogRateLimit<Line>(LOG_WINDOW_MILLISECONDS, 1, (line, suppressed) => this.troubleLine(line, suppressed));

  constructor(logger: RelayLogger | undefined, relayId: string) {
    this.relayId = relayId;
    const chosen = logger ?? defaultLogger();
    if (isStructuredLogger(chosen)) this.structured = chosen;
    else this.messages = chosen;
  }

  started(options: ResolvedRelayOptions, batchSize: number): void {
    this.startedAt = Date.now();
    this.report({
      level: 'info',
      message: 'relay started',
      fields: {
        database: databaseOf(options.connectionString),
        topics: Object.keys(options.sinks),
        concurrency: options.concurrency,
        batchSize,
        maxHeldBytes: options.maxHeldBytes,
        maxAttempts: options.maxAttempts,
        backoff: options.backoff,
        leaseMs: options.leaseMs,
        deliveryTimeoutMs: options.deliveryTimeoutMs,
        pollIntervalMs: options.pollIntervalMs,
        maxPollIntervalMs: options.maxPollIntervalMs,
        wakeup: options.wakeup ? 'logical replication' : 'poll',
        statementTimeoutMs: options.statementTimeoutMs,
        shutdownTimeoutMs: options.shutdownTimeoutMs,
        sweep: options.sweep === false ? false : options.sweep.schedule,
      },
    });
  }

  delivered(): void {
    this.counts.delivered += 1;
  }

  /** A failed attempt: retried after `failure.delayMs`, or dead. */
  failed(event: ClaimedEvent, failure: Failure, error: unknown): void {
    if (failure.dead) {
      this.died(event, error instanceof DeliveryRejectedError ? 'rejected' : 'max_attempts', failure.error);
      return;
    }
    this.counts.retried += 1;
    // Only the fields are kept (the latest retry of a window waits for its summary): never the
    // event, whose payload may be a megabyte.
    this.retries.add(event.topic, { ...eventFields(event), error: failure.error, retryInMs: Math.round(failure.delayMs) });
  }

  /** An event found at its claim with its last attempt used up without an outcome: dead now. */
  exhausted(event: ClaimedEvent): void {
    const error = 'its last attempt ended without an outcome (the relay delivering it crashed, was killed or lost its database)';
    this.died(event, 'exhausted', error);
    // The first logger shape was told of these (as a warning), and still is.
    if (this.messages) this.call(() => this.messages!.warn(`event ${event.id} of tenant ${event.tenantId} is dead: ${error}`));
  }

  /** A line about the relay's own state (the doorbell ringing), for a structured logger only. */
  info(message: string, fields: RelayLogFields = {}): void {
    this.report({ level: 'info', message, fields });
  }

  warn(message: string, fields: RelayLogFields = {}): void {
    this.trouble.add(message, { level: 'warn', message, fields });
  }

  error(message: string, fields: RelayLogFields = {}): void {
    this.trouble.add(message, { level: 'error', message, fields });
  }

  stopping(signal: string): void {
    this.report({ level: 'info', message: 'relay stopping', fields: { signal } });
  }

  /** Writes what the rate limits still hold, then the stop line with the relay's counts. */
  stopped(released: number): void {
    this.retries.flush();
    this.deaths.flush();
    this.trouble.flush();
    this.report({
      level: 'info',
      message: 'relay stopped',
      fields: { ...this.counts, released, durationMs: Date.now() - this.startedAt },
    });
  }

  private died(event: ClaimedEvent, reason: DeadReason, error: string): void {
    this.counts.dead += 1;
    this.deaths.add(event.topic, { ...eventFields(event), reason, error });
  }

  /** A line for a structured logger only (see the file comment). */
  private report(line: Line, suppressed = 0): void {
    if (!this.structured) return;
    this.call(() => this.structured![line.level]({ relayId: this.relayId, ...line.fields, ...(suppressed ? { suppressed } : {}) }, line.message));
  }

  private troubleLine(line: Line, suppressed: number): void {
    if (this.structured) {
      this.report(line, suppressed);
      return;
    }
    const { err, ...rest } = line.fields;
    const fields = textFields(suppressed ? { ...rest, suppressed } : rest);
    // The first shape's warnings carried the error's message; its errors, the error itself.
    const reason = line.level === 'warn' && err !== undefined ? `: ${err instanceof Error ? err.message : String(err)}` : '';
    const text = `${line.message}${reason}${fields ? ` ${fields}` : ''}`;
    if (line.level === 'error') this.call(() => this.messages!.error(text, err));
    else this.call(() => this.messages!.warn(text));
  }

  /**
   * The application's logger must not break the relay: a throw here would land in a delivery's
   * outcome handler or the claim loop. What a logger does wrong costs its own line, nothing else.
   */
  private call(write: () => void): void {
    try {
      write();
    } catch {
      // Nowhere left to report it: the logger is what failed.
    }
  }
}

function eventFields(event: ClaimedEvent): RelayLogFields {
  return {
    eventId: event.id,
    tenantId: event.tenantId,
    topic: event.topic,
    dedupeId: event.dedupeId,
    ...(event.orderingKey === null ? {} : { orderingKey: event.orderingKey }),
    attempt: event.attempt,
  };
}
