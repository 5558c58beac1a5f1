/**
 * pg-once for Express 5 (`import { idempotency } from 'pg-once/express'`): an `Idempotency-Key`
 * middleware whose route handler runs in the request's transaction, `res.locals.tx`.
 *
 * A thin shim over src/http/run-http-request.ts. Express handlers answer by writing to `res`, so
 * the middleware holds what they write (status, headers, bytes) until the transaction has
 * committed, then sends it; a replay sends the stored bytes. Express hands an error a handler
 * throws to its error handlers, and the middleware sees only the answer they write: judged like
 * any other by `store` (Express answers a thrown error 500 by default, which rolls back).
 */
import type { Request, RequestHandler, Response } from 'express';
import type { ParamsDictionary } from 'express-serve-static-core';
import type { Transaction } from 'kysely';
import type { CapturedAnswer } from '../http/http-answer.ts';
import { resolveHttpIdempotency, type HttpIdempotencyOptions } from '../http/http-idempotency-options.ts';
import { runHttpRequest, type HttpRequestFacts } from '../http/run-http-request.ts';

export type { HttpAnswer } from '../http/http-answer.ts';
export type { FromRequest, HttpIdempotencyOptions } from '../http/http-idempotency-options.ts';
export type { ProblemDetails } from '../http/problem-answer.ts';

/** What the middleware puts in `res.locals`: `res.locals.tx` is the request's transaction. */
export interface IdempotencyLocals<DB> {
  tx: Transaction<DB>;
}

/** Options of the Express middleware: the functions of the request get Express's `Request`. */
export type ExpressIdempotencyOptions<DB = any> = HttpIdempotencyOptions<Request, DB>;

/**
 * Runs the route's handler at most once per `Idempotency-Key` within the tenant, in a transaction
 * that also holds the key and the stored answer: `res.locals.tx`. Mount it on the routes it
 * guards, after the body parser: `app.post('/orders', express.json(), idempotency({ db, tenant }), handler)`.
 * Without a parser the body is read as bytes into `req.body`.
 */
export function idempotency<DB>(options: ExpressIdempotencyOptions<DB>): RequestHandler<ParamsDictionary, any, any, any, IdempotencyLocals<DB>> {
  const config = resolveHttpIdempotency(options, 'pg-once/express idempotency options');
  return (req, res, next) => {
    const facts: HttpRequestFacts = {
      method: req.method.toUpperCase(),
      target: req.originalUrl,
      route: req.route?.path === undefined ? undefined : `${req.baseUrl}${String(req.route.path)}`,
      header: (name) => req.get(name),
      body: () => readBody(req),
    };
    const held = holdResponse(res, config.replayHeaders);
    runHttpRequest<Request, DB>(config, req as Request, facts, async (tx) => {
      res.locals.tx = tx;
      next();
      return held.answer;
    }).then(
      ({ kind, answer }) => {
        held.release();
        if (kind === 'replayed' || kind === 'refused') for (const [name, value] of Object.entries(answer.headers)) res.setHeader(name, value);
        res.statusCode = answer.status;
        res.setHeader('content-length', typeof answer.body === 'string' ? Buffer.byteLength(answer.body) : answer.body.length);
        res.end(answer.body);
      },
      (error: unknown) => {
        held.release();
        next(error);
      },
    );
  };
}

/** The body as the fingerprint takes it: what the application's parser made, else the raw bytes. */
async function readBody(req: Request): Promise<unknown> {
  if (req.body !== undefined || !hasBody(req)) return req.body;
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  req.body = Buffer.concat(chunks);
  return req.body;
}

function hasBody(req: Request): boolean {
  return req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] ?? '0') !== '0';
}

/**
 * Keeps what the handler writes (writeHead, write, end) off the socket until the transaction has
 * committed: a client must never receive an answer whose writes could still roll back. Headers set
 * with setHeader stay on `res` and go out with the answer.
 */
function holdResponse(res: Response, replayHeaders: ReadonlySet<string>): { answer: Promise<CapturedAnswer>; release(): void } {
  // Kept as written: res.json() and res.send() end with one UTF-8 string, stored as it is.
  const chunks: (Buffer | string)[] = [];
  const toChunk = (chunk: unknown, encoding: unknown): Buffer | string =>
    typeof chunk === 'string'
      ? encoding === undefined || encoding === 'utf8' || encoding === 'utf-8' || typeof encoding === 'function'
        ? chunk
        : Buffer.from(chunk, encoding as BufferEncoding)
      : Buffer.isBuffer(chunk)
        ? chunk
        : Buffer.from(chunk as Uint8Array);
  const callbackOf = (...args: unknown[]) => args.find((arg): arg is () => void => typeof arg === 'function');
  let ended!: (answer: CapturedAnswer) => void;
  const answer = new Promise<CapturedAnswer>((resolve) => {
    ended = resolve;
  });
  const held = res as unknown as Record<string, unknown>;
  held.writeHead = (status: number, ...rest: unknown[]) => {
    res.statusCode = status;
    const headers = rest.find((arg) => typeof arg === 'object' && arg !== null);
    if (Array.isArray(headers)) for (let i = 0; i + 1 < headers.length; i += 2) res.setHeader(String(headers[i]), headers[i + 1]);
    else if (headers) for (const [name, value] of Object.entries(headers)) res.setHeader(name, value as string);
    return res;
  };
  held.write = (chunk: unknown, encoding?: unknown, callback?: unknown) => {
    chunks.push(toChunk(chunk, encoding));
    callbackOf(encoding, callback)?.();
    return true;
  };
  held.end = (chunk?: unknown, encoding?: unknown, callback?: unknown) => {
    if (chunk !== undefined && chunk !== null && typeof chunk !== 'function') chunks.push(toChunk(chunk, encoding));
    callbackOf(chunk, encoding, callback)?.();
    // Only what a replay repeats: the handler's answer itself goes out with every header on `res`.
    const headers: Record<string, string> = {};
    for (const name of replayHeaders) {
      const value = res.getHeader(name);
      if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(', ') : String(value);
    }
    const body =
      chunks.length === 1 && typeof chunks[0] === 'string'
        ? chunks[0]
        : Buffer.concat(chunks.map((part) => (typeof part === 'string' ? Buffer.from(part) : part)));
    ended({ status: res.statusCode, headers, body });
    return res;
  };
  held.flushHeaders = () => {};
  return {
    answer,
    release() {
      // The instance's own methods go, the prototype's (the real ones) show again.
      for (const name of ['writeHead', 'write', 'end', 'flushHeaders']) delete held[name];
    },
  };
}
