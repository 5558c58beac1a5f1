/**
 * Standard Webhooks secrets ('whsec_' + base64 of the key bytes), parsed in one place for every
 * signer (httpSink, so the relay's flags and config files too) and every verifier (verifyWebhook),
 * so they all refuse the same secrets with the same coded error.
 */
import { randomBytes } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import { z } from 'zod';

const SECRET_PREFIX = 'whsec_';
/**
 * Shortest key accepted, in bytes after base64 decoding. One captured delivery is enough to test
 * guesses of the key offline (HMAC-SHA256 of a known message), so a short key is a forgeable one;
 * 16 bytes is the Standard Webhooks minimum (Svix generates 24).
 */
export const MIN_WEBHOOK_SECRET_BYTES = 16;
/** Key length of secrets made by generateWebhookSecret, in bytes. */
const GENERATED_WEBHOOK_SECRET_BYTES = 32;

/** A new random secret: 'whsec_' followed by base64 of 32 random bytes. */
export function generateWebhookSecret(): string {
  return SECRET_PREFIX + randomBytes(GENERATED_WEBHOOK_SECRET_BYTES).toString('base64');
}

/**
 * One secret, or several during a rotation (the Standard Webhooks way: the sender signs with
 * each, the receiver accepts a signature made with any), parsed into signers. Messages never
 * quote a secret: they end up in logs, in last_error and on the terminal of whoever started the
 * relay. (Written as one transform rather than a zod union, whose error would hide the reason.)
 */
export const webhookSecretsSchema = z
  .custom<string | readonly string[]>(
    (value) => typeof value === 'string' || (Array.isArray(value) && value.length > 0 && value.every((secret) => typeof secret === 'string')),
    'expected a secret (a string) or a non-empty array of secrets',
  )
  .transform((value, context) => {
    const list: readonly string[] = typeof value === 'string' ? [value] : value;
    const signers: Webhook[] = [];
    list.forEach((secret, index) => {
      const parsed = parseSecret(secret);
      if (typeof parsed === 'string') context.addIssue({ code: 'custom', message: parsed, path: typeof value === 'string' ? [] : [index] });
      else signers.push(parsed);
    });
    return signers.length === list.length ? signers : z.NEVER;
  });

/** The signer for `secret`, or why it cannot be one. */
function parseSecret(secret: string): Webhook | string {
  let signer: Webhook;
  try {
    signer = new Webhook(secret);
  } catch {
    return "expected a Standard Webhooks secret: 'whsec_' followed by base64";
  }
  // The library decoded it strictly above, so Buffer's lenient decoder sees valid base64 here.
  const bytes = Buffer.from(secret.startsWith(SECRET_PREFIX) ? secret.slice(SECRET_PREFIX.length) : secret, 'base64').length;
  if (bytes < MIN_WEBHOOK_SECRET_BYTES) {
    return `a webhook secret must decode to at least ${MIN_WEBHOOK_SECRET_BYTES} bytes (got ${bytes}); generate one with \`npx pg-once webhook-secret\``;
  }
  return signer;
}
