/**
 * The built-in webhook sink: POSTs each event, signed the Standard Webhooks way, and maps the
 * receiver's answer onto the relay's three outcomes (delivered, retry later, dead now).
 */
import { Webhook } from 'standardwebhooks';
import { z } from 'zod';
import { DeliveryFailedError, DeliveryRejectedError } from '../../errors.ts';
import { parseOptions } from '../../options.ts';
import { eventEnvelope, type DeliveryContext, type DeliveryEvent, type Sink, type SinkStartInfo } from '../sink.ts';

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

export const httpSinkOptionsSchema = z
  .object({
    /** Where events are POSTed: an http: or https: URL, without user:password. (Required) */
    url: z
      .url({ protocol: /^https?$/, message: 'expected an http: or https: URL' })
      // fetch refuses URLs with credentials; fail here rather than on every delivery.
      .refine((url) => !URL.parse(url)?.username && !URL.parse(url)?.password, 'put credentials in headers, not the URL'),
    /**
     * The Standard Webhooks signing secret shared with the receiver, e.g. 'whsec_' followed by
     * base64. (Required)
     */
    secret: z.string().transform((secret, context) => {
      try {
        // Parsed into the signer once, so a bad secret fails at startup, not at the first event.
        return new Webhook(secret);
      } catch {
        // The library's message is generic, but never echo the secret itself: errors get logged.
        context.addIssue({ code: 'custom', message: "expected a Standard Webhooks secret: 'whsec_' followed by base64" });
        return z.NEVER;
      }
    }),
    /** How long one attempt may take, response body included, in milliseconds. (Default: 10 000) */
    timeoutMs: z.number().int().positive().max(MAX_TIMEOUT_MILLISECONDS).default(10_000),
    /**
     * Extra headers sent with every event, e.g. `authorization`. They win over the event's own
     * headers; neither can replace content-type, idempotency-key, the webhook-* headers or the
     * transport's framing headers, which are dropped. (Default: none)
     */
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
    /** The fetch to send with, e.g. one bound to a custom undici Agent. (Default: globalThis.fetch) */
    fetch: z.custom<typeof globalThis.fetch>((value) => typeof value === 'function', 'Expected a function').optional(),
  })
  .strict();
export type HttpSinkOptions = z.input<typeof httpSinkOptionsSchema>;

export function httpSink(options: HttpSinkOptions): Sink {
  const { url, secret: signer, timeoutMs, headers: staticHeaders = {}, fetch = globalThis.fetch } = parseOptions(
    httpSinkOptionsSchema,
    options,
    'httpSink options',
  );
  // Only the origin goes into messages: webhook URLs often carry a token in the path or query
  // (Slack-style hooks), and messages end up in last_error and in logs.
  const target = new URL(url).origin;

  async function deliver(event: DeliveryEvent, context: DeliveryContext): Promise<void> {
    const body = JSON.stringify(eventEnvelope(event));
    const now = new Date();
    const headers = requestHeaders(event, staticHeaders);
    headers.set('content-type', 'application/json');
    // The dedupe id is the message id: every attempt of an event carries the same one, which is
    // what lets the receiver drop duplicates. The signature covers id, timestamp and body.
    headers.set('webhook-id', event.dedupeId);
    headers.set('webhook-timestamp', String(Math.floor(now.getTime() / 1_000)));
    headers.set('webhook-signature', signer.sign(event.dedupeId, now, body));
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
    const snippet = text.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim().slice(0, MAX_SNIPPET_CHARACTERS);
    const message = `POST ${target} answered ${status}` + (snippet ? `: ${snippet}` : '');
    // 408 and 429 are "not now", as are 3xx (a moved endpoint is usually fixed by its operator
    // before the retries run out) and 5xx. Every other 4xx says this request will never be taken.
    if (status >= 400 && status < 500 && status !== 408 && status !== 429) throw new DeliveryRejectedError(message);
    throw new DeliveryFailedError(status >= 300 && status < 400 ? `${message} (redirects are not followed)` : message, {
      retryAfterMs: parseRetryAfter(response.headers.get('retry-after'), now.getTime()),
    });
  }

  return Object.assign(deliver, {
    async start(info: SinkStartInfo) {
      const { protocol, hostname } = new URL(url);
      if (protocol === 'http:' && !['localhost', '127.0.0.1', '[::1]'].includes(hostname)) {
        info.warn(`httpSink: ${target} is plain http; the signed events travel unencrypted.`);
      }
    },
  });
}

/** The event's headers, then the static ones over them; sink-owned names are dropped. */
function requestHeaders(event: DeliveryEvent, staticHeaders: Record<string, string>): Headers {
  const headers = new Headers();
  for (const [source, values] of [['event', event.headers], ['static', staticHeaders]] as const) {
    for (const [name, value] of Object.entries(values)) {
      if (SINK_OWNED_HEADERS.has(name.toLowerCase())) continue;
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
