/**
 * Keys and fingerprints: pure functions, so property tests with fast-check carry most of the
 * weight here, with examples pinning the formats. No database: `keys.fromModel` without `tx` only
 * calls the logger.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  canonicalJson,
  type DedupeAuditEvent,
  fingerprint,
  InvalidKeyError,
  InvalidRequestError,
  keys,
  MAX_KEY_LENGTH,
  modelKeyProblem,
  type OrchestratorKeyParts,
} from '../src/index.ts';
import { inboxKey } from '../src/inbox/receive-once.ts';
import { outsideInternalKey, reservedPrefixOf, runWithInternalKey } from '../src/internal/internal-key.ts';
import { langGraphKeys, mcpKeys } from '../src/integrations/internal/adapter-keys.ts';
import { assertValidKey, outsideReservedNamespaces } from '../src/keys.ts';

// A fixed seed, so a failure in CI reproduces locally; FC_SEED explores other corners.
fc.configureGlobal({ seed: Number(process.env.FC_SEED ?? 42), numRuns: 200 });

const CONTROL_CHARACTERS = /\p{Cc}/u;
const sha256Hex = (text: string) => createHash('sha256').update(text).digest('hex');

/** A small deterministic PRNG (mulberry32), so a shuffle is reproducible from its seed. */
function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/**
 * The same JSON value with every object's keys recursively re-inserted in a seeded random order.
 * Properties are defined, not assigned, so an own `__proto__` key (which fc.jsonValue generates)
 * stays a key instead of becoming the prototype.
 */
