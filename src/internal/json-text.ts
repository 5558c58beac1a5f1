/**
 * Serialises a handler result or event payload to the JSON text that is stored, refusing values
 * JSON would silently mangle. JSON.stringify drops functions and symbols, turns a Map into {},
 * throws on BigInt and cycles; a value that comes back different on replay than it went in would
 * break the promise that every call returns the same thing, so those are errors here, before
 * anything is written.
 *
 * Also refused: strings holding U+0000 or an unpaired surrogate. They are valid JavaScript and
 * JSON.stringify escapes them (\u0000, \ud800), but Postgres jsonb rejects both, and the failed
 * INSERT would abort the caller's transaction with a driver error instead of a coded one.
 */
export class JsonTextError extends Error {
  /** The property name where the bad value sits ('(root)' for the value itself). */
  readonly path: string;

  constructor(message: string, path: string) {
    super(message);
    this.path = path;
  }
}

/** `\u0000` or a `\ud800`-`\udfff` escape, not itself escaped (preceded by an even run of `\`). */
const UNSTORABLE_ESCAPE = /(?<!\\)(?:\\\\)*\\u(?:0000|d[89a-f][0-9a-f]{2})/i;

/**
 * Deepest nesting accepted. JSON.stringify (and canonicalize, for fingerprints) recurse, and
 * overflow the stack at about 2,300 levels with an uncoded RangeError; no tool result or event
 * payload needs a thousand.
 */
export const MAX_JSON_DEPTH = 1_000;

/** Returns the JSON text of `value`, or undefined for `undefined` itself; throws JsonTextError. */
export function toJsonText(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  const seen: object[] = [];
  const text = JSON.stringify(value, function replacer(this: unknown, key: string, current: unknown) {
    const where = key === '' ? '(root)' : key;
    switch (typeof current) {
      case 'bigint':
        throw new JsonTextError(`a BigInt at "${where}" has no JSON form (convert it to a string)`, where);
      case 'function':
        throw new JsonTextError(`a function at "${where}" has no JSON form`, where);
      case 'symbol':
        throw new JsonTextError(`a symbol at "${where}" has no JSON form`, where);
      case 'object':
        if (current === null) return current;
        // A boxed BigInt (Object(1n)) is an object, so the bigint case above misses it, and
        // JSON.stringify then throws an uncoded TypeError.
        if (current instanceof BigInt) throw new JsonTextError(`a BigInt at "${where}" has no JSON form (convert it to a string)`, where);
        if (current instanceof Map || current instanceof Set || current instanceof WeakMap || current instanceof WeakSet) {
          throw new JsonTextError(`a ${current.constructor.name} at "${where}" would be stored as {} (convert it to an object or array)`, where);
        }
        // Cycle detection: `this` is the holder; drop ancestors that are no longer on the path.
        while (seen.length > 0 && seen.at(-1) !== this) seen.pop();
        if (seen.includes(current)) throw new JsonTextError(`a circular reference at "${where}" has no JSON form`, where);
        if (seen.length >= MAX_JSON_DEPTH) throw new JsonTextError(`the value nests deeper than ${MAX_JSON_DEPTH} levels`, where);
        seen.push(current);
        return current;
      default:
        return current;
    }
  });
  if (text !== undefined && UNSTORABLE_ESCAPE.test(text)) {
    throw new JsonTextError('a string holds U+0000 or an unpaired surrogate, which Postgres jsonb cannot store', '(string)');
  }
  return text;
}
