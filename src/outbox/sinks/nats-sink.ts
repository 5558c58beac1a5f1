/**
 * The built-in NATS JetStream sink. Each event is published with its dedupe id as `Nats-Msg-Id`,
 * which JetStream drops as a duplicate when it arrives again within the stream's
 * `duplicate_window`; so a relay that retries after a lost ack stores the event once. Outside the
 * window JetStream stores it again, which is why start() compares the window with the relay's
 * retry horizon.
 *
 * The NATS packages are imported on first use (start or first delivery), not at load time: users
 * who never publish to NATS do not pay for loading them.
 */
import type { JetStreamClient } from '@nats-io/jetstream';
import type { MsgHdrs, NatsConnection, NodeConnectionOptions } from '@nats-io/transport-node';
import { z } from 'zod';
import { DeliveryFailedError, DeliveryRejectedError, OnceError, SinkMisconfiguredError } from '../../errors.ts';
import { callback, parseOptions } from '../../options.ts';
import { eventEnvelope, type DeliveryContext, type DeliveryEvent, type Sink, type SinkStartInfo } from '../sink.ts';

const NANOSECONDS_PER_MILLISECOND = 1_000_000;

/**
 * Why `subject` cannot be published to, or undefined when it can: dot-separated non-empty tokens,
 * without whitespace, control characters or the wildcards `*` and `>`. A fixed subject is checked
 * when the sink is made, a subject function's answer before every publish. Neither is left to the
 * server: it publishes `orders.*` as a literal subject (a stream of `orders.>` stores it, and
 * subscribers of `orders.created` never see it), and refuses a subject with a space on every
 * attempt, so the relay would retry it to its last attempt instead of refusing it at once.
 */
function subjectProblem(subject: unknown): string | undefined {
  if (typeof subject !== 'string') return `a subject must be a string (got ${typeof subject})`;
  if (subject.length === 0) return 'a subject must not be empty';
  for (const token of subject.split('.')) {
    if (token.length === 0) return 'a subject has no empty tokens (no leading, trailing or doubled ".")';
    if (/[*>]/u.test(token)) return 'a subject to publish to has no wildcards ("*", ">")';
    if (/[\s\p{Cc}]/u.test(token)) return 'a subject has no whitespace or control characters';
  }
  return undefined;
}

const publishSubject = z.string().superRefine((subject, context) => {
  const problem = subjectProblem(subject);
  if (problem) context.addIssue({ code: 'custom', message: `${problem}, e.g. "orders.created"` });
});

const server = z.string().min(1);

export const natsSinkOptionsSchema = z
  .object({
    /** The NATS server(s), e.g. 'nats://127.0.0.1:4222' or a list for a cluster. (Required) */
    servers: z.union([server, z.array(server).min(1)]),
    /**
     * Where each event is published: a fixed subject, or a function of the event (e.g. routing
     * by topic). The stream bound to a fixed subject is checked by start(); a function's
     * subjects cannot be known in advance, so they are not. (Required)
     */
    subject: z.union([publishSubject, callback<(event: DeliveryEvent) => string>('expected a subject or a function (event) => subject')]),
    /**
     * What start() does when the stream's `duplicate_window` is shorter than the relay's retry
     * horizon, so a late retry would be stored twice: 'warn' through the relay's warn(),
     * 'refuse' by throwing SinkMisconfiguredError, 'off' nothing. (Default: 'warn')
     */
    duplicateWindowCheck: z.enum(['warn', 'refuse', 'off']).default('warn'),
    /**
     * Extra options for `connect()` of @nats-io/transport-node: credentials (user/pass, token,
     * authenticator), tls, timeout, reconnect policy... `servers` above always wins.
     * (Default: none)
     */
    connectOptions: z
      .custom<Omit<NodeConnectionOptions, 'servers' | 'port'>>((value) => typeof value === 'object' && value !== null && !Array.isArray(value), {
        message: 'expected an object of NATS connect options',
      })
      .optional(),
    /** How long to wait for JetStream's PubAck, in milliseconds. (Default: 5 000) */
    timeoutMs: z.number().int().positive().max(600_000).default(5_000),
  })
  .strict();
