/**
 * The built-in RabbitMQ sink (AMQP 0-9-1, through `rabbitmq-client`). Each event is published
 * persistent, with its dedupe id as the AMQP `message_id`, on a channel in confirm mode, and the
 * delivery resolves only once the broker has confirmed it: for a durable queue, that is once the
 * message is on disk (or on a quorum). RabbitMQ does not drop repeats, so an event retried after a
 * lost confirm reaches the queue twice, under the same message_id: the consumer dedupes on it
 * (receiveOnce, see examples/amqp-consumer.ts), for at least the relay's retry horizon.
 *
 * `rabbitmq-client` reconnects by itself (and redeclares nothing: the sink declares no topology);
 * a publish made while the connection is down waits for it, within the delivery's time limit.
 * It is imported on first use, not at load time, and is an optional peer dependency.
 */
import type { Connection, ConnectionOptions, Envelope, Publisher, ReturnedMessage } from 'rabbitmq-client';
import { z } from 'zod';
import { DeliveryFailedError, DeliveryRejectedError, OnceError, SinkMisconfiguredError } from '../../errors.ts';
import { callback, parseOptions } from '../../options.ts';
import { eventEnvelope, type DeliveryContext, type DeliveryEvent, type Sink, type SinkStartInfo } from '../sink.ts';
import { deliveryFailure, lazyClient, missingPeer, redactedUrl, settleWithin } from './broker-delivery.ts';

/** AMQP 0-9-1 "shortstr": exchange names and routing keys are at most 255 bytes. */
const MAX_SHORTSTR_BYTES = 255;

/**
 * The headers the sink sets on every message. An event's own headers may not use these names
 * (nor RabbitMQ's, see eventHeaders).
 */
export const AMQP_HEADERS = {
  tenant: 'once-tenant',
  topic: 'once-topic',
  orderingKey: 'once-ordering-key',
} as const;

/** What the sink does with a message that no queue is bound to receive (see AmqpSinkOptions.unroutable). */
export type AmqpUnroutablePolicy = 'retry' | 'reject' | 'drop';

export interface AmqpSinkOptions {
  /**
   * The broker, e.g. 'amqp://user:password@rabbit.internal:5672/vhost' (amqps: for TLS).
   * (Required)
   */
  url: string;
  /**
   * The exchange each event is published to: a name, or a function of the event. A fixed name is
   * checked by start() (it must exist: the sink declares no topology). '' is the default
   * exchange, which routes to the queue named by the routing key. (Default: 'amq.topic', which
   * exists on every RabbitMQ virtual host and routes on dot-separated topics)
   */
  exchange?: string | ((event: DeliveryEvent) => string);
  /** The routing key of each event. (Default: the event's topic) */
  routingKey?: (event: DeliveryEvent) => string;
  /**
   * What an unroutable message (no queue bound for its routing key) means. The message is
   * published `mandatory`, so the broker returns it instead of dropping it silently, and then:
   * 'retry' fails the attempt with DeliveryFailedError, so the relay retries with backoff (a
   * consumer deployed after the relay, or a binding being recreated, gets the event once it is
   * there; after the last attempt the event is dead and can be requeued); 'reject' fails it with
   * DeliveryRejectedError, so the event is dead at once; 'drop' publishes without `mandatory`,
   * so an event nobody listens to counts as delivered (plain publish/subscribe). (Default: 'retry')
   */
  unroutable?: AmqpUnroutablePolicy;
  /**
   * Extra options for rabbitmq-client's `Connection`: `connectionName`, `tls`, `hosts` of a
   * cluster, `heartbeat`, reconnect delays (`retryLow`, `retryHigh`)... `url` above always wins.
   * Typed loosely so that pg-once's types load without rabbitmq-client installed; for checking,
   * write `{ ... } satisfies ConnectionOptions` (from 'rabbitmq-client'). (Default: none)
   */
  connectOptions?: Readonly<Record<string, unknown>>;
  /**
   * How long a publish may wait for the broker's confirm, in milliseconds, connection included
   * (a publish made while reconnecting waits for the connection). (Default: 10 000)
   */
  timeoutMs?: number;
}

const shortstr = z.string().refine((value) => Buffer.byteLength(value) <= MAX_SHORTSTR_BYTES, {
  message: `expected at most ${MAX_SHORTSTR_BYTES} bytes (AMQP short string)`,
});

