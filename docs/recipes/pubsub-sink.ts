/**
 * Recipe: a Google Cloud Pub/Sub sink for the pg-once relay, as a custom sink with the official
 * client (`npm install @google-cloud/pubsub`).
 *
 * UNTESTED AGAINST A BROKER: no Pub/Sub (nor its emulator) runs where pg-once is tested. CI only
 * type-checks this file against the real @google-cloud/pubsub package. Test it against a real
 * project or the emulator before relying on it.
 *
 * - Pub/Sub does not dedupe on publish: a relay retry after a lost answer is published again, with
 *   a new Pub/Sub message id. The dedupe id travels in the `once-dedupe-id` attribute; consumers
 *   dedupe on it (receiveOnce). A subscription's "exactly-once delivery" dedupes redeliveries of
 *   one Pub/Sub message, not two publishes of one event.
 * - The ordering key is Pub/Sub's orderingKey (the topic is opened with messageOrdering, and the
 *   subscription must enable message ordering). After a failed publish Pub/Sub pauses that key
 *   until resumePublishing(key): the sink resumes it, so the relay's retry can go through.
 */
import { PubSub, type ClientConfig, type Topic } from '@google-cloud/pubsub';
import type { DeliveryContext, DeliveryEvent, Sink } from 'pg-once';

export interface PubSubSinkOptions {
  /** PubSub client configuration: projectId, credentials, apiEndpoint... (Default: from the environment) */
  client?: ClientConfig;
  /** The Pub/Sub topic (its short name) of an event. (Default: the event's topic) */
  topic?: (event: DeliveryEvent) => string;
}

export function pubSubSink(options: PubSubSinkOptions = {}): Sink {
  const pubsub = new PubSub(options.client);
  const topics = new Map<string, Topic>();
  const topicOf = options.topic ?? ((event: DeliveryEvent) => event.topic);

  function topic(name: string): Topic {
    let found = topics.get(name);
    if (!found) {
      found = pubsub.topic(name, { messageOrdering: true });
      topics.set(name, found);
    }
    return found;
  }

  async function deliver(event: DeliveryEvent, context: DeliveryContext): Promise<void> {
    context.signal.throwIfAborted();
    const target = topic(topicOf(event));
    try {
      // Resolves with Pub/Sub's message id once the service has stored the message.
      await target.publishMessage({
        json: { id: event.dedupeId, type: event.topic, timestamp: event.createdAt.toISOString(), data: event.payload },
        ...(event.orderingKey === null ? {} : { orderingKey: event.orderingKey }),
        attributes: {
          ...event.headers,
          'once-dedupe-id': event.dedupeId,
          'once-tenant': event.tenantId,
          'once-topic': event.topic,
        },
      });
    } catch (error) {
      if (event.orderingKey !== null) target.resumePublishing(event.orderingKey);
      throw error;
    }
  }

  return Object.assign(deliver, {
    close: async () => {
      await Promise.all([...topics.values()].map((t) => t.flush()));
      await pubsub.close();
    },
  });
}
