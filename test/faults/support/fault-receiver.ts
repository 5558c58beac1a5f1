/**
 * A webhook receiver on loopback that misbehaves on purpose, and the downstream system behind
 * it, which processes each event once by its dedupe id (`webhook-id`), as the relay's contract
 * asks receivers to. Every request is signature-checked (standardwebhooks) before anything else.
 *
 * Per request, `choose` picks what the receiver does:
 * - ok: processes the event, answers 200;
 * - timeout: never answers (the sink's timeout must give up), does not process;
 * - 500 / 503 / 429: answers that status, 503 and 429 with Retry-After (seconds, or an HTTP date
 *   for 503), does not process;
 * - close-mid-response: processes the event, sends 200 headers and half the body, then drops the
 *   connection (a receiver that crashed while answering: the sink must count it as a failure);
 * - reset: drops the connection before any answer, does not process;
 * - slow-accept: processes the event, answers 200 only after the sink has timed out.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import { Webhook } from 'standardwebhooks';
import { TEST_WEBHOOK_SECRET } from '../../support/webhook-receiver.ts';

export const FAULT_MODES = ['ok', 'timeout', '500', '503', '429', 'close-mid-response', 'reset', 'slow-accept'] as const;
export type FaultMode = (typeof FAULT_MODES)[number];

export interface FaultRequest {
  webhookId: string;
  idempotencyKey: string;
  body: { id: string; type: string; data: { seq: number } };
  mode: FaultMode;
  at: number;
}

export interface FaultReceiver {
  url: string;
  secret: string;
  requests: FaultRequest[];
  /** How many times the downstream system was handed each dedupe id (it acts on the first). */
  processed: Map<string, number>;
  unverified: number;
  choose: (request: Omit<FaultRequest, 'mode' | 'at'>, attempt: number) => FaultMode;
  close(): Promise<void>;
}

export async function startFaultReceiver(options: { slowAcceptMs: number; retryAfterSeconds: number }): Promise<FaultReceiver> {
  const verifier = new Webhook(TEST_WEBHOOK_SECRET);
  const attempts = new Map<string, number>();
  const held: ServerResponse[] = [];
  const receiver: FaultReceiver = {
    url: '',
    secret: TEST_WEBHOOK_SECRET,
    requests: [],
    processed: new Map(),
    unverified: 0,
    choose: () => 'ok',
    close: async () => {},
  };
  const process = (id: string) => receiver.processed.set(id, (receiver.processed.get(id) ?? 0) + 1);

  const server = createServer(async (request: IncomingMessage, response: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    let body: FaultRequest['body'];
    try {
      body = verifier.verify(Buffer.concat(chunks).toString('utf8'), request.headers as Record<string, string>) as FaultRequest['body'];
    } catch {
      receiver.unverified += 1;
      response.writeHead(401).end();
      return;
    }
    const webhookId = String(request.headers['webhook-id']);
    const attempt = (attempts.get(webhookId) ?? 0) + 1;
    attempts.set(webhookId, attempt);
    const seen = { webhookId, idempotencyKey: String(request.headers['idempotency-key']), body };
    const mode = receiver.choose(seen, attempt);
    receiver.requests.push({ ...seen, mode, at: Date.now() });
    switch (mode) {
      case 'ok':
        process(webhookId);
        response.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
        return;
      case 'timeout':
        held.push(response); // never answered; the sink aborts, close() drops it
        return;
      case '500':
        response.writeHead(500).end('boom');
        return;
      case '503':
        response.writeHead(503, { 'retry-after': new Date(Date.now() + options.retryAfterSeconds * 1_000).toUTCString() }).end('maintenance');
        return;
      case '429':
        response.writeHead(429, { 'retry-after': String(options.retryAfterSeconds) }).end('slow down');
        return;
      case 'close-mid-response':
        process(webhookId);
        response.writeHead(200, { 'content-type': 'application/json', 'content-length': '64' });
        response.write('{"ok":tr');
        setTimeout(() => response.socket?.destroy(), 5);
        return;
      case 'reset':
        response.socket?.destroy();
        return;
      case 'slow-accept':
        process(webhookId);
        setTimeout(() => {
          if (!response.destroyed) response.writeHead(200).end('{"ok":true}');
        }, options.slowAcceptMs);
        return;
    }
  });
  server.keepAliveTimeout = 30_000;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  receiver.url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/hooks`;
  receiver.close = async () => {
    for (const response of held) response.socket?.destroy();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  };
  return receiver;
}
