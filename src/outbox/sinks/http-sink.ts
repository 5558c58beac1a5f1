/**
 * The built-in webhook sink: POSTs each event, signed the Standard Webhooks way, and maps the
 * receiver's answer onto the relay's three outcomes (delivered, retry later, dead now). The body
 * is `{ id, type, timestamp, data, tenant }`: the tenant is signed with the event. With
 * `cloudEvents` it is a CloudEvent instead (cloud-event-request.ts), signed the same way.
 */
import { z } from 'zod';
import { DeliveryFailedError, DeliveryRejectedError } from '../../errors.ts';
import { webhookSecretsSchema } from '../../internal/webhook-secret.ts';
import { callback, parseOptions } from '../../options.ts';
import { eventEnvelope, type DeliveryContext, type DeliveryEvent, type Sink, type SinkStartInfo } from '../sink.ts';
import { cloudEventRequest, cloudEventsOptionsSchema, loadCloudEventsSdk, type CloudEventsOptions } from './cloud-event-request.ts';

/** What a webhook-id may hold: printable ASCII, no space at either end (HTTP trims those). */
const HEADER_SAFE_ID = /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/;
const MAX_TIMEOUT_MILLISECONDS = 10 * 60 * 1_000;
/** A receiver asking for more than this is probably confused; the relay's backoff still applies. */
const MAX_RETRY_AFTER_MILLISECONDS = 60 * 60 * 1_000;
/** Response bytes read before giving up on the body (see readBody). */
const MAX_RESPONSE_BYTES = 64 * 1_024;
/** How much of an error response's body goes into the error message (and so the event's last_error). */
const MAX_SNIPPET_CHARACTERS = 200;

/**
 * Headers the sink owns. The webhook-* and idempotency-key ones are what receivers dedupe and
 * verify on, so no event or static header may replace them. The framing headers are ones undici
 * refuses or honours literally: letting an event set `content-length` or `expect` would make
 * every attempt fail the same way, forever.
 */
const SINK_OWNED_HEADERS = new Set([
  'content-type',
  'idempotency-key',
  'webhook-id',
  'webhook-timestamp',
  'webhook-signature',
  'content-length',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'upgrade',
  'expect',
  'host',
  'te',
  'trailer',
]);

/**
 * Decides, for an answer that is not 2xx, whether the receiver refused the event for good: the
 * event is then dead at once (DeliveryRejectedError) instead of retried with backoff.
 */
export type PermanentFailurePolicy = (response: { status: number; headers: Headers }) => boolean;

export interface PermanentFailureOptions {
  /** Statuses that mean "this endpoint will never take events". (Default: [410]) */
  statuses?: readonly number[];
}

/**
 * What webhook senders do (Svix, Stripe): only an explicit "gone" is final, every other answer is
 * retried. A 400, 401 or 404 is most often the receiver's own mistake (a mistyped secret, a
 * deploy that moved the route), fixed within the hours the retries last; treating it as final
 * would dead-letter the whole stream on the first misconfiguration.
 */
export function defaultIsPermanent({ statuses = [410] }: PermanentFailureOptions = {}): PermanentFailurePolicy {
  const permanent = new Set(statuses);
  return ({ status }) => permanent.has(status);
}

export interface HttpSinkOptions {
  /** Where events are POSTed: an http: or https: URL, without user:password. (Required) */
  url: string;
  /**
   * The Standard Webhooks signing secret shared with the receiver: 'whsec_' followed by base64 of
   * at least 16 bytes (`npx pg-once webhook-secret` makes one). During a rotation, a list: every
   * delivery is signed with each, and a receiver holding any one of them accepts it. (Required)
   */
  secret: string | readonly string[];
  /** How long one attempt may take, response body included, in milliseconds. (Default: 10 000) */
  timeoutMs?: number;
  /**
   * Extra headers sent with every event, e.g. `authorization`. They win over the event's own
   * headers; neither can replace content-type, idempotency-key, the webhook-* headers, the
   * transport's framing headers or, with `cloudEvents`, any `ce-*` header: those are dropped.
   * (Default: none)
   */
  headers?: Record<string, string>;
  /**
   * Which non-2xx answers are final (the event is dead at once); all others are retried with
   * backoff, honouring Retry-After. (Default: `defaultIsPermanent()`, i.e. only 410 Gone)
   */
  isPermanent?: PermanentFailurePolicy;
  /** The fetch to send with, e.g. one bound to a custom undici Agent. (Default: globalThis.fetch) */
  fetch?: typeof globalThis.fetch;
  /**
   * Send each event as a CloudEvent 1.0 (id = dedupe id, type = topic, time = when it was
   * enqueued, the tenant and ordering key as the `tenantid` and `orderingkey` extensions) instead
   * of the Standard Webhooks body. The webhook-* and idempotency-key headers are sent and signed
   * all the same. Needs the `cloudevents` package (`npm install cloudevents`).
   * (Default: none, the Standard Webhooks body)
   */
  cloudEvents?: CloudEventsOptions;
}

