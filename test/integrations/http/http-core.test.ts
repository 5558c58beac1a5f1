/**
 * The framework-independent parts of the HTTP adapters on their own: reading the key header (bare
 * or the IETF draft's quoted string), problem+json answers, and options refused at once with
 * every problem listed, by each adapter alike.
 */
import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import {
  IdempotencyInProgressError,
  IdempotencyKeyReusedError,
  InvalidKeyError,
  InvalidOptionsError,
  InvalidRequestError,
  RateLimitedError,
} from '../../../src/index.ts';
import { canonicalText } from '../../../src/http/http-fingerprint.ts';
import { MAX_CLIENT_KEY_LENGTH, parseIdempotencyKey } from '../../../src/http/parse-idempotency-key.ts';
import { httpKeys } from '../../../src/integrations/internal/adapter-keys.ts';
import { canonicalJson } from '../../../src/keys.ts';
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
    expect(body(answer)).toMatchObject({
      type: 'urn:test:IDEMPOTENCY_IN_PROGRESS',
      title: 'Conflict',
      status: 409,
      code: 'IDEMPOTENCY_IN_PROGRESS',
      retryable: true,
      retryAfterMs: 1_200,
    });
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
    [
      'fastify',
      () =>
        Fastify()
          .register(fastifyIdempotency, bad as never)
          .ready(),
    ],
  ])('%s refuses bad options with every problem listed', async (_name, make) => {
    const error = await errorOf((async () => make())());
    expect(error).toBeInstanceOf(InvalidOptionsError);
    const paths = (error as InvalidOptionsError).issues.map((issue) => issue.path.join('.'));
    expect(paths).toEqual(expect.arrayContaining(['db', 'tenant', 'header', 'waitMs', 'unknown']));
  });
});

describe('canonicalText (the fingerprinted text of a request)', () => {
  /** A JSON value as a parser makes it, from a seeded generator: the same values on every run. */
  function randomJson(seed: number): unknown {
    let state = seed;
    const next = () => {
      state = (state * 1_103_515_245 + 12_345) % 2_147_483_648;
      return state / 2_147_483_648;
    };
    const strings = ['', 'a', 'Zürich', '🚀', 'é\u0301', '"quoted"\n\t\\', '\u001f', '\u2028', 'ö', 'Ω', 'z', 'A', '10', '2', '__proto__', 'constructor'];
    const numbers = [0, -0, 1, -1, 0.1, 1e21, 1e-7, 123456789.123, -5e-324, 2 ** 53, Number.MAX_VALUE];
    const value = (depth: number): unknown => {
      const pick = Math.floor(next() * (depth > 3 ? 4 : 6));
      if (pick === 0) return strings[Math.floor(next() * strings.length)];
      if (pick === 1) return numbers[Math.floor(next() * numbers.length)];
      if (pick === 2) return next() < 0.5;
      if (pick === 3) return null;
      if (pick === 4) return Array.from({ length: Math.floor(next() * 4) }, () => value(depth + 1));
      return Object.fromEntries(Array.from({ length: Math.floor(next() * 5) }, () => [strings[Math.floor(next() * strings.length)]!, value(depth + 1)]));
    };
    // Through JSON text and back, as a body parser hands it over (own "__proto__" keys included).
    return JSON.parse(JSON.stringify(value(0)));
  }

  it("is canonicalJson's text for values a JSON parser makes", () => {
    for (let seed = 1; seed <= 500; seed += 1) {
      const body = randomJson(seed);
      expect(canonicalText({ method: 'POST', target: '/orders?x=1', headers: { accept: null }, body })).toBe(
        canonicalJson({ method: 'POST', target: '/orders?x=1', headers: { accept: null }, body }),
      );
    }
    expect(canonicalText(JSON.parse('{"__proto__":{"b":1},"a":[1,{"d":2,"c":3}]}'))).toBe('{"__proto__":{"b":1},"a":[1,{"c":3,"d":2}]}');
  });

  it("is canonicalJson's text, and refusal, for values no parser makes", () => {
    class Money {
      readonly cents: number;
      constructor(cents: number) {
        this.cents = cents;
      }
    }
    const values = [
      { when: new Date(0), skipped: undefined, nested: [undefined, 1] },
      new Money(5),
      { toJSON: () => ({ b: 2, a: 1 }) },
      Object.assign(Object.create({ inherited: 1 }), { own: 2 }),
      [Number.NaN, Number.POSITIVE_INFINITY],
    ];
    for (const value of values) expect(canonicalText(value)).toBe(canonicalJson(value));
    expect(() => canonicalText({ text: 'a\u0000b' })).toThrow(InvalidRequestError);
    expect(() => canonicalText({ run: () => 1 })).toThrow(InvalidRequestError);
    expect(() => canonicalText(Object.fromEntries([['k\ud800', 1]]))).toThrow(InvalidRequestError);
  });
});

describe('httpKeys.client (the stored key of a client key)', () => {
  it('gives distinct stored keys to distinct (principal, key) pairs', () => {
    const long = 'p'.repeat(100);
    const hashed = httpKeys.client(long, 'k').split(':')[2]!;
    const pairs: [string | undefined, string][] = [
      [undefined, 'a:b'],
      ['a', 'b'],
      ['a:b', 'c'],
      ['a', 'b:c'],
      ['%3A', 'k'],
      [':', 'k'],
      ['%', 'k'],
      ['%25', 'k'],
      [long, 'k'],
      [hashed, 'k'], // a principal that is another's hash, literally
      [hashed.slice(2), 'k'],
      ['x'.repeat(64), 'k'],
    ];
    const stored = pairs.map(([principal, key]) => httpKeys.client(principal, key));
    expect(new Set(stored).size).toBe(pairs.length);
    // The longest client key with the longest principal part, plain or hashed, fits a stored key.
    for (const principal of ['x'.repeat(64), long]) expect(httpKeys.client(principal, 'k'.repeat(MAX_CLIENT_KEY_LENGTH)).length).toBeLessThanOrEqual(255);
  });

  it("scopes by tenant only without a principal, and '' is no principal", () => {
    expect(httpKeys.client(undefined, 'k')).toBe('once:http::k');
    expect(httpKeys.client('', 'k')).toBe('once:http::k');
  });
});
