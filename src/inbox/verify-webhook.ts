/**
 * verifyWebhook(headers, body, secret): Standard Webhooks verification for receivers of the
 * relay's HTTP sink or any Standard Webhooks sender. Returns the `webhook-id` and the tenant, both
 * covered by the signature, to hand to receiveOnce, and the parsed body.
 */
import { timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { WebhookVerificationError } from '../errors.ts';
import { webhookSecretsSchema } from '../internal/webhook-secret.ts';
import { parseOptions } from '../options.ts';
import type { InboxMessage } from './receive-once.ts';

export interface VerifiedWebhook extends InboxMessage {
  /** The `webhook-id` header: the sender's dedupe id, the same on every retry. */
  messageId: string;
  /**
   * The tenant the event belongs to: the `tenant` field of the signed body (httpSink always signs
   * one), or its `tenantid` when the body is a structured CloudEvent, else `options.tenant`.
   * Never taken from an unsigned header, so for a binary-mode CloudEvent (a `ce-specversion`
   * header; its tenant is the unsigned `ce-tenantid`) only `options.tenant`.
   */
  tenant: string;
  /** When the sender signed this attempt. */
  timestamp: Date;
  /** The JSON body (for a structured CloudEvent, the whole event: the payload is its `data`). */
  payload: unknown;
}

export interface VerifyWebhookOptions {
  /** How far the signature time may be from now, in seconds, either way. (Default: 300) */
  toleranceSeconds?: number;
  /**
   * The tenant of this endpoint, for senders that sign none (one endpoint and secret per tenant,
   * so the secret is what proves the tenant). A body that signs another tenant is refused
   * (`wrong_tenant`). (Default: none; a body without a `tenant` string is refused, `missing_tenant`)
   */
  tenant?: string;
}

/** Request headers as fetch (`Headers`) or node:http (`IncomingHttpHeaders`) give them. */
export type HeaderBag = Headers | Record<string, string | string[] | undefined>;

const secretsSchema = z.object({ secret: webhookSecretsSchema });

function header(headers: HeaderBag, name: string): string | undefined {
  if (headers instanceof Headers) return headers.get(name) ?? undefined;
  const value = headers[name] ?? headers[name.toLowerCase()];
  return Array.isArray(value) ? value[0] : value;
}

/**
 * `secret` may be a list during a rotation: a signature made with any of them is accepted.
 * Secrets shorter than 16 bytes are refused (InvalidOptionsError), as httpSink refuses them.
 */
export function verifyWebhook(
  headers: HeaderBag,
  body: string | Buffer,
  secret: string | readonly string[],
  options: VerifyWebhookOptions = {},
): VerifiedWebhook {
  const { secret: verifiers } = parseOptions(secretsSchema, { secret }, 'webhook secret');
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
  const signedAt = new Date(seconds * 1_000);
  const offered = signature.split(' ').map((entry) => Buffer.from(entry));
  const matches = verifiers.some((verifier) => {
    const expected = Buffer.from(verifier.sign(id, signedAt, body));
    return offered.some((candidate) => candidate.length === expected.length && timingSafeEqual(candidate, expected));
  });
  if (!matches) throw new WebhookVerificationError('bad_signature', 'pg-once: the webhook signature does not match the body and secret.');
  let payload: unknown;
  try {
    payload = JSON.parse(body.toString());
  } catch (error) {
    throw new WebhookVerificationError('bad_signature', 'pg-once: the signed webhook body is not JSON.', { cause: error });
  }
  // A binary-mode CloudEvent's body is the event's payload: any `tenant` in it is application
  // data, which may hold another tenant's id, so it is not read as the tenant at all.
  const binaryCloudEvent = header(headers, 'ce-specversion') !== undefined;
  return { messageId: id, tenant: signedTenant(binaryCloudEvent ? undefined : payload, options.tenant), timestamp: signedAt, payload };
}

/**
 * The tenant of a signed envelope: httpSink's `{ ..., tenant }`, or its structured CloudEvent
 * `{ specversion, ..., tenantid }` (extension names cannot hold an underscore or capitals).
 */
function signedTenant(payload: unknown, expected: string | undefined): string {
  const envelope = payload as { tenant?: unknown; tenantid?: unknown; specversion?: unknown } | null | undefined;
  const signed = typeof envelope?.specversion === 'string' ? envelope.tenantid : envelope?.tenant;
  if (typeof signed === 'string' && signed !== '') {
    if (expected !== undefined && signed !== expected) {
      throw new WebhookVerificationError('wrong_tenant', "pg-once: the webhook is signed for another tenant than this endpoint's.");
    }
    return signed;
  }
  if (expected !== undefined) return expected;
  throw new WebhookVerificationError(
    'missing_tenant',
    payload === undefined
      ? 'pg-once: a binary-mode CloudEvent signs no tenant (ce-tenantid is an unsigned header); pass options.tenant when the secret belongs to one tenant, or have the sender use structured mode.'
      : 'pg-once: the signed webhook body names no tenant; pass options.tenant when the secret belongs to one tenant.',
  );
}
