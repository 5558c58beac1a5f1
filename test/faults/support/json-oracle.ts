/**
 * An independent judge of values for the fuzzer: what pg-once's contract says must be refused
 * (a JSON-unfaithful value: BigInt, function, symbol, Map/Set, cycle, a string or property name
 * holding U+0000 or an unpaired surrogate), and what is merely risky (deep, huge). Iterative, so a
 * value nested 100,000 deep does not overflow the judge itself.
 */
import { isDeepStrictEqual } from 'node:util';

export interface ValueVerdict {
  /** Why the contract requires a refusal, if it does. */
  unfaithful?: string;
  /** Deepest nesting seen. */
  depth: number;
  /** Approximate JSON size in characters (strings and keys only; enough to tell huge from small). */
  size: number;
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: NUL is one of the characters Postgres cannot store, which this finds.
const UNSTORABLE = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

export function judge(value: unknown): ValueVerdict {
  const verdict: ValueVerdict = { depth: 0, size: 0 };
  const stack: { value: unknown; depth: number; path: object[] }[] = [{ value, depth: 0, path: [] }];
  while (stack.length > 0) {
    const { value: current, depth, path } = stack.pop()!;
    verdict.depth = Math.max(verdict.depth, depth);
    switch (typeof current) {
      case 'bigint':
        verdict.unfaithful ??= 'bigint';
        continue;
      case 'function':
        verdict.unfaithful ??= 'function';
        continue;
      case 'symbol':
        verdict.unfaithful ??= 'symbol';
        continue;
      case 'string':
        verdict.size += current.length;
        if (UNSTORABLE.test(current)) verdict.unfaithful ??= 'string with U+0000 or an unpaired surrogate';
        continue;
      case 'object':
        break;
      default:
        continue;
    }
    if (current === null) continue;
    if (current instanceof Map || current instanceof Set || current instanceof WeakMap || current instanceof WeakSet) {
      verdict.unfaithful ??= current.constructor.name;
      continue;
    }
    if (current instanceof BigInt || current instanceof BigInt64Array || current instanceof BigUint64Array) {
      verdict.unfaithful ??= 'boxed or typed-array BigInt';
      continue;
    }
    // Boxed primitives serialise as their primitive (a String object's indexed characters would
    // split surrogate pairs); a boxed BigInt is unfaithful like a BigInt.
    if (current instanceof String) {
      stack.push({ value: current.valueOf(), depth, path });
      continue;
    }
    if (current instanceof Number || current instanceof Boolean) continue;
    if (path.includes(current)) {
      verdict.unfaithful ??= 'cycle';
      continue;
    }
    if (typeof (current as { toJSON?: unknown }).toJSON === 'function') continue; // Date and friends: JSON decides
    const next = [...path, current];
    if (path.length > 50) next.splice(0, next.length - 50); // cycles in fuzzed values are short
    if (Array.isArray(current)) {
      for (let i = 0; i < current.length; i += 1) stack.push({ value: current[i], depth: depth + 1, path: next });
      continue;
    }
    for (const name of Object.keys(current)) {
      verdict.size += name.length;
      if (UNSTORABLE.test(name)) verdict.unfaithful ??= 'property name with U+0000 or an unpaired surrogate';
      stack.push({ value: (current as Record<string, unknown>)[name], depth: depth + 1, path: next });
    }
  }
  return verdict;
}

/** The value JSON round-trips `value` to, or a marker when JSON.stringify itself throws. */
export const UNSTRINGIFIABLE = Symbol('unstringifiable');
export function jsonRoundTrip(value: unknown): unknown {
  try {
    const text = JSON.stringify(value);
    return text === undefined ? undefined : JSON.parse(text);
  } catch {
    return UNSTRINGIFIABLE;
  }
}

/**
 * Deep equality for the fuzzer: node's isDeepStrictEqual, which recurses; for values too deep for
 * it, the JSON texts (the values compared here come out of JSON.parse, so that is exact enough).
 * Undefined when neither can compare them.
 */
export function sameValue(a: unknown, b: unknown): boolean | undefined {
  try {
    return isDeepStrictEqual(a, b);
  } catch {
    try {
      return JSON.stringify(a) === JSON.stringify(b);
    } catch {
      return undefined;
    }
  }
}