function shuffleKeys(value: unknown, seed: number): unknown {
  const random = prng(seed);
  const visit = (current: unknown): unknown => {
    if (Array.isArray(current)) return current.map(visit);
    if (current === null || typeof current !== 'object') return current;
    const names = Object.keys(current);
    for (let i = names.length - 1; i > 0; i -= 1) {
      const j = Math.floor(random() * (i + 1));
      [names[i], names[j]] = [names[j]!, names[i]!];
    }
    const out: Record<string, unknown> = {};
    for (const name of names) {
      Object.defineProperty(out, name, {
        value: visit((current as Record<string, unknown>)[name]),
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
    return out;
  };
  return visit(value);
}

/** JSON values whose strings range over printable Unicode, not only ASCII. */
const jsonValues = fc.oneof(fc.jsonValue(), fc.jsonValue({ stringUnit: 'grapheme' }));

/** Values JSON cannot represent faithfully, each of which a request must refuse. */
function nonJsonValues(): Array<[string, unknown]> {
  const cyclic: Record<string, unknown> = { a: 1 };
  cyclic.self = cyclic;
  const cyclicArray: unknown[] = [1];
  cyclicArray.push({ back: cyclicArray });
  return [
    ['bigint', 10n],
    ['cycle', cyclic],
    ['cycle through an array', cyclicArray],
    ['function', () => 1],
    ['symbol', Symbol('x')],
    ['map', new Map([[1, 2]])],
    ['set', new Set([1])],
    ['empty map', new Map()],
  ];
}

function thrown(fn: () => unknown): any {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error('expected a throw');
}

/** A printable part of at most `max` UTF-16 units (graphemes may span several). */
const part = (max: number) => fc.string({ unit: 'grapheme', minLength: 1, maxLength: max }).filter((s) => s.length <= max);

describe('canonicalJson and fingerprint', () => {
  it('gives a 32-byte Buffer: the sha256 of the canonical JSON', () => {
    const print = fingerprint({ b: 1, a: [true, null, 'x'] });
    expect(Buffer.isBuffer(print)).toBe(true);
    expect(print).toHaveLength(32);
    expect(canonicalJson({ b: 1, a: [true, null, 'x'] })).toBe('{"a":[true,null,"x"],"b":1}');
    expect(print.toString('hex')).toBe(sha256Hex('{"a":[true,null,"x"],"b":1}'));
  });

  it('writes numbers and strings in RFC 8785 normal form', () => {
    expect(canonicalJson({ z: 1e21, y: -0, x: 0.1 + 0.2, w: 'é\u2028"' })).toBe('{"w":"é\u2028\\"","x":0.30000000000000004,"y":0,"z":1e+21}');
    expect(canonicalJson(undefined)).toBe('null');
    expect(fingerprint(undefined).equals(fingerprint(null))).toBe(true);
  });

  it('is invariant under recursively reordering object keys (property)', () => {
    fc.assert(
      fc.property(jsonValues, fc.integer(), (value, seed) => {
        const shuffled = shuffleKeys(value, seed);
        expect(canonicalJson(shuffled)).toBe(canonicalJson(value));
        expect(fingerprint(shuffled).equals(fingerprint(value))).toBe(true);
      }),
    );
  });

  it('the key shuffle really reorders keys, so the property above tests something', () => {
    const value = { a: 1, b: { c: 2, d: 3, e: 4, f: 5 }, g: [{ h: 6, i: 7, j: 8 }], k: 9, l: 10 };
    const orders = new Set<string>();
    for (let seed = 0; seed < 20; seed += 1) orders.add(JSON.stringify(shuffleKeys(value, seed)));
    expect(orders.size).toBeGreaterThan(1);
    for (const order of orders) expect(fingerprint(JSON.parse(order)).equals(fingerprint(value))).toBe(true);
  });

  it('gives different fingerprints to different canonical texts (property)', () => {
    fc.assert(
      fc.property(jsonValues, jsonValues, (a, b) => {
        fc.pre(canonicalJson(a) !== canonicalJson(b));
        expect(fingerprint(a).equals(fingerprint(b))).toBe(false);
      }),
    );
    // Near misses that a sloppy canonical form could merge.
    const distinct = [1, '1', [1], { a: 1 }, { a: '1' }, { a: [1] }, [1, 2], [2, 1], null, {}, [], '', 0, false, 'null'];
    const prints = new Set(distinct.map((value) => fingerprint(value).toString('hex')));
    expect(prints.size).toBe(distinct.length);
  });

  it('fingerprints a value and its trip through JSON the same, Dates included (property)', () => {
    fc.assert(
      fc.property(fc.object({ withDate: true, withNullPrototype: true }), (value) => {
        const roundTripped: unknown = JSON.parse(JSON.stringify(value));
        expect(canonicalJson(roundTripped)).toBe(canonicalJson(value));
        expect(fingerprint(roundTripped).equals(fingerprint(value))).toBe(true);
      }),
    );
    const at = new Date('2026-01-02T03:04:05.678Z');
    const request = { at, list: [at, undefined, Number.NaN], skipped: undefined };
    expect(canonicalJson(request)).toBe('{"at":"2026-01-02T03:04:05.678Z","list":["2026-01-02T03:04:05.678Z",null,null]}');
    expect(fingerprint(request).equals(fingerprint(JSON.parse(JSON.stringify(request))))).toBe(true);
  });

  it('refuses BigInt, cycles, functions, symbols, Map and Set with InvalidRequestError', () => {
    for (const [label, bad] of nonJsonValues()) {
      for (const request of [bad, { nested: { deep: [1, bad] } }, [bad]]) {
        for (const run of [() => canonicalJson(request), () => fingerprint(request)]) {
          const error = thrown(run);
          expect(error, label).toBeInstanceOf(InvalidRequestError);
          expect(error).toMatchObject({ code: 'INVALID_REQUEST', retryable: false, httpStatus: 400 });
          expect(error.cause, label).toBeInstanceOf(Error);
        }
      }
    }
  });

  it('refuses a non-JSON value anywhere inside any JSON value (property)', () => {
    const bad = fc.constantFrom(...nonJsonValues().map(([, value]) => value));
    fc.assert(
      fc.property(jsonValues, bad, fc.boolean(), (value, poison, inObject) => {
        const request = inObject ? { value, poison: { inner: [poison] } } : [value, poison];
        expect(() => fingerprint(request)).toThrow(InvalidRequestError);
      }),
    );
  });

  it('accepts the same object twice when it is shared, not cyclic', () => {
    const shared = { id: 1 };
    expect(canonicalJson({ a: shared, b: [shared, shared] })).toBe('{"a":{"id":1},"b":[{"id":1},{"id":1}]}');
  });

  it('refuses strings Postgres jsonb cannot store (U+0000, unpaired surrogates)', () => {
    for (const text of ['a\u0000b', '\ud800', 'x\udc00y']) {
      expect(thrown(() => fingerprint({ text })).code).toBe('INVALID_REQUEST');
    }
    // A paired surrogate is a real character, and a literal backslash-u is just text.
    expect(canonicalJson({ emoji: '😀', text: '\\ud800' })).toBe('{"emoji":"😀","text":"\\\\ud800"}');
  });
});

/** The encoding keys.orchestrator applies to step, tool and version, so parts never run together. */
const enc = (part: string | number) => String(part).replaceAll('%', '%25').replaceAll(':', '%3A');

describe('keys.orchestrator', () => {
  const parts = fc.record(
    {
      runId: part(100),
      step: fc.oneof(part(32), fc.integer(), fc.maxSafeInteger()),
      tool: part(64),
      args: jsonValues,
      version: part(16),
    },
    { requiredKeys: ['runId', 'step', 'tool', 'args'] },
  );

  // biome-ignore lint/suspicious/noTemplateCurlyInString: the test's name shows the key's format, placeholders included.
  it('is `${runId}:${step}:${tool}:<16 hex of the args>` (+ `:v<version>`), and deterministic', () => {
    const key = keys.orchestrator({ runId: 'run_abc', step: 4, tool: 'charge_card', args: { amount: 100 } });
    expect(key).toBe(`run_abc:4:charge_card:${sha256Hex('{"amount":100}').slice(0, 16)}`);
    expect(keys.orchestrator({ runId: 'run_abc', step: '4', tool: 'charge_card', args: { amount: 100 } })).toBe(key);
    expect(keys.orchestrator({ runId: 'run_abc', step: 4, tool: 'charge_card', args: { amount: 100 }, version: '2' })).toBe(`${key}:v2`);
  });

  it('follows the format for any valid parts, and gives the same key every time (property)', () => {
    fc.assert(
      fc.property(parts, (p) => {
        const prefix = `${p.runId}:${enc(p.step)}:${enc(p.tool)}:`;
        const suffix = p.version === undefined ? '' : `:v${enc(p.version)}`;
        fc.pre(prefix.length + 16 + suffix.length <= MAX_KEY_LENGTH);
        const key = keys.orchestrator(p);
        expect(keys.orchestrator({ ...p })).toBe(key);
        expect(key.startsWith(prefix)).toBe(true);
        expect(key.endsWith(suffix)).toBe(true);
        const hash = key.slice(prefix.length, key.length - suffix.length);
        expect(hash).toMatch(/^[0-9a-f]{16}$/);
        expect(hash).toBe(sha256Hex(canonicalJson(p.args)).slice(0, 16));
      }),
    );
  });

  it('returns only valid keys: at most 255 characters, no control characters (property)', () => {
    fc.assert(
      fc.property(parts, (p) => {
        const length = `${p.runId}:${enc(p.step)}:${enc(p.tool)}:`.length + 16 + (p.version === undefined ? 0 : 2 + enc(p.version).length);
        let key: string;
        try {
          key = keys.orchestrator(p);
        } catch (error) {
          // Parts within their limits add up to at most 233 characters; only ':' and '%' (encoded
          // as three characters) can push a key past 255: then, and only then, it is refused.
          expect(error).toBeInstanceOf(InvalidKeyError);
          expect(length).toBeGreaterThan(MAX_KEY_LENGTH);
          return;
        }
        expect(key.length).toBe(length);
        expect(key.length).toBeLessThanOrEqual(MAX_KEY_LENGTH);
        expect(CONTROL_CHARACTERS.test(key)).toBe(false);
        expect(() => assertValidKey(key)).not.toThrow();
      }),
    );
    const longest = keys.orchestrator({ runId: 'r'.repeat(100), step: 's'.repeat(32), tool: 't'.repeat(64), args: {}, version: 'v'.repeat(16) });
    expect(longest).toHaveLength(233);
  });

  it('does not depend on the order of argument keys (property)', () => {
    fc.assert(
      fc.property(parts, fc.integer(), (p, seed) => {
        fc.pre(`${p.runId}:${enc(p.step)}:${enc(p.tool)}:`.length + 18 + 3 * (p.version?.length ?? 0) <= MAX_KEY_LENGTH);
        expect(keys.orchestrator({ ...p, args: shuffleKeys(p.args, seed) })).toBe(keys.orchestrator(p));
      }),
    );
    expect(keys.orchestrator({ runId: 'r', step: 1, tool: 't', args: { b: { y: 1, x: 2 }, a: 1 } })).toBe(
      keys.orchestrator({ runId: 'r', step: 1, tool: 't', args: { a: 1, b: { x: 2, y: 1 } } }),
    );
  });

  it('gives different keys to different arguments (property)', () => {
    fc.assert(
      fc.property(jsonValues, jsonValues, (a, b) => {
        fc.pre(canonicalJson(a) !== canonicalJson(b));
        const base = { runId: 'run_1', step: 3, tool: 'send_email' };
        expect(keys.orchestrator({ ...base, args: a })).not.toBe(keys.orchestrator({ ...base, args: b }));
      }),
    );
  });

  it('gives different keys to different steps, tools and versions', () => {
    const base = { runId: 'run_1', step: 3, tool: 'send_email', args: { to: 'a@example.com' } };
    const variants = [
      base,
      { ...base, runId: 'run_2' },
      { ...base, step: 4 },
      { ...base, tool: 'send_sms' },
      { ...base, version: '1' },
      { ...base, version: '2' },
    ];
    expect(new Set(variants.map((v) => keys.orchestrator(v))).size).toBe(variants.length);
  });

  it('refuses empty, too long or control-character parts with InvalidKeyError', () => {
    const good: OrchestratorKeyParts = { runId: 'run_1', step: 1, tool: 'tool', args: {} };
    const bad: Array<Partial<OrchestratorKeyParts>> = [
      { runId: '' },
      { runId: 'r'.repeat(101) },
      { runId: 'lone\ud800' },
      { tool: 'lone\udc00' },
      { runId: 'line\nbreak' },
      { runId: 'nul\u0000' },
      { runId: 'c1\u0085' },
      { step: '' },
      { step: 's'.repeat(33) },
      { step: 'tab\t' },
      { step: 1.5 },
      { step: Number.NaN },
      { tool: '' },
      { tool: 't'.repeat(65) },
      { tool: 'del\u007f' },
      { version: '' },
      { version: 'v'.repeat(17) },
      { version: 'v\r' },
      { runId: null as never },
      { tool: {} as never },
    ];
    for (const override of bad) {
      const error = thrown(() => keys.orchestrator({ ...good, ...override }));
      expect(error, JSON.stringify(override)).toBeInstanceOf(InvalidKeyError);
      expect(error).toMatchObject({ code: 'INVALID_KEY', httpStatus: 400, retryable: false });
    }
    // The limits themselves are fine.
    expect(keys.orchestrator({ ...good, runId: 'r'.repeat(100), step: 's'.repeat(32), tool: 't'.repeat(64) })).toHaveLength(215);
    expect(keys.orchestrator({ ...good, version: 'v'.repeat(16) }).endsWith(`:v${'v'.repeat(16)}`)).toBe(true);
  });

  it('keeps parts apart when they contain ":" (namespaced tools, composite steps)', () => {
    const args = { amount: 1 };
    const a = keys.orchestrator({ runId: 'a:1', step: 2, tool: 't', args });
    const b = keys.orchestrator({ runId: 'a', step: '1:2', tool: 't', args });
    expect(a).not.toBe(b);
    expect(keys.orchestrator({ runId: 'r', step: 1, tool: 'github:create_issue', args })).toMatch(/^r:1:github%3Acreate_issue:[0-9a-f]{16}$/);
    expect(keys.orchestrator({ runId: 'r', step: '1:2', tool: 't', args })).not.toBe(keys.orchestrator({ runId: 'r:1', step: 2, tool: 't', args }));
    expect(keys.orchestrator({ runId: 'r', step: '%3A', tool: 't', args })).not.toBe(keys.orchestrator({ runId: 'r', step: ':', tool: 't', args }));
  });

  it('refuses arguments that are not JSON with InvalidRequestError', () => {
    for (const [label, args] of nonJsonValues()) {
      const error = thrown(() => keys.orchestrator({ runId: 'r', step: 1, tool: 't', args }));
      expect(error, label).toBeInstanceOf(InvalidRequestError);
      expect(error.code).toBe('INVALID_REQUEST');
    }
  });
});

describe('keys.content', () => {
  // biome-ignore lint/suspicious/noTemplateCurlyInString: the test's name shows the key's format, placeholders included.
  it('is `${tool}:<32 hex of the canonical args>`', () => {
    expect(keys.content('send_email', { to: 'a@example.com', body: 'hi' })).toBe(`send_email:${sha256Hex('{"body":"hi","to":"a@example.com"}').slice(0, 32)}`);
  });

  it('is deterministic and independent of key order (property)', () => {
    fc.assert(
      fc.property(part(64), jsonValues, fc.integer(), (tool, args, seed) => {
        const key = keys.content(tool, args);
        expect(key).toBe(`${enc(tool)}:${sha256Hex(canonicalJson(args)).slice(0, 32)}`);
        expect(key.slice(enc(tool).length)).toMatch(/^:[0-9a-f]{32}$/);
        expect(keys.content(tool, args)).toBe(key);
        expect(keys.content(tool, shuffleKeys(args, seed))).toBe(key);
        expect(() => assertValidKey(key)).not.toThrow();
      }),
    );
  });

  it('gives different keys to different arguments or tools', () => {
    fc.assert(
      fc.property(jsonValues, jsonValues, (a, b) => {
        fc.pre(canonicalJson(a) !== canonicalJson(b));
        expect(keys.content('t', a)).not.toBe(keys.content('t', b));
      }),
    );
    expect(keys.content('a', { x: 1 })).not.toBe(keys.content('b', { x: 1 }));
  });

  it('scopes content keys to a run when asked', () => {
    const unscoped = keys.content('charge_card', { amount: 1 });
    expect(keys.content('charge_card', { amount: 1 }, 'run_1')).toBe(`run_1:${unscoped}`);
    expect(keys.content('charge_card', { amount: 1 }, 'run_1')).not.toBe(keys.content('charge_card', { amount: 1 }, 'run_2'));
    expect(keys.content('charge_card', { amount: 1 }, 'a:b')).toBe(`a%3Ab:${unscoped}`);
    expect(thrown(() => keys.content('t', {}, '')).code).toBe('INVALID_KEY');
  });

  it('refuses a bad tool name or non-JSON arguments', () => {
    for (const tool of ['', 't'.repeat(65), 'a\nb', 5.5 as never]) {
      expect(thrown(() => keys.content(tool, {})).code).toBe('INVALID_KEY');
    }
    expect(thrown(() => keys.content('t', { n: 1n })).code).toBe('INVALID_REQUEST');
  });
});

describe('keys.fromModel and modelKeyProblem', () => {
  const fallback = 'run_1:2:send_email:0123456789abcdef';

  function recorder() {
    const events: DedupeAuditEvent[] = [];
    return { events, logger: (event: DedupeAuditEvent) => void events.push(event) };
  }

  it('accepts real random ids unchanged: 1,000 UUIDs and 1,000 random 32-character base64url strings', async () => {
    // Real randomness, not fast-check: its generators lean towards small and repetitive values on
    // purpose ('00000000-0000-...'), which are exactly the low-entropy keys that must be refused.
    const { events, logger } = recorder();
    for (let i = 0; i < 1_000; i += 1) {
      for (const candidate of [randomUUID(), randomBytes(24).toString('base64url')]) {
        expect(modelKeyProblem(candidate), candidate).toBeUndefined();
        expect(await keys.fromModel(candidate, { fallback, logger })).toBe(candidate);
      }
    }
    expect(events).toEqual([]);
  });

  it('rejects low-entropy and malformed candidates, returning the fallback and logging why', async () => {
    const candidates: unknown[] = [
      '',
      'abc',
      'aaaaaaaaaaaaaaaaaaaa',
      'abc123abc123abc1',
      'idempotency-key-1',
      '0123456789abcde', // 15 characters
      'has some spaces in it, 1234567890',
      'slash/separated/key/0123456789',
      'ünïcødé-ключ-0123456789-abcdefgh',
      `${randomUUID()}\n`,
      randomBytes(240).toString('base64url'), // 320 characters
      42,
      null,
      undefined,
      { key: randomUUID() },
    ];
    for (const candidate of candidates) {
      const { events, logger } = recorder();
      const problem = modelKeyProblem(candidate);
      expect(typeof problem, String(candidate)).toBe('string');
      expect(await keys.fromModel(candidate, { fallback, logger, tool: 'send_email' })).toBe(fallback);
      expect(events).toEqual([
        {
          tenantId: '',
          key: fallback,
          tool: 'send_email',
          kind: 'model_key_rejected',
          at: expect.any(Date),
          detail: expect.objectContaining({ reason: problem, fallback }),
        },
      ]);
    }
  });

  it('names the reason for each kind of rejection', () => {
    expect(modelKeyProblem(undefined)).toBe('missing');
    expect(modelKeyProblem('')).toBe('missing');
    expect(modelKeyProblem('abc')).toMatch(/too short/);
    expect(modelKeyProblem('k'.repeat(256))).toMatch(/too long/);
    expect(modelKeyProblem('with space 0123456789')).toMatch(/characters outside/);
    expect(modelKeyProblem('aaaaaaaaaaaaaaaaaaaa')).toMatch(/distinct/);
    expect(modelKeyProblem('idempotency-key-1')).toMatch(/entropy/);
  });

  it('returns the candidate exactly when modelKeyProblem finds none, and accepted keys are valid (property)', async () => {
    const candidates = fc.oneof(
      fc.string(),
      fc.string({ unit: 'binary', maxLength: 300 }),
      fc.stringMatching(/^[A-Za-z0-9._:-]{12,48}$/),
      fc.uuid().map((uuid) => uuid.replaceAll('-', '')),
      fc.anything(),
    );
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(candidates, async (candidate) => {
        const { events, logger } = recorder();
        const problem = modelKeyProblem(candidate);
        const key = await keys.fromModel(candidate, { fallback, logger });
        if (problem === undefined) {
          accepted += 1;
          expect(key).toBe(candidate);
          expect(events).toEqual([]);
          expect(() => assertValidKey(key)).not.toThrow();
          expect(key.length).toBeGreaterThanOrEqual(16);
        } else {
          expect(typeof problem).toBe('string');
          expect(key).toBe(fallback);
          expect(events).toHaveLength(1);
          expect(events[0]).toMatchObject({ kind: 'model_key_rejected', detail: { reason: problem } });
        }
      }),
      { numRuns: 500 },
    );
    // Both branches were exercised.
    expect(accepted).toBeGreaterThan(0);
  });

  it('throws InvalidKeyError for an invalid fallback, even when the candidate is fine', async () => {
    for (const bad of ['', 'k'.repeat(256), 'line\nbreak', 7 as never]) {
      for (const candidate of ['nope', randomUUID()]) {
        const error = await keys.fromModel(candidate, { fallback: bad }).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(InvalidKeyError);
        expect((error as InvalidKeyError).code).toBe('INVALID_KEY');
      }
    }
  });

  it('is not broken by a throwing logger', async () => {
    const logger = () => {
      throw new Error('logger down');
    };
    expect(await keys.fromModel('abc', { fallback, logger })).toBe(fallback);
  });
});

describe('assertValidKey', () => {
  it('accepts 1 to 255 characters without control characters', () => {
    for (const key of ['k', 'k'.repeat(MAX_KEY_LENGTH), 'ключ', '😀', 'spaces and/slashes: ok']) {
      expect(() => assertValidKey(key)).not.toThrow();
    }
    expect(MAX_KEY_LENGTH).toBe(255);
  });

  it('refuses empty, 256+ characters, control characters and non-strings', () => {
    for (const key of ['', 'k'.repeat(256), 'k'.repeat(10_000), 'a\tb', 'a\nb', '\u0000', 'del\u007f', 'c1\u009f', 42, null, undefined]) {
      const error = thrown(() => assertValidKey(key));
      expect(error, JSON.stringify(key)).toBeInstanceOf(InvalidKeyError);
      expect(error.code).toBe('INVALID_KEY');
    }
  });

  it('counts UTF-16 units: 128 emoji are 256 units and too long', () => {
    expect(() => assertValidKey('😀'.repeat(127))).not.toThrow();
    expect(() => assertValidKey('😀'.repeat(128))).toThrow(InvalidKeyError);
  });

  it('agrees with a direct statement of the rule (property)', () => {
    const reservedLooking = fc
      .tuple(fc.constantFrom('inbox:', 'mcp:', 'lg:', 'once:', '%inbox:', 'inbox', 'Inbox:'), fc.string({ maxLength: 40 }))
      .map(([a, b]) => a + b);
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'binary-ascii', maxLength: 300 }), fc.string({ maxLength: 300 }), reservedLooking), (key) => {
        const reserved = ['inbox:', 'mcp:', 'lg:', 'once:'].some((prefix) => key.startsWith(prefix));
        const valid = key.length >= 1 && key.length <= 255 && !CONTROL_CHARACTERS.test(key) && !reserved;
        if (valid) expect(() => assertValidKey(key)).not.toThrow();
        else expect(() => assertValidKey(key)).toThrow(InvalidKeyError);
      }),
    );
  });
});

