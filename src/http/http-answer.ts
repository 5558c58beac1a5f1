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

export function storedAnswer(answer: HttpAnswer, replayHeaders: ReadonlySet<string>): StoredAnswer {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(answer.headers)) if (replayHeaders.has(name)) headers[name] = value;
  let text: string | undefined;
  try {
    text = strictUtf8.decode(answer.body);
  } catch {
    text = undefined;
  }
  // Postgres jsonb cannot hold U+0000, so such a body goes as base64 like binary does.
  if (text === undefined || text.includes('\u0000')) return { s: answer.status, h: headers, b: Buffer.from(answer.body).toString('base64'), e: 'base64' };
  return { s: answer.status, h: headers, b: text };
}

/** The answer a replay sends: the stored status, bytes and headers, marked as a replay. */
export function replayedAnswer(stored: StoredAnswer): HttpAnswer {
  const body = stored.e === 'base64' ? Buffer.from(stored.b, 'base64') : Buffer.from(stored.b, 'utf8');
  return { status: stored.s, headers: { ...stored.h, [REPLAYED_HEADER]: 'true' }, body };
}
