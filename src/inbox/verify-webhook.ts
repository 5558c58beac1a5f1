/**
 * verifyWebhook(headers, body, secret): Standard Webhooks verification (the `standardwebhooks`
 * package) for receivers of the relay's HTTP sink or any Standard Webhooks sender. Returns the
 * `webhook-id`, to use as the message id with receiveOnce, and the parsed body.
 */
import { timingSafeEqual } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import { InvalidOptionsError, WebhookVerificationError } from '../errors.ts';

export interface VerifiedWebhook {
  /** The `webhook-id` header: the sender's dedupe id, the same on every retry. */
  messageId: string;
  /** When the sender signed this attempt. */
  timestamp: Date;
  /** The JSON body. */
  payload: unknown;
}

export interface VerifyWebhookOptions {
  /** How far the signature time may be from now, in seconds, either way. (Default: 300) */
  toleranceSeconds?: number;
}

type HeaderBag = Headers | Record<string, string | string[] | undefined>;

function header(headers: HeaderBag, name: string): string | undefined {
  if (headers instanceof Headers) return headers.get(name) ?? undefined;
  const value = headers[name] ?? headers[name.toLowerCase()];
  return Array.isArray(value) ? value[0] : value;
}

export function verifyWebhook(headers: HeaderBag, body: string | Buffer, secret: string, options: VerifyWebhookOptions = {}): VerifiedWebhook {
  let verifier: Webhook;
  try {
    verifier = new Webhook(secret);
  } catch (error) {
    throw new InvalidOptionsError('webhook secret', [{ path: ['secret'], message: "expected a Standard Webhooks secret: 'whsec_' followed by base64", code: 'custom' }], {
      cause: error,
    });
  }
  const id = header(headers, 'webhook-id');
  const timestamp = header(headers, 'webhook-timestamp');
  const signature = header(headers, 'webhook-signature');
  if (!id || !timestamp || !signature) {
    throw new WebhookVerificationError('missing_headers', 'pg-once: webhook-id, webhook-timestamp and webhook-signature headers are required.');
  }
  // The timestamp is checked here (the library checks it too, with a fixed 5 minutes) so that a
  // stale delivery is told apart from a bad signature, and the tolerance is configurable.
  const seconds = Number(timestamp);
  const tolerance = options.toleranceSeconds ?? 300;
  const skew = Date.now() / 1_000 - seconds;
  if (!Number.isFinite(seconds) || skew > tolerance) {
    throw new WebhookVerificationError('stale_timestamp', `pg-once: the webhook was signed ${Math.round(skew)} s ago, beyond the ${tolerance} s tolerance.`);
  }
  if (skew < -tolerance) {
    throw new WebhookVerificationError('future_timestamp', `pg-once: the webhook timestamp is ${Math.round(-skew)} s in the future.`);
  }
  // The signature is recomputed with the package's signer and compared in constant time, rather
  // than through its verify(), whose own fixed 5-minute timestamp check would override ours.
  const expected = Buffer.from(verifier.sign(id, new Date(seconds * 1_000), body));
  const matches = signature.split(' ').some((offered) => {
    const candidate = Buffer.from(offered);
    return candidate.length === expected.length && timingSafeEqual(candidate, expected);
  });
  if (!matches) throw new WebhookVerificationError('bad_signature', 'pg-once: the webhook signature does not match the body and secret.');
  let payload: unknown;
  try {
    payload = JSON.parse(body.toString());
  } catch (error) {
    throw new WebhookVerificationError('bad_signature', 'pg-once: the signed webhook body is not JSON.', { cause: error });
  }
  return { messageId: id, timestamp: new Date(seconds * 1_000), payload };
}
