/**
 * A webhook receiver for pg-once's relay (`httpSink`), in plain node:http: it verifies each
 * delivery's Standard Webhooks signature with the `standardwebhooks` package and applies each
 * event's effect once per tenant and `webhook-id` (the outbox event's dedupe id), dropping repeats.
 *
 * The tenant is read from the signed body (`tenant`), never from a header: a header is not
 * signed, so a captured delivery replayed with another tenant's header would otherwise be
 * applied again, to that tenant.
 *
 * Repeats are normal: the relay delivers at least once, so an event is sent again whenever an
 * answer does not reach it (a timeout, a crash after the effect, a lost 2xx). Receivers must dedupe;
 * the dedupe id is the same on every attempt, so that is all it takes.
 *
 * The seen-ids set here lives in memory, which is enough for a demo and wrong for production: keep
 * the ids in the same database transaction as the effect (an inbox table with a unique key), so a
 * crash cannot apply an effect and forget its id.
 *
 * Run it on its own:  WEBHOOK_SECRET=$(npx pg-once webhook-secret) PORT=8787 node examples/webhook-receiver.ts
 * then point the relay at it:  ONCE_WEBHOOK_SECRET=$WEBHOOK_SECRET npx pg-once relay --http http://127.0.0.1:8787/webhooks
 */
import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { Webhook } from 'standardwebhooks';

/** A verified delivery, as the relay's httpSink sends it. */
export interface WebhookEvent {
  /** The dedupe id: `webhook-id`, equal to `Idempotency-Key` and to `id` in the body. */
  id: string;
  /** The outbox event's topic, e.g. 'orders.created'. */
  type: string;
  /** When the event was written to the outbox (ISO 8601). */
  timestamp: string;
  /** The tenant that wrote the event: signed with it, so it cannot be swapped on a replay. */
  tenant: string;
  /** The event's payload. */
  data: unknown;
}

export interface WebhookReceiverOptions {
  /** The Standard Webhooks secret shared with the relay ('whsec_' + base64). (Required) */
  secret: string;
  /** TCP port; 0 picks a free one. (Default: 0) */
  port?: number;
  /** Interface to listen on. (Default: '127.0.0.1') */
  host?: string;
  /**
   * Applies an event's effect: called once per dedupe id. Throwing answers 500, forgets the id and
   * lets the relay retry. (Default: does nothing)
   */
  onEvent?: (event: WebhookEvent) => void | Promise<void>;
  /**
   * The status to answer once an event's effect was applied. (Default: 200.) A demo can answer
   * 5xx here to play a receiver whose answer was lost after it did the work: the relay then
   * delivers the event again, and the repeat is dropped.
   */
  answerAfterEffect?: (event: WebhookEvent) => number;
}

export interface WebhookReceiverCounts {
  /** Requests received, signed or not. */
  requests: number;
  /** Requests whose signature did not verify (answered 401). */
  unverified: number;
  /** Events whose effect was applied: one per tenant and dedupe id. */
  applied: number;
  /** Verified repeats of an already applied event, dropped (answered 200). */
  duplicatesDropped: number;
}

export interface WebhookReceiver {
  /** Where to point the relay's httpSink. */
  url: string;
  counts: WebhookReceiverCounts;
  close(): Promise<void>;
}

export async function startWebhookReceiver(options: WebhookReceiverOptions): Promise<WebhookReceiver> {
  const verifier = new Webhook(options.secret);
  const counts: WebhookReceiverCounts = { requests: 0, unverified: 0, applied: 0, duplicatesDropped: 0 };
  const seen = new Set<string>();

  const server = createServer(async (request, response) => {
    counts.requests += 1;
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    let event: WebhookEvent;
    try {
      // Verifies the signature over id, timestamp and the raw body (tenant included), and that
      // the timestamp is recent (older captures are refused).
      const body = verifier.verify(Buffer.concat(chunks).toString('utf8'), headerRecord(request.headers)) as Omit<WebhookEvent, 'id'>;
      if (typeof body.tenant !== 'string') throw new Error('no signed tenant');
      event = { ...body, id: String(request.headers['webhook-id']) };
    } catch {
      counts.unverified += 1;
      response.writeHead(401).end();
      return;
    }
    // Checked and recorded before any await: two concurrent deliveries of one id cannot both pass.
    // Per tenant, as an inbox table keyed (tenant_id, message_id) would be.
    const seenKey = JSON.stringify([event.tenant, event.id]);
    if (seen.has(seenKey)) {
      counts.duplicatesDropped += 1;
      response.writeHead(200).end();
      return;
    }
    seen.add(seenKey);
    try {
      await options.onEvent?.(event);
    } catch {
      seen.delete(seenKey);
      response.writeHead(500).end();
      return;
    }
    counts.applied += 1;
    response.writeHead(options.answerAfterEffect?.(event) ?? 200).end();
  });
  server.keepAliveTimeout = 30_000;
  server.listen(options.port ?? 0, options.host ?? '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;
  return {
    url: `http://${options.host ?? '127.0.0.1'}:${port}/webhooks`,
    counts,
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

function headerRecord(headers: IncomingHttpHeaders): Record<string, string> {
  const record: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) if (value !== undefined) record[name] = String(value);
  return record;
}

if (import.meta.main) {
  const secret = process.env.WEBHOOK_SECRET;
  if (!secret) {
    console.error("Set WEBHOOK_SECRET to the relay's webhook secret (whsec_...; `npx pg-once webhook-secret` makes one).");
    process.exit(2);
  }
  const receiver = await startWebhookReceiver({
    secret,
    port: Number(process.env.PORT ?? 8787),
    host: process.env.HOST ?? '127.0.0.1',
    onEvent: (event) => console.log(`applied   ${event.tenant} ${event.type} ${event.id} ${JSON.stringify(event.data)}`),
  });
  console.log(`Receiving webhooks at ${receiver.url}`);
  process.once('SIGINT', () => {
    console.log(JSON.stringify(receiver.counts));
    void receiver.close();
  });
}
