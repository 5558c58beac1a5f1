/**
 * Recipe: an Amazon SQS FIFO sink for the pg-once relay, as a custom sink with the AWS SDK v3
 * (`npm install @aws-sdk/client-sqs`).
 *
 * UNTESTED AGAINST A BROKER: no SQS runs where pg-once is tested. CI only type-checks this file
 * against the real @aws-sdk/client-sqs package. Test it against a real queue before relying on it.
 *
 * - MessageDeduplicationId = the dedupe id: SQS drops a repeat, but only within its FIXED 5-minute
 *   deduplication interval. The relay retries for much longer (about 1.2 hours by default), so a
 *   late retry is delivered again: consumers still dedupe on the `once-dedupe-id` attribute
 *   (receiveOnce), or the relay's retries are shortened to fit the interval. start() warns.
 * - MessageGroupId = the ordering key: SQS FIFO delivers a group in order. Events without a key
 *   each get a group of their own (the dedupe id), so they are not serialised behind each other.
 */
import { createHash } from 'node:crypto';
import { SendMessageCommand, SQSClient, type SQSClientConfig } from '@aws-sdk/client-sqs';
import type { DeliveryContext, DeliveryEvent, Sink, SinkStartInfo } from 'pg-once';

/** SQS FIFO's deduplication interval: fixed by AWS, not configurable. */
const SQS_DEDUPLICATION_INTERVAL_MILLISECONDS = 5 * 60 * 1_000;

export interface SqsFifoSinkOptions {
  /** The FIFO queue's URL (it ends in .fifo). */
  queueUrl: string;
  /** SQSClient configuration: region, credentials... (Default: the SDK's defaults, from the environment) */
  client?: SQSClientConfig;
}

/**
 * MessageDeduplicationId and MessageGroupId take at most 128 characters of [a-zA-Z0-9] and
 * !"#$%&'()*+,-./:;<=>?@[\]^_`{|}~; pg-once's own ids (once_<hex>, UUIDs) fit, a longer or other
 * id is replaced by its SHA-256, which stays the same on every attempt.
 */
function sqsId(value: string): string {
  return /^[\x21-\x7e]{1,128}$/u.test(value) ? value : createHash('sha256').update(value).digest('hex');
}

export function sqsFifoSink(options: SqsFifoSinkOptions): Sink {
  const client = new SQSClient(options.client ?? {});

  async function start(info: SinkStartInfo): Promise<void> {
    if (info.retryHorizonMs > SQS_DEDUPLICATION_INTERVAL_MILLISECONDS) {
      info.warn(
        `sqsFifoSink: SQS drops repeats only within 5 minutes, but the relay may retry an event for up to ` +
          `${Math.round(info.retryHorizonMs / 1_000)} s; consumers must dedupe on the once-dedupe-id attribute.`,
      );
    }
  }

  async function deliver(event: DeliveryEvent, context: DeliveryContext): Promise<void> {
    await client.send(
      new SendMessageCommand({
        QueueUrl: options.queueUrl,
        MessageBody: JSON.stringify({ id: event.dedupeId, type: event.topic, timestamp: event.createdAt.toISOString(), data: event.payload }),
        MessageDeduplicationId: sqsId(event.dedupeId),
        MessageGroupId: sqsId(event.orderingKey ?? event.dedupeId),
        MessageAttributes: {
          'once-dedupe-id': { DataType: 'String', StringValue: event.dedupeId },
          'once-tenant': { DataType: 'String', StringValue: event.tenantId },
          'once-topic': { DataType: 'String', StringValue: event.topic },
        },
      }),
      // The SDK stops waiting when the relay aborts (timeout, shutdown); the retry carries the same ids.
      { abortSignal: context.signal },
    );
  }

  return Object.assign(deliver, { start, close: async () => client.destroy() });
}