export const httpSinkOptionsSchema = z
  .object({
    url: z
      .url({ protocol: /^https?$/, message: 'expected an http: or https: URL' })
      // fetch refuses URLs with credentials; fail here rather than on every delivery.
      .refine((url) => !URL.parse(url)?.username && !URL.parse(url)?.password, 'put credentials in headers, not the URL'),
    // Parsed into signers once, so a bad secret fails at startup, not at the first event.
    secret: webhookSecretsSchema,
    timeoutMs: z.number().int().positive().max(MAX_TIMEOUT_MILLISECONDS).default(10_000),
    headers: z
      .record(z.string(), z.string())
      .superRefine((headers, context) => {
        try {
          new Headers(headers);
        } catch (error) {
          context.addIssue({ code: 'custom', message: (error as Error).message });
        }
      })
      .optional(),
    isPermanent: callback<PermanentFailurePolicy>().optional(),
    fetch: callback<typeof globalThis.fetch>().optional(),
    cloudEvents: cloudEventsOptionsSchema.optional(),
  })
  .strict();

export function httpSink(options: HttpSinkOptions): Sink {
  const {
    url,
    secret: signers,
    timeoutMs,
    headers: staticHeaders = {},
    isPermanent = defaultIsPermanent(),
    fetch = globalThis.fetch,
    cloudEvents,
  } = parseOptions(httpSinkOptionsSchema, options, 'httpSink options');
  // Only the origin goes into messages: webhook URLs often carry a token in the path or query
  // (Slack-style hooks), and messages end up in last_error and in logs.
  const target = new URL(url).origin;

  async function deliver(event: DeliveryEvent, context: DeliveryContext): Promise<void> {
    if (!HEADER_SAFE_ID.test(event.dedupeId)) {
      // Headers carry bytes, not text: fetch throws a TypeError on characters above U+00FF and
      // sends U+0080..U+00FF as Latin-1 while the signature covers their UTF-8, so no attempt
      // could ever succeed (or verify). Dead now, with the reason, rather than 25 retries.
      throw new DeliveryRejectedError(
        `the dedupe id ${JSON.stringify(event.dedupeId)} cannot be a webhook-id: it must be printable ASCII without leading or trailing spaces`,
      );
    }
    // The tenant is inside the signed body: taken from a header, it could be changed by whoever
    // replays a captured delivery, and the receiver would file the event under another tenant.
    // (A binary-mode CloudEvent cannot do that: its tenant is the unsigned ce-tenantid header.)
    const { body, headers: formatHeaders } = cloudEvents
      ? await cloudEventRequest(event, cloudEvents)
      : { body: JSON.stringify({ ...eventEnvelope(event), tenant: event.tenantId }), headers: { 'content-type': 'application/json' } };
    // The database's clock (once the relay supplies it), so a relay host whose clock drifted
    // does not sign timestamps that receivers refuse as stale or future.
    const now = (context as DeliveryContext & { now?: () => Date }).now?.() ?? new Date();
    const headers = requestHeaders(event, staticHeaders, cloudEvents !== undefined);
    for (const [name, value] of Object.entries(formatHeaders)) headers.set(name, value);
    // The dedupe id is the message id: every attempt of an event carries the same one, which is
    // what lets the receiver drop duplicates. The signature covers id, timestamp and body; during
    // a rotation there is one signature per secret, space-separated.
    headers.set('webhook-id', event.dedupeId);
    headers.set('webhook-timestamp', String(Math.floor(now.getTime() / 1_000)));
    headers.set('webhook-signature', signers.map((signer) => signer.sign(event.dedupeId, now, body)).join(' '));
    headers.set('idempotency-key', event.dedupeId);

    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = AbortSignal.any([context.signal, timeout]);
    const failed = (what: string, error: unknown) => {
      if (context.signal.aborted) return new DeliveryFailedError(`POST ${target} was aborted by the relay`, { cause: error });
      if (timeout.aborted) return new DeliveryFailedError(`POST ${target} timed out after ${timeoutMs} ms`, { cause: error });
      // undici's own message is always "fetch failed"; what happened is in its cause.
      const cause = (error as { cause?: { message?: string; code?: string } } | null)?.cause;
      const reason = cause?.message || cause?.code || (error as Error | null)?.message;
      return new DeliveryFailedError(`POST ${target} failed ${what}: ${reason}`, { cause: error });
    };

    let response: Response;
    try {
      // Redirects are not followed: fetch would turn a POST into a GET on 301/302/303 (so a 2xx
      // would mean nothing), and would hand the signed event to whoever the Location names.
      response = await fetch(url, { method: 'POST', headers, body, signal, redirect: 'manual' });
    } catch (error) {
      throw failed('before a response', error);
    }

    const { status } = response;
    if (status >= 200 && status < 300) {
      // Read to the end, under the same timeout: a 2xx whose body is then cut off may come from a
      // receiver that flushed headers and crashed while working, so it counts as a failure (a
      // retry is a harmless duplicate; a lost event is not). A body read to its end also lets
      // undici reuse the socket.
      try {
        await readBody(response);
      } catch (error) {
        throw failed(`while reading the ${status} response`, error);
      }
      return;
    }

    // The status decides the outcome; the body only explains it, so a broken one is ignored.
    const text = await readBody(response).catch(() => '');
    const snippet = text
      // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what this strips from the body's snippet.
      .replace(/[\u0000-\u001f\u007f]+/g, ' ')
      .trim()
      .slice(0, MAX_SNIPPET_CHARACTERS);
    const message = `POST ${target} answered ${status}${snippet ? `: ${snippet}` : ''}`;
    if (isPermanent({ status, headers: response.headers })) throw new DeliveryRejectedError(message);
    throw new DeliveryFailedError(status >= 300 && status < 400 ? `${message} (redirects are not followed)` : message, {
      retryAfterMs: parseRetryAfter(response.headers.get('retry-after'), now.getTime()),
    });
  }

  return Object.assign(deliver, {
    async start(info: SinkStartInfo) {
      // A missing cloudevents package stops the relay's start rather than failing every event.
      if (cloudEvents) await loadCloudEventsSdk();
      const { protocol, hostname } = new URL(url);
      if (protocol === 'http:' && !['localhost', '127.0.0.1', '[::1]'].includes(hostname)) {
        info.warn(`httpSink: ${target} is plain http; the signed events travel unencrypted.`);
      }
    },
  });
}

