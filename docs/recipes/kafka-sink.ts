/**
 * Recipe: a Kafka sink for the pg-once relay, as a custom sink with KafkaJS (`npm install kafkajs`).
 *
 * UNTESTED AGAINST A BROKER: no Kafka runs where pg-once is tested. CI only type-checks this file
 * against the real kafkajs package. Test it against your own cluster before relying on it.
 *
 * - The producer is idempotent: Kafka drops the repeats of ITS OWN retries within one producer
 *   session. It cannot know that a relay retry after a lost acknowledgement is the same event, so
 *   the dedupe id travels in the `once-dedupe-id` header and consumers dedupe on it (receiveOnce).
 * - The message key is the ordering key: events of one key go to one partition, in the order the
 *   relay delivers them (commit order). Events without a key have no key (spread over partitions).
 */
import { Kafka, type KafkaConfig, type Producer } from 'kafkajs';
import type { DeliveryContext, DeliveryEvent, Sink } from 'pg-once';

export interface KafkaSinkOptions {
  /** KafkaJS client configuration: brokers, clientId, ssl, sasl... */
  kafka: KafkaConfig;
  /** The Kafka topic of an event. (Default: the event's topic; Kafka allows [a-zA-Z0-9._-]) */
  topic?: (event: DeliveryEvent) => string;
}

export function kafkaSink(options: KafkaSinkOptions): Sink {
  const topicOf = options.topic ?? ((event: DeliveryEvent) => event.topic);
  // maxInFlightRequests 1 keeps a key's messages in order across the producer's own retries.
  const producer: Producer = new Kafka(options.kafka).producer({ idempotent: true, maxInFlightRequests: 1 });

  async function deliver(event: DeliveryEvent, context: DeliveryContext): Promise<void> {
    context.signal.throwIfAborted();
    // acks -1 (all in-sync replicas, required by the idempotent producer): resolving means the
    // event is replicated. Any error thrown here makes the relay retry with backoff.
    await producer.send({
      topic: topicOf(event),
      acks: -1,
      messages: [
        {
          key: event.orderingKey,
          value: JSON.stringify({ id: event.dedupeId, type: event.topic, timestamp: event.createdAt.toISOString(), data: event.payload }),
          headers: {
            ...event.headers,
            'once-dedupe-id': event.dedupeId,
            'once-tenant': event.tenantId,
            'once-topic': event.topic,
          },
        },
      ],
    });
  }

  return Object.assign(deliver, {
    start: async () => producer.connect(),
    close: async () => producer.disconnect(),
  });
}