describe('key namespaces: no user or model key is ever an inbox, MCP or LangGraph key', () => {
  const text = (maxLength: number) => fc.string({ minLength: 1, maxLength }).filter((value) => !CONTROL_CHARACTERS.test(value) && value.isWellFormed());
  /** Parts that try hard to look like an internal key: reserved prefixes, '%'s, colons. */
  const tricky = fc.oneof(
    text(40),
    fc
      .tuple(fc.constantFrom('inbox', 'mcp', 'lg', 'once', '%inbox', '%%mcp', 'inbox:', 'lg:', '%'), fc.constantFrom('', ':', ':x', ':content:a'))
      .map(([a, b]) => a + b),
  );
  /** Every form of key pg-once writes itself, with arbitrary parts. */
  const internalKeys = fc.oneof(
    text(249).map((messageId) => inboxKey(messageId)),
    text(200).map((clientKey) => mcpKeys.client(clientKey)),
    fc.tuple(text(64), jsonValues).map(([tool, args]) => mcpKeys.content(tool, args)),
    fc.tuple(text(80), text(80)).map(([thread, id]) => langGraphKeys.toolCall(thread, id)),
    fc.tuple(text(80), text(64), jsonValues).map(([thread, tool, input]) => langGraphKeys.content(thread, tool, input)),
    fc.tuple(text(80), text(300)).map(([thread, namespace]) => langGraphKeys.task(thread, namespace)),
  );
  /** Keys a user or model can produce: keys.*, anything written by hand, or an internal key copied verbatim. */
  const userKeys = fc.oneof(
    fc.record({ runId: tricky, step: tricky, tool: tricky, args: jsonValues }).map((parts) => () => keys.orchestrator(parts)),
    fc.tuple(tricky, jsonValues, fc.option(tricky, { nil: undefined })).map(
      ([tool, args, scope]) =>
        () =>
          keys.content(tool, args, scope),
    ),
    fc.oneof(fc.string({ maxLength: 260 }), tricky, internalKeys).map((key) => () => key),
  );
  const acceptedAsUserKey = (key: string) => {
    try {
      assertValidKey(key);
      return true;
    } catch (error) {
      expect(error).toBeInstanceOf(InvalidKeyError);
      return false;
    }
  };

  it('every internal key is in a reserved namespace, refused as a user key, and accepted only while pg-once runs it (property)', () => {
    fc.assert(
      fc.property(internalKeys, (key) => {
        expect(reservedPrefixOf(key)).toBeDefined();
        expect(acceptedAsUserKey(key)).toBe(false);
        expect(modelKeyProblem(key)).toBeDefined();
        const form = key.length <= MAX_KEY_LENGTH;
        if (form) expect(runWithInternalKey(key, () => acceptedAsUserKey(key))).toBe(true);
        // Another internal key than the one running is still refused, and the handler's own code
        // (outsideInternalKey) is back to the user rules.
        expect(runWithInternalKey(key, () => acceptedAsUserKey(`${key}x`))).toBe(false);
        expect(
          runWithInternalKey(
            key,
            outsideInternalKey(() => acceptedAsUserKey(key)),
          ),
        ).toBe(false);
      }),
    );
  });

  it('no accepted user or model key equals any internal key (property)', async () => {
    await fc.assert(
      fc.asyncProperty(userKeys, internalKeys, async (make, internal) => {
        let key: string;
        try {
          key = make();
        } catch (error) {
          expect(error).toBeInstanceOf(InvalidKeyError); // a part too long: refused, never reserved
          return;
        }
        if (acceptedAsUserKey(key)) {
          expect(key).not.toBe(internal);
          expect(reservedPrefixOf(key)).toBeUndefined();
        }
        const fromModel = await keys.fromModel(key, { fallback: 'fallback-key', logger: () => {} });
        expect(fromModel === 'fallback-key' || reservedPrefixOf(fromModel) === undefined).toBe(true);
        expect(await keys.fromModel(internal, { fallback: 'fallback-key', logger: () => {} })).toBe('fallback-key');
      }),
    );
  });

  it('keys.orchestrator and keys.content never produce a reserved key, and stay one-to-one (property)', () => {
    fc.assert(
      fc.property(tricky, tricky, tricky, jsonValues, (a, b, tool, args) => {
        const keysOf = (runId: string) => {
          try {
            return [keys.orchestrator({ runId, step: 1, tool, args }), keys.content(tool, args, runId), keys.content(runId, args)];
          } catch {
            return undefined;
          }
        };
        const [ka, kb] = [keysOf(a), keysOf(b)];
        for (const key of [...(ka ?? []), ...(kb ?? [])]) expect(acceptedAsUserKey(key)).toBe(true);
        if (ka && kb && a !== b) for (const [i, key] of ka.entries()) expect(key).not.toBe(kb[i]);
      }),
    );
  });

  it('moves keys out of the reserved namespaces one-to-one, leaving every other key as it was (property)', () => {
    const keyish = fc.oneof(
      fc.string({ maxLength: 20 }),
      fc
        .tuple(fc.constantFrom('', '%', '%%'), fc.constantFrom('inbox:', 'mcp:', 'lg:', 'once:', 'lg', 'x:'), fc.string({ maxLength: 5 }))
        .map((p) => p.join('')),
    );
    fc.assert(
      fc.property(keyish, keyish, (a, b) => {
        const [ea, eb] = [outsideReservedNamespaces(a), outsideReservedNamespaces(b)];
        expect(reservedPrefixOf(ea)).toBeUndefined();
        if (a !== b) expect(ea).not.toBe(eb);
        if (reservedPrefixOf(a.replace(/^%+/u, '')) === undefined) expect(ea).toBe(a);
      }),
    );
  });

  it("escapes only keys that would land in a reserved namespace; 0.1's keys keep their text", () => {
    const hash = sha256Hex(canonicalJson({ a: 1 })).slice(0, 32);
    expect(keys.content('inbox', { a: 1 })).toBe(`%inbox:${hash}`);
    expect(keys.content('send_email', { a: 1 }, 'mcp')).toBe(`%mcp:send_email:${hash}`);
    expect(keys.content('send_email', { a: 1 })).toBe(`send_email:${hash}`);
    expect(keys.content('send_email', { a: 1 }, 'run_abc')).toBe(`run_abc:send_email:${hash}`);
    expect(keys.orchestrator({ runId: 'lg', step: 4, tool: 'charge_card', args: { a: 1 } })).toMatch(/^%lg:4:charge_card:[0-9a-f]{16}$/);
    expect(keys.orchestrator({ runId: 'run_abc', step: 4, tool: 'charge_card', args: { a: 1 } })).toMatch(/^run_abc:4:charge_card:[0-9a-f]{16}$/);
    expect(inboxKey('msg_1')).toBe('inbox:msg_1');
    expect(mcpKeys.client('k-1')).toBe('mcp:k-1');
    expect(mcpKeys.content('quote', { a: 1 })).toBe(`mcp:content:quote:${hash}`);
    expect(langGraphKeys.toolCall('t1', 'call:1')).toBe('lg:t1:call%3A1');
    expect(langGraphKeys.content('t1', 'charge', { a: 1 })).toBe(`lg:t1:charge:${hash}`);
  });

  it('refuses each reserved prefix with INVALID_KEY, naming it', () => {
    for (const key of ['inbox:msg_1', 'mcp:k', 'lg:t1:call_1', 'once:future']) {
      const error = thrown(() => assertValidKey(key));
      expect(error, key).toBeInstanceOf(InvalidKeyError);
      expect(error.code).toBe('INVALID_KEY');
      expect(error.message).toContain(key.slice(0, key.indexOf(':') + 1));
    }
    for (const key of ['%inbox:msg_1', 'Inbox:x', 'inbox', 'mcp', 'xlg:1']) expect(() => assertValidKey(key), key).not.toThrow();
  });

  it('keys.fromModel refuses a random-looking key in a reserved namespace, with the reason', async () => {
    const events: DedupeAuditEvent[] = [];
    const candidate = `inbox:${randomUUID()}`;
    expect(await keys.fromModel(candidate, { fallback: 'run_1:3:charge', logger: (event) => events.push(event) })).toBe('run_1:3:charge');
    expect(events[0]?.detail).toMatchObject({ reason: expect.stringContaining('reserved') });
    expect(await keys.fromModel(`model:${randomUUID()}`, { fallback: 'run_1:3:charge' })).not.toBe('run_1:3:charge');
  });
});
