/**
 * A real downstream API on loopback that honours Idempotency-Key the way payment providers do:
 * the first request with a key performs the effect (a charge), later ones get the same answer.
 */
import { once } from 'node:events';
import { createServer } from 'node:http';

export interface PaymentApi {
  url: string;
  /** Every request, with its idempotency key. */
  requests: string[];
  /** Charges actually made, by idempotency key. */
  charges: Map<string, { chargeId: string; amount: number }>;
  close(): Promise<void>;
}

export async function startPaymentApi(): Promise<PaymentApi> {
  const api: PaymentApi = { url: '', requests: [], charges: new Map(), close: async () => {} };
  let next = 0;
  const server = createServer(async (request, response) => {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const key = String(request.headers['idempotency-key'] ?? '');
    api.requests.push(key);
    if (!key) {
      response.writeHead(400).end('{"error":"Idempotency-Key required"}');
      return;
    }
    const { amount } = JSON.parse(Buffer.concat(chunks).toString() || '{}') as { amount: number };
    let charge = api.charges.get(key);
    if (!charge) {
      charge = { chargeId: `ch_${++next}`, amount };
      api.charges.set(key, charge);
    }
    response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(charge));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  api.url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/charges`;
  api.close = async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  };
  return api;
}
