/**
 * httpSink's CloudEvents 1.0 mode: an outbox event as the body and headers of one HTTP request,
 * in structured or binary content mode. The event itself is built and validated by the
 * `cloudevents` SDK, an optional peer dependency imported on first use (a hard dependency would
 * bring 44 packages, browser polyfills among them, and an engines cap of Node <=24 to every
 * install of pg-once, for a mode most users never turn on).
 */
import type * as CloudEventsSdk from 'cloudevents';
import { z } from 'zod';
import { DeliveryRejectedError } from '../../errors.ts';
import type { DeliveryEvent } from '../sink.ts';
import { missingPeer } from './broker-delivery.ts';

export interface CloudEventsOptions {
  /**
   * 'structured': the whole CloudEvent is the body (`application/cloudevents+json`), so the
   * webhook signature covers every attribute, the tenant included. 'binary': the body is the
   * payload alone (`application/json`) and the attributes travel as `ce-*` headers, which the
   * signature does not cover. (Default: 'structured')
   */
  mode?: 'structured' | 'binary';
  /**
   * The `source` attribute: a URI-reference naming the producer, or a function of the event
   * returning one. Receivers treat events with the same source and id as duplicates, and a
   * dedupe id is unique within its tenant, hence the default.
   * (Default: `/pg-once/tenants/<tenant id, percent-encoded>`)
   */
  source?: string | ((event: DeliveryEvent) => string);
}

/**
 * The CloudEvents extension attributes the sink adds. Extension names are lowercase letters and
 * digits only (CloudEvents 1.0, "Attribute Naming Convention"), so no `tenant_id`.
 */
export const CLOUD_EVENT_EXTENSIONS = { tenant: 'tenantid', orderingKey: 'orderingkey' } as const;

/**
 * RFC 3986's alphabet for a URI-reference (unreserved, reserved, percent-escapes). Checked here,
 * before the SDK's own format check, so that a bad fixed source fails when the sink is made.
 */
const URI_REFERENCE = /^(?:[A-Za-z0-9\-._~:/?#[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})+$/;
const SOURCE_PROBLEM = 'a CloudEvents source is a non-empty URI-reference (RFC 3986 characters; percent-encode the rest)';

export const cloudEventsOptionsSchema = z
  .object({
    mode: z.enum(['structured', 'binary']).default('structured'),
    source: z
      .custom<string | ((event: DeliveryEvent) => string)>(
        (value) => typeof value === 'function' || (typeof value === 'string' && URI_REFERENCE.test(value)),
        SOURCE_PROBLEM,
      )
      .optional(),
  })
  .strict();

export type ResolvedCloudEventsOptions = z.output<typeof cloudEventsOptionsSchema>;

export interface CloudEventRequest {
  headers: Record<string, string>;
  /** The exact text sent, and so the text signed. */
  body: string;
}

let sdk: Promise<typeof CloudEventsSdk> | undefined;

/** The SDK, imported once; a missing package is a SinkMisconfiguredError naming the fix. */
function loadSdk(): Promise<typeof CloudEventsSdk> {
  sdk ??= import('cloudevents').catch((error: unknown) => {
    sdk = undefined;
    return missingPeer('httpSink (cloudEvents)', 'cloudevents')(error);
  });
  return sdk;
}

/**
 * For httpSink's start(), so a missing package stops the relay's start. Typed without the SDK's
 * types, so the emitted declarations of pg-once need no `cloudevents` installed.
 */
export async function loadCloudEventsSdk(): Promise<void> {
  await loadSdk();
}

/**
 * The request for `event`. The id is the dedupe id, so every attempt carries the same one;
 * `time` is when the event was enqueued, not when this attempt runs, for the same reason.
 */
export async function cloudEventRequest(event: DeliveryEvent, options: ResolvedCloudEventsOptions): Promise<CloudEventRequest> {
  const { CloudEvent, HTTP } = await loadSdk();
  const source = typeof options.source === 'function' ? options.source(event) : (options.source ?? defaultSource(event.tenantId));
  if (typeof source !== 'string' || !URI_REFERENCE.test(source)) {
    throw new DeliveryRejectedError(`httpSink: the source ${JSON.stringify(source)} for event ${event.id}: ${SOURCE_PROBLEM}`);
  }
  let cloudEvent: CloudEventsSdk.CloudEvent<unknown>;
  try {
    cloudEvent = new CloudEvent<unknown>({
      specversion: '1.0',
      id: event.dedupeId,
      source,
      type: event.topic,
      time: event.createdAt.toISOString(),
      datacontenttype: 'application/json',
      data: event.payload,
      [CLOUD_EVENT_EXTENSIONS.tenant]: event.tenantId,
      ...(event.orderingKey === null ? {} : { [CLOUD_EVENT_EXTENSIONS.orderingKey]: event.orderingKey }),
    });
  } catch (error) {
    // The SDK's validation depends on the event alone: no retry could make it pass.
    throw new DeliveryRejectedError(`httpSink: event ${event.id} is not a valid CloudEvent: ${(error as Error).message}`, { cause: error });
  }
  if (options.mode === 'structured') {
    const { headers, body } = HTTP.structured(cloudEvent);
    return { headers: headers as Record<string, string>, body: body as string };
  }
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(HTTP.binary(cloudEvent).headers)) {
    headers[name] = name.startsWith('ce-') ? percentEncode(String(value)) : String(value);
  }
  // The body is written here, not taken from the SDK: it sends a string payload as raw text
  // (not JSON, though the content type says JSON) and a number or boolean as a non-string body.
  return { headers, body: JSON.stringify(event.payload) ?? 'null' };
}

/** A source unique per tenant, so (source, id) names one event even where dedupe ids repeat across tenants. */
function defaultSource(tenantId: string): string {
  return `/pg-once/tenants/${encodeURIComponent(tenantId)}`;
}

/**
 * Header values per the CloudEvents HTTP binding 1.0.2, 3.1.3.2: space, `"`, `%` and everything
 * outside printable ASCII as %XX of its UTF-8 bytes. Without it fetch throws on characters above
 * U+00FF and sends U+0080..U+00FF as Latin-1, so a tenant or ordering key like 'café' could never
 * be delivered. (The JavaScript SDK 10.0 neither encodes nor decodes; other SDKs decode.)
 */
function percentEncode(value: string): string {
  return value.replace(/[^\x21\x23\x24\x26-\x7e]+/g, (run) =>
    Array.from(Buffer.from(run, 'utf8'), (byte) => `%${byte.toString(16).toUpperCase().padStart(2, '0')}`).join(''),
  );
}