/** Options of {@link natsSink}. */
export interface NatsSinkOptions {
  /** The NATS server(s), e.g. 'nats://127.0.0.1:4222' or a list for a cluster. (Required) */
  servers: string | string[];
  /**
   * Where each event is published: a fixed subject (no wildcards, whitespace or empty tokens), or
   * a function of the event (e.g. routing by topic). The stream bound to a fixed subject is
   * checked by start(). (Required)
   */
  subject: string | ((event: DeliveryEvent) => string);
  /**
   * What start() does when the stream's `duplicate_window` is shorter than the relay's retry
   * horizon: 'warn' through the relay's logger, 'refuse' by throwing SinkMisconfiguredError,
   * 'off' nothing. (Default: 'warn')
   */
  duplicateWindowCheck?: 'warn' | 'refuse' | 'off';
  /**
   * Extra options for `connect()` of @nats-io/transport-node: credentials, tls, timeout,
   * reconnect policy; `servers` above always wins. (Default: none)
   */
  connectOptions?: Omit<NodeConnectionOptions, 'servers' | 'port'>;
  /** How long to wait for JetStream's PubAck, in milliseconds (at most 600 000). (Default: 5 000) */
  timeoutMs?: number;
}
type ResolvedNatsSinkOptions = z.output<typeof natsSinkOptionsSchema>;

interface Connection {
  nc: NatsConnection;
  js: JetStreamClient;
  /** @nats-io's `headers()` factory, kept here so it too is loaded lazily. */
  headers: () => MsgHdrs;
}

async function open(options: ResolvedNatsSinkOptions): Promise<Connection> {
  const [{ connect, headers }, { jetstream }] = await Promise.all([import('@nats-io/transport-node'), import('@nats-io/jetstream')]);
  const nc = await connect({ name: 'pg-once', ...options.connectOptions, servers: options.servers });
  return { nc, js: jetstream(nc), headers };
}

