/**
 * A RabbitMQ consumer that processes each event once: pairs with the relay's amqpSink. RabbitMQ
 * delivers at least once (the relay republishes after a lost confirm, the broker redelivers what
 * was not acked before a connection dropped), always under the same `message_id`, the event's
 * dedupe id; receiveOnce records that id in the same transaction as the work, so a repeat finds
 * it and runs nothing. The message is acked only after that transaction committed.
 *
 * The tenant comes from the `once-tenant` header: unlike a signed webhook body, an AMQP header is
 * only as trustworthy as the broker's permissions, so let no one but the relay's user write to
 * the exchange this queue is bound to (RabbitMQ `set_permissions`, write regexp).
 *
 * Run it:  DATABASE_URL=postgres://app@db/app AMQP_URL=amqp://user:pass@rabbit/ QUEUE=orders \
 *          BINDING='orders.#' node examples/amqp-consumer.ts
 * (as a login granted the database's application role, `pg-once roles`; the table is
 * receivedEventsTable(appRole) from examples/inbox-receiver.ts, created by the schema owner.)
 */
import { pathToFileURL } from 'node:url';
import { Kysely, PostgresDialect, sql, type Transaction } from 'kysely';
import pg from 'pg';
import { Connection, ConsumerStatus, type AsyncMessage, type Consumer } from 'rabbitmq-client';
import { AMQP_HEADERS, OnceError, receiveOnce } from '../src/index.ts';

/** An event as amqpSink published it. */
export interface AmqpEvent {
  /** The AMQP message_id: the event's dedupe id. */
  messageId: string;
  tenant: string;
  topic: string;
  orderingKey: string | null;
  /** The JSON envelope `{ id, type, timestamp, data }`. */
  body: { id: string; type: string; timestamp: string; data: unknown };
}

export interface AmqpConsumerOptions {
  connection: Connection;
  db: Kysely<any>;
  /** The (durable) queue to consume; declared if missing. */
  queue: string;
  /** Routing-key patterns bound from `exchange`, e.g. 'orders.#'. (Default: none) */
  bindings?: readonly string[];
  /** The exchange amqpSink publishes to. (Default: 'amq.topic', as amqpSink's) */
  exchange?: string;
  /** Messages processed at once (and prefetched). (Default: 8) */
  concurrency?: number;
  /** The work to do once per event, in the same transaction as the inbox record. */
  handle: (tx: Transaction<any>, event: AmqpEvent) => Promise<unknown>;
}

export function startAmqpConsumer(options: AmqpConsumerOptions): Consumer {
  const { connection, db, queue, handle, exchange = 'amq.topic', concurrency = 8 } = options;
  return connection.createConsumer(
    {
      queue,
      queueOptions: { durable: true },
      queueBindings: (options.bindings ?? []).map((routingKey) => ({ queue, exchange, routingKey })),
      qos: { prefetchCount: concurrency },
      concurrency,
    },
    async (message) => {
      const event = amqpEvent(message);
      // Not something amqpSink published: no retry will ever make it processable.
      if (!event) return ConsumerStatus.DROP;
      try {
        await receiveOnce(db, event, (tx) => handle(tx, event), { source: 'amqp' });
        return ConsumerStatus.ACK;
      } catch (error) {
        // A permanent error (a bad tenant, a failure the handler marked permanent) would fail the
        // same way on every redelivery: dead-letter it. Anything else goes back to the queue.
        if (error instanceof OnceError && !error.retryable) return ConsumerStatus.DROP;
        throw error;
      }
    },
  );
}

function amqpEvent(message: AsyncMessage): AmqpEvent | undefined {
  const headers = (message.headers ?? {}) as Record<string, unknown>;
  const tenant = headers[AMQP_HEADERS.tenant];
  const topic = headers[AMQP_HEADERS.topic];
  const orderingKey = headers[AMQP_HEADERS.orderingKey];
  if (typeof message.messageId !== 'string' || typeof tenant !== 'string' || typeof topic !== 'string') return undefined;
  // rabbitmq-client parses an application/json body; anything else is not amqpSink's.
  if (typeof message.body !== 'object' || message.body === null || Buffer.isBuffer(message.body)) return undefined;
  return {
    messageId: message.messageId,
    tenant,
    topic,
    orderingKey: typeof orderingKey === 'string' ? orderingKey : null,
    body: message.body as AmqpEvent['body'],
  };
}

/** Stores a received event in the example's business table (received_events, see above). */
export async function storeAmqpEvent(tx: Transaction<any>, event: AmqpEvent): Promise<{ stored: string }> {
  await sql`INSERT INTO received_events (message_id, type, data) VALUES (${event.messageId}, ${event.topic}, ${JSON.stringify(event.body.data ?? null)}::jsonb)`.execute(
    tx,
  );
  return { stored: event.messageId };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const db = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: process.env.DATABASE_URL }) }) });
  const connection = new Connection(process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672');
  connection.on('error', (error) => console.error('amqp:', error));
  const queue = process.env.QUEUE ?? 'pg-once-events';
  const consumer = startAmqpConsumer({ connection, db, queue, bindings: (process.env.BINDING ?? '#').split(' '), handle: storeAmqpEvent });
  consumer.on('error', (error) => console.error('consumer:', error));
  console.log(`consuming ${queue}; Ctrl-C stops`);
  process.once('SIGINT', async () => {
    await consumer.close();
    await connection.close();
    await db.destroy();
  });
}
