/**
 * A real HTTP receiver on loopback that verifies every delivery with the `standardwebhooks`
 * package, as a webhook consumer would, and records what it accepted. It can fail a share of
 * requests (500) or answer a chosen status, to drive the relay's retries.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { once } from 'node:events';
import { Webhook } from 'standardwebhooks';

export interface ReceivedDelivery {
  webhookId: string;
  idempotencyKey: string;
  body: { id: string; type: string; timestamp: string; tenant: string; data: any };
  headers: IncomingMessage['headers'];
}

export interface WebhookReceiver {
  url: string;
  secret: string;
  /** Every verified request, accepted or failed on purpose. */
  requests: ReceivedDelivery[];
  /** Requests answered 2xx. */
  accepted: ReceivedDelivery[];
  /** Requests whose signature did not verify (should stay empty). */
  unverified: number;
  /** Decides the status of each verified request (default 200). */
  respond: (delivery: ReceivedDelivery) => number | Promise<number>;
  close(): Promise<void>;
}

export const TEST_WEBHOOK_SECRET = `whsec_${Buffer.from('pg-once test secret, 32 bytes!!').toString('base64')}`;

export async function startWebhookReceiver(secret = TEST_WEBHOOK_SECRET): Promise<WebhookReceiver> {
  const verifier = new Webhook(secret);
  const receiver: WebhookReceiver = {
    url: '',
    secret,
    requests: [],
    accepted: [],
    unverified: 0,
    respond: () => 200,
    close: async () => {},
  };
  const server: Server = createServer(async (request, response) => {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
    let body: ReceivedDelivery['body'];
    try {
      body = verifier.verify(raw, request.headers as Record<string, string>) as ReceivedDelivery['body'];
    } catch {
      receiver.unverified += 1;
      response.writeHead(401).end();
      return;
    }
    const delivery: ReceivedDelivery = {
      webhookId: String(request.headers['webhook-id']),
      idempotencyKey: String(request.headers['idempotency-key']),
      body,
      headers: request.headers,
    };
    receiver.requests.push(delivery);
    const status = await receiver.respond(delivery);
    if (status >= 200 && status < 300) receiver.accepted.push(delivery);
    response.writeHead(status, { 'content-type': 'application/json' }).end('{}');
  });
  server.keepAliveTimeout = 30_000;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  receiver.url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/webhooks`;
  receiver.close = async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  };
  return receiver;
}
