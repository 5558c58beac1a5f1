/**
 * The framework-independent parts of the HTTP adapters on their own: reading the key header (bare
 * or the IETF draft's quoted string), problem+json answers, and options refused at once with
 * every problem listed, by each adapter alike.
 */
import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { IdempotencyInProgressError, IdempotencyKeyReusedError, InvalidKeyError, InvalidOptionsError, RateLimitedError } from '../../../src/index.ts';
import { parseIdempotencyKey } from '../../../src/http/parse-idempotency-key.ts';
import { problemAnswer } from '../../../src/http/problem-answer.ts';
import { idempotency as expressIdempotency } from '../../../src/integrations/express.ts';
import { fastifyIdempotency } from '../../../src/integrations/fastify.ts';
import { idempotency as honoIdempotency } from '../../../src/integrations/hono.ts';
import { errorOf } from '../../support/error-of.ts';

describe('parseIdempotencyKey', () => {
  it('reads a bare key and a quoted one as the same key', () => {
    expect(parseIdempotencyKey('8e03978e-40d5', 'Idempotency-Key')).toBe('8e03978e-40d5');
    expect(parseIdempotencyKey('"8e03978e-40d5"', 'Idempotency-Key')).toBe('8e03978e-40d5');
    expect(parseIdempotencyKey('"a \\"b\\" \\\\c"', 'Idempotency-Key')).toBe('a "b" \\c');
    expect(parseIdempotencyKey(undefined, 'Idempotency-Key')).toBeUndefined();
  });

  it.each([[''], ['""'], ['"open'], ['"a"b"'], ['x'.repeat(161)], ['clé']])('refuses %j with INVALID_KEY', (value) => {
    expect(() => parseIdempotencyKey(value, 'Idempotency-Key')).toThrow(InvalidKeyError);
  });
});

describe('problemAnswer', () => {
  const type = (code: string) => `urn:test:${code}`;
  const body = (answer: { body: Uint8Array }) => JSON.parse(Buffer.from(answer.body).toString());

  it('answers 409 with Retry-After in whole seconds, rounded up, and the code', () => {
    const answer = problemAnswer(new IdempotencyInProgressError('k', 1_200), type);
    expect(answer.status).toBe(409);
    expect(answer.headers).toEqual({ 'content-type': 'application/problem+json', 'retry-after': '2' });
    expect(body(answer)).toMatchObject({ type: 'urn:test:IDEMPOTENCY_IN_PROGRESS', title: 'Conflict', status: 409, code: 'IDEMPOTENCY_IN_PROGRESS', retryable: true, retryAfterMs: 1_200 });
  });

  it('answers 429 with Retry-After and 422 without', () => {
    expect(problemAnswer(new RateLimitedError('k', 10), type).headers['retry-after']).toBe('1');
    const reused = problemAnswer(new IdempotencyKeyReusedError('k'), type);
    expect(reused.status).toBe(422);
    expect(reused.headers['retry-after']).toBeUndefined();
    expect(body(reused)).toMatchObject({ title: 'Unprocessable Content', code: 'IDEMPOTENCY_KEY_REUSED', retryable: false });
  });
});

describe('options', () => {
  const bad = { db: {}, tenant: 'acme', header: 'Idempotency Key', waitMs: -1, unknown: true };

  it.each([
    ['express', () => expressIdempotency(bad as never)],
    ['hono', () => honoIdempotency(bad as never)],
    ['fastify', () => Fastify().register(fastifyIdempotency, bad as never).ready()],
  ])('%s refuses bad options with every problem listed', async (_name, make) => {
    const error = await errorOf((async () => make())());
    expect(error).toBeInstanceOf(InvalidOptionsError);
    const paths = (error as InvalidOptionsError).issues.map((issue) => issue.path.join('.'));
    expect(paths).toEqual(expect.arrayContaining(['db', 'tenant', 'header', 'waitMs', 'unknown']));
  });
});