/**
 * The event's headers, then the static ones over them; sink-owned names are dropped. In
 * CloudEvents mode every `ce-*` name is the sink's too: one from an event could otherwise stand
 * in for an attribute the sink did not set (binary mode reads attributes from headers).
 */
function requestHeaders(event: DeliveryEvent, staticHeaders: Record<string, string>, cloudEvents: boolean): Headers {
  const headers = new Headers();
  for (const [source, values] of [
    ['event', event.headers],
    ['static', staticHeaders],
  ] as const) {
    for (const [name, value] of Object.entries(values)) {
      const lowerCase = name.toLowerCase();
      if (SINK_OWNED_HEADERS.has(lowerCase) || (cloudEvents && lowerCase.startsWith('ce-'))) continue;
      try {
        headers.set(name, value);
      } catch (error) {
        // Only event headers can get here (static ones were checked at creation). The outbox
        // accepts names HTTP does not (spaces, characters above U+00FF): no retry can send them.
        throw new DeliveryRejectedError(`the ${source} header "${name}" cannot be sent over HTTP`, { cause: error });
      }
    }
  }
  return headers;
}

/** Reads up to MAX_RESPONSE_BYTES as text; a longer body is cancelled rather than downloaded. */
async function readBody(response: Response): Promise<string> {
  if (!response.body) return '';
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let text = '';
  let bytes = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return text + decoder.decode();
    text += decoder.decode(value, { stream: true });
    bytes += value.byteLength;
    if (bytes > MAX_RESPONSE_BYTES) {
      await reader.cancel().catch(() => {});
      return text;
    }
  }
}

/**
 * `Retry-After` in milliseconds from `nowMs`: delay-seconds, or an HTTP-date (all three RFC 9110
 * forms start with a weekday name, which keeps Date.parse's leniency from reading "2" as a year).
 * Anything else is ignored and the relay's own backoff applies.
 */
function parseRetryAfter(value: string | null, nowMs: number): number | undefined {
  const text = value?.trim() ?? '';
  let milliseconds: number;
  if (/^\d+$/.test(text)) {
    milliseconds = Number(text) * 1_000;
  } else if (/^(mon|tue|wed|thu|fri|sat|sun)/i.test(text) && !Number.isNaN(Date.parse(text))) {
    milliseconds = Math.max(0, Date.parse(text) - nowMs);
  } else {
    return undefined;
  }
  return Math.min(milliseconds, MAX_RETRY_AFTER_MILLISECONDS);
}
