/**
 * What a request's fingerprint is made of: method, target, the chosen headers and the body, as
 * RFC 8785 canonical JSON (the same canonical form runIdempotent uses for every request). That
 * text is the `request` runIdempotent fingerprints: a string, which it hashes without walking the
 * body again.
 *
 * The body is what a JSON parser made in nearly every request, and canonicalJson (src/keys.ts)
 * pays for values that are not: it serialises with a checking replacer, parses the text back and
 * canonicalises that, three passes over the body on every request. A value built only of what
 * JSON.parse builds (plain objects, arrays, strings, finite numbers, booleans, null) is written
 * canonically in one pass here, to the same text; anything else (a Date from a reviver, a class
 * instance, a string Postgres could not store) goes through canonicalJson, so its text, and its
 * refusal, are canonicalJson's.
 */
import { MAX_JSON_DEPTH } from '../internal/json-text.ts';
import { canonicalJson } from '../keys.ts';

/** The fingerprinted parts of a request; `body` is a JSON value or `{ sha256 }` of its bytes. */
export interface FingerprintedRequest {
  method: string;
  target: string;
  headers: Record<string, string | null>;
  body: unknown;
}

/** The request's canonical JSON. */
export function httpRequestText(request: FingerprintedRequest): string {
  return canonicalText(request);
}

/** RFC 8785 canonical JSON of `value`, canonicalJson's text. */
export function canonicalText(value: unknown): string {
  return plainCanonical(value, 0) ?? canonicalJson(value);
}

/** Stands for "not a plain JSON value": the caller falls back to canonicalJson. */
const NOT_PLAIN = undefined;

function plainCanonical(value: unknown, depth: number): string | undefined {
  switch (typeof value) {
    case 'string':
      return storable(value) ? JSON.stringify(value) : NOT_PLAIN;
    case 'number':
      // ECMAScript number serialisation, as RFC 8785 prescribes (and -0 as 0).
      return Number.isFinite(value) ? JSON.stringify(value) : NOT_PLAIN;
    case 'boolean':
      return value ? 'true' : 'false';
    case 'object':
      break;
    default:
      return NOT_PLAIN;
  }
  if (value === null) return 'null';
  // Below the depth canonicalJson refuses, so that a refusal is still its own.
  if (depth >= MAX_JSON_DEPTH - 1) return NOT_PLAIN;
  if (Array.isArray(value)) {
    let text = '[';
    for (let i = 0; i < value.length; i += 1) {
      const item = plainCanonical(value[i], depth + 1);
      if (item === NOT_PLAIN) return NOT_PLAIN;
      text += i === 0 ? item : `,${item}`;
    }
    return `${text}]`;
  }
  const prototype = Object.getPrototypeOf(value);
  if ((prototype !== Object.prototype && prototype !== null) || typeof (value as { toJSON?: unknown }).toJSON === 'function') return NOT_PLAIN;
  // Sorted by UTF-16 code units, as RFC 8785 orders members (and as the default sort compares).
  const keys = Object.keys(value).sort();
  let text = '{';
  for (let i = 0; i < keys.length; i += 1) {
    const key = keys[i]!;
    const member = plainCanonical((value as Record<string, unknown>)[key], depth + 1);
    if (member === NOT_PLAIN || !storable(key)) return NOT_PLAIN;
    text += `${i === 0 ? '' : ','}${JSON.stringify(key)}:${member}`;
  }
  return `${text}}`;
}

/** canonicalJson refuses U+0000 and unpaired surrogates (Postgres cannot store them); so does this, by deferring to it. */
function storable(text: string): boolean {
  return !text.includes('\u0000') && text.isWellFormed();
}