export const amqpSinkOptionsSchema = z
  .object({
    url: z.string().regex(/^amqps?:\/\//u, 'expected an amqp:// or amqps:// URL'),
    exchange: z.union([shortstr, callback<(event: DeliveryEvent) => string>('expected a function (event) => exchange')]).default('amq.topic'),
    routingKey: callback<(event: DeliveryEvent) => string>('expected a function (event) => routing key').optional(),
    unroutable: z.enum(['retry', 'reject', 'drop']).default('retry'),
    connectOptions: z
      .custom<Readonly<Record<string, unknown>>>((value) => typeof value === 'object' && value !== null && !Array.isArray(value), {
        message: 'expected an object of rabbitmq-client connection options',
      })
      .optional(),
    timeoutMs: z.number().int().positive().max(600_000).default(10_000),
  })
  .strict();
type ResolvedAmqpSinkOptions = z.output<typeof amqpSinkOptionsSchema>;

interface Link {
  connection: Connection;
  publisher: Publisher;
}

export function amqpSink(options: AmqpSinkOptions): Sink {
  const resolved = parseOptions(amqpSinkOptionsSchema, options, 'amqpSink options');
  const where = redactedUrl(resolved.url);
  const link = lazyClient('amqpSink', open);
  /** The last connection error the client reported, quoted when a publish fails for want of one. */
  let lastConnectionError: unknown;
  /** Message ids published and not yet settled, and the ones the broker returned as unroutable. */
  const inFlight = new Map<string, number>();
  const returned = new Map<string, ReturnedMessage>();

  /** One connection and one confirm-mode channel for the sink's life; the client keeps them up. */
  async function open(): Promise<Link> {
    const { Connection } = await import('rabbitmq-client').catch(missingPeer('amqpSink', 'rabbitmq-client'));
    const connectOptions = resolved.connectOptions as Omit<ConnectionOptions, 'url'> | undefined;
    const connection = new Connection({ connectionName: 'pg-once relay', ...connectOptions, url: resolved.url });
    // Without a listener, the client's 'error' event (each failed reconnect) would crash the
    // process. The client retries by itself; the error is quoted when a publish fails.
    connection.on('error', (error: unknown) => {
      lastConnectionError = error;
    });
    connection.on('connection', () => {
      lastConnectionError = undefined;
    });
    // maxAttempts 1: the relay owns retries (with backoff, counted in the outbox row).
    const publisher = connection.createPublisher({ confirm: true, maxAttempts: 1 });
    publisher.on('basic.return', (message: ReturnedMessage) => {
      if (typeof message.messageId === 'string' && inFlight.has(message.messageId)) returned.set(message.messageId, message);
    });
    return { connection, publisher };
  }

  async function start(_info: SinkStartInfo): Promise<void> {
    const { connection } = await link.get();
    try {
      // disableAutoClose: the client keeps its own connection state; the sink closes it below.
      await connection.onConnect(resolved.timeoutMs, true);
    } catch (error) {
      // A relay whose start failed does not close its sinks: without this, the client would go
      // on reconnecting and keep the process alive.
      void link.forget().then((opened) => opened?.connection.close().catch(() => {}));
      throw deliveryFailure('amqpSink', `connecting to ${where} failed`, error, lastConnectionError);
    }
    if (typeof resolved.exchange !== 'string' || resolved.exchange === '') return;
    const exchange = resolved.exchange;
    // A passive declare only checks: the exchange belongs to whoever runs the broker's topology.
    const channel = await connection.acquire();
    try {
      await channel.exchangeDeclare({ exchange, passive: true });
    } catch (error) {
      if ((error as { code?: unknown }).code === 'NOT_FOUND') {
        throw new SinkMisconfiguredError(
          `pg-once amqpSink: exchange "${exchange}" does not exist on ${where}, so every publish would fail. ` +
            'Declare it (and bind queues to it) before starting the relay, or choose another exchange.',
          { cause: error },
        );
      }
      throw deliveryFailure('amqpSink', `checking exchange "${exchange}" failed`, error);
    } finally {
      if (channel.active) await channel.close().catch(() => {});
    }
  }

  async function deliver(event: DeliveryEvent, context: DeliveryContext): Promise<void> {
    let route = '';
    try {
      const envelope = messageEnvelope(event, resolved);
      route = `exchange "${envelope.exchange}" with routing key "${envelope.routingKey}"`;
      const { publisher } = await settleWithin(link.get(), context.signal, resolved.timeoutMs);
      const id = event.dedupeId;
      inFlight.set(id, (inFlight.get(id) ?? 0) + 1);
      try {
        // Resolves on the broker's basic.ack: the message is routed and, for durable queues,
        // persisted. A nack or a connection lost before the ack rejects: the relay retries.
        // A Buffer, not a string: rabbitmq-client would label a string body text/plain.
        const body = Buffer.from(JSON.stringify(eventEnvelope(event)));
        await settleWithin(publisher.send(envelope, body), context.signal, resolved.timeoutMs);
        // RabbitMQ sends basic.return before the ack of an unroutable mandatory message, but
        // rabbitmq-client emits returns from a setImmediate, after the ack has resolved the
        // publish: one turn of the event loop lets the return land before it is looked up.
        await new Promise((resolve) => setImmediate(resolve));
        const bounce = returned.get(id);
        if (bounce) throw unroutable(event, route, bounce, resolved.unroutable);
      } finally {
        const count = (inFlight.get(id) ?? 1) - 1;
        if (count > 0) inFlight.set(id, count);
        else inFlight.delete(id);
        returned.delete(id);
      }
    } catch (error) {
      if (error instanceof OnceError) throw error;
      const what = context.signal.aborted ? 'was aborted (timeout or shutdown)' : 'failed';
      throw deliveryFailure('amqpSink', `publishing event ${event.id} to ${route || where} ${what}`, error, lastConnectionError);
    }
  }

  async function close(): Promise<void> {
    const opened = await link.close();
    if (!opened) return;
    // Both at once: the connection's close() waits for the publisher's channel to close, and the
    // publisher's close() waits for a channel still being set up, which only the connection's
    // close() cuts short while the broker is unreachable (else it would wait out acquireTimeout).
    await Promise.all([opened.publisher.close().catch(() => {}), opened.connection.close()]);
  }

  return Object.assign(deliver, { start, close });
}

/**
 * The AMQP message of an event. `message_id` is the dedupe id, what consumers dedupe on; the
 * tenant, topic and ordering key travel as headers, so a consumer can route and dedupe per tenant
 * without parsing the body, which is the same JSON envelope the other sinks send.
 */
function messageEnvelope(event: DeliveryEvent, options: ResolvedAmqpSinkOptions): Envelope {
  const exchange = typeof options.exchange === 'string' ? options.exchange : options.exchange(event);
  const routingKey = options.routingKey ? options.routingKey(event) : event.topic;
  for (const [what, value] of [
    ['exchange', exchange],
    ['routing key', routingKey],
  ] as const) {
    if (typeof value !== 'string' || Buffer.byteLength(value) > MAX_SHORTSTR_BYTES) {
      throw new DeliveryRejectedError(`pg-once amqpSink: the ${what} of event ${event.id} is not a string of at most ${MAX_SHORTSTR_BYTES} bytes.`);
    }
  }
  return {
    exchange,
    routingKey,
    mandatory: options.unroutable !== 'drop',
    durable: true,
    messageId: event.dedupeId,
    contentType: 'application/json',
    type: event.topic,
    timestamp: Math.floor(event.createdAt.getTime() / 1_000),
    appId: 'pg-once',
    headers: eventHeaders(event),
  };
}

/**
 * The event's headers plus the sink's. Refused for good (the same on every attempt): the sink's
 * own names, RabbitMQ's `x-*` controls (delays, deduplication, dead-lettering plugins read them)
 * and `CC`/`BCC`, which make the broker route a copy to other queues: an event must not be able to
 * change where or how it is delivered.
 */
function eventHeaders(event: DeliveryEvent): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(event.headers)) {
    if (/^(?:x-|once-|cc$|bcc$)/iu.test(name)) {
      throw new DeliveryRejectedError(
        `pg-once amqpSink: event ${event.id} has header "${name}"; x-*, once-*, CC and BCC are reserved for the broker and the sink.`,
      );
    }
    headers[name] = value;
  }
  headers[AMQP_HEADERS.tenant] = event.tenantId;
  headers[AMQP_HEADERS.topic] = event.topic;
  if (event.orderingKey !== null) headers[AMQP_HEADERS.orderingKey] = event.orderingKey;
  return headers;
}

function unroutable(event: DeliveryEvent, route: string, bounce: ReturnedMessage, policy: AmqpUnroutablePolicy): DeliveryFailedError | DeliveryRejectedError {
  const message =
    `pg-once amqpSink: event ${event.id} was returned by the broker (${bounce.replyCode} ${bounce.replyText}): ` + `no queue is bound to ${route}.`;
  return policy === 'reject' ? new DeliveryRejectedError(message) : new DeliveryFailedError(`${message} Retried until a queue is bound (unroutable: 'retry').`);
}
