/**
 * An HTTP answer as pg-once stores and replays it: status, body BYTES and the headers a replay
 * repeats. The body is kept as the text it was sent as when it is UTF-8 (JSON, HTML, plain text:
 * readable in `once.idempotency_keys`), else as base64, so a replay sends the very bytes the
 * first answer sent, whatever they are; the framework never serialises a replay again.
 */

/** What an adapter sends: the handler's answer, a replay, or one of pg-once's problems. */
export interface HttpAnswer {
  status: number;
  /** Names in lower case. */
  headers: Record<string, string>;
  body: Uint8Array;
}

/**
 * An answer as an adapter captured it from the handler: the body as bytes, or as the string the
 * handler's framework wrote (sent as UTF-8). A string is stored as it is, rather than encoded by
 * the adapter and decoded again here; and only the headers a replay repeats need be captured.
 */
export interface CapturedAnswer {
  status: number;
  /** Names in lower case: the replay headers at least. */
  headers: Record<string, string>;
  body: Uint8Array | string;
}

/** The stored form (the result runIdempotent keeps): short names, since it is stored per key. */
export interface StoredAnswer {
  /** Status. */
  s: number;
  /** The allow-listed headers, lower-case names. */
  h: Record<string, string>;
  /** The body: UTF-8 text, or base64 when `e` says so. */
  b: string;
  e?: 'base64';
}

/** The header that marks a replay, as in the IETF draft's examples and Stripe's API. */
export const REPLAYED_HEADER = 'idempotent-replayed';

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

export function storedAnswer(answer: CapturedAnswer, replayHeaders: ReadonlySet<string>): StoredAnswer {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(answer.headers)) if (replayHeaders.has(name)) headers[name] = value;
  // Postgres jsonb cannot hold U+0000, so such a body goes as base64 like binary does; a string
  // with an unpaired surrogate was sent with U+FFFD in its place, so it is stored as those bytes.
  if (typeof answer.body === 'string' && storableText(answer.body)) return { s: answer.status, h: headers, b: answer.body };
  const bytes = typeof answer.body === 'string' ? Buffer.from(answer.body) : answer.body;
  let text: string | undefined;
  try {
    text = strictUtf8.decode(bytes);
  } catch {
    text = undefined;
  }
  if (text === undefined || !storableText(text)) return { s: answer.status, h: headers, b: Buffer.from(bytes).toString('base64'), e: 'base64' };
  return { s: answer.status, h: headers, b: text };
}

function storableText(text: string): boolean {
  return !text.includes('\u0000') && text.isWellFormed();
}

/** The answer a replay sends: the stored status, bytes and headers, marked as a replay. */
export function replayedAnswer(stored: StoredAnswer): HttpAnswer {
  const body = stored.e === 'base64' ? Buffer.from(stored.b, 'base64') : Buffer.from(stored.b, 'utf8');
  return { status: stored.s, headers: { ...stored.h, [REPLAYED_HEADER]: 'true' }, body };
}