export function natsSink(options: NatsSinkOptions): Sink {
  const resolved = parseOptions(natsSinkOptionsSchema, options, 'natsSink options');
  let connection: Promise<Connection> | undefined;
  let closed = false;

  /**
   * One connection for the sink's life, shared by concurrent deliveries. It is forgotten when it
   * fails to open or closes for good (the client gave up reconnecting): without that, every
   * later delivery would fail on a dead connection until the process restarts.
   */
  function connected(): Promise<Connection> {
    if (closed) return Promise.reject(new DeliveryFailedError('pg-once natsSink: the sink is closed.'));
    if (connection) return connection;
    const attempt = open(resolved);
    const forget = () => {
      if (connection === attempt) connection = undefined;
    };
    attempt.then(({ nc }) => nc.closed().then(forget), forget);
    connection = attempt;
    return attempt;
  }

  async function start(info: SinkStartInfo): Promise<void> {
    const { nc } = await connected().catch((error: unknown) => {
      throw failure(`connecting to ${String(resolved.servers)} failed`, error);
    });
    if (typeof resolved.subject !== 'string') return;
    const subject = resolved.subject;
    const { jetstreamManager, JetStreamApiError, JetStreamApiCodes } = await import('@nats-io/jetstream');
    let stream: string;
    let windowMs: number;
    try {
      const jsm = await jetstreamManager(nc);
      stream = await jsm.streams.find(subject);
      windowMs = (await jsm.streams.info(stream)).config.duplicate_window / NANOSECONDS_PER_MILLISECOND;
    } catch (error) {
      if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound) {
        throw new SinkMisconfiguredError(
          `pg-once natsSink: no JetStream stream stores subject "${subject}", so every publish would fail. Create a stream whose subjects include it.`,
          { cause: error },
        );
      }
      throw failure(`looking up the stream of subject "${subject}" failed`, error);
    }
    if (resolved.duplicateWindowCheck === 'off' || info.retryHorizonMs <= windowMs) return;
    const message =
      `pg-once natsSink: stream "${stream}" drops repeated Nats-Msg-Id only within its duplicate_window ` +
      `of ${windowMs / 1_000} s, but the relay may retry an event for up to ${info.retryHorizonMs / 1_000} s; ` +
      "a retry after the window is stored again, not dropped as a duplicate. Raise the stream's " +
      `duplicate_window to at least ${info.retryHorizonMs * NANOSECONDS_PER_MILLISECOND} ns ` +
      "(nats CLI: --dupe-window; it cannot exceed max_age), shorten the relay's retries, or set " +
      "duplicateWindowCheck: 'off'.";
    if (resolved.duplicateWindowCheck === 'refuse') throw new SinkMisconfiguredError(message);
    info.warn(message);
  }

  async function deliver(event: DeliveryEvent, context: DeliveryContext): Promise<void> {
    let subject = '';
    try {
      subject = typeof resolved.subject === 'string' ? resolved.subject : resolved.subject(event);
      const problem = subjectProblem(subject);
      if (problem) {
        // The same subject comes back on every attempt: dead at once, with the reason.
        throw new DeliveryRejectedError(`pg-once natsSink: event ${event.id} maps to subject ${JSON.stringify(subject)}: ${problem}.`);
      }
      const { js, headers } = await abortable(connected(), context.signal);
      // The ack is awaited, not fire-and-forget: resolving means the stream has the event. A
      // duplicate ack means it had it already, which is just as good.
      await abortable(
        js.publish(subject, JSON.stringify(eventEnvelope(event)), {
          msgID: event.dedupeId,
          timeout: resolved.timeoutMs,
          headers: eventHeaders(event, headers()),
        }),
        context.signal,
      );
    } catch (error) {
      if (error instanceof OnceError) throw error;
      // An abort does not stop a request already sent; if it lands anyway, the retry's
      // Nats-Msg-Id makes JetStream drop the second copy.
      const what = context.signal.aborted ? 'was aborted (timeout or shutdown)' : 'failed';
      throw failure(`publishing event ${event.id} to "${subject}" ${what}`, error);
    }
  }

  async function close(): Promise<void> {
    closed = true;
    const pending = connection;
    connection = undefined;
    const nc = (await pending?.catch(() => undefined))?.nc;
    // drain() flushes what was published before closing; a closed connection has nothing left.
    if (nc && !nc.isClosed()) await nc.drain();
  }

  return Object.assign(deliver, { start, close });
}

/** A transport or server error: the relay retries later. */
function failure(what: string, error: unknown): DeliveryFailedError {
  const reason = error instanceof Error ? error.message : String(error);
  return new DeliveryFailedError(`pg-once natsSink: ${what}: ${reason}`, { cause: error });
}

/**
 * The event's headers as NATS headers. `Nats-*` names are refused, not passed on: they are
 * JetStream's controls (Nats-Msg-Id, Nats-Expected-*, Nats-Rollup, which can purge the stream),
 * and an event must not be able to change how it is stored. A refused or invalid header fails
 * the same way on every attempt, hence DeliveryRejectedError.
 */
function eventHeaders(event: DeliveryEvent, target: MsgHdrs): MsgHdrs {
  for (const [name, value] of Object.entries(event.headers)) {
    if (/^nats-/iu.test(name)) {
      throw new DeliveryRejectedError(`pg-once natsSink: event ${event.id} has header "${name}"; Nats-* headers are reserved for JetStream.`);
    }
    try {
      target.set(name, value);
    } catch (error) {
      throw new DeliveryRejectedError(`pg-once natsSink: event ${event.id} has a header NATS cannot carry: "${name}".`, {
        cause: error,
      });
    }
  }
  return target;
}

/**
 * `promise`, or a rejection as soon as `signal` aborts. @nats-io requests take no signal, so the
 * work itself goes on; its outcome is still observed, so a late failure is not unhandled.
 */
function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
    if (signal.aborted) onAbort();
  });
}
