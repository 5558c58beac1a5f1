/**
 * An idempotent webhook receiver (an inbox), with nothing but node:http: pairs with the relay's
 * HTTP sink, or any Standard Webhooks sender. Each delivery is verified (verifyWebhook) and
 * processed once per tenant under its webhook-id (receiveOnce), however often it arrives.
 *
 * The tenant is the one inside the signed body (verifyWebhook's `tenant`), never a header: a
 * delivery captured on the wire and replayed with another x-tenant-id lands in its own tenant
 * again, where its webhook-id is already recorded, so nothing runs twice.
 *
 * Run it:  DATABASE_URL=postgres://app@db/app WEBHOOK_SECRET=whsec_... node examples/inbox-receiver.ts
 * (as a login granted the database's application role, `pg-once roles`; WEBHOOK_SECRET may list
 * several secrets, space-separated, while the sender rotates them).
 */
import { createServer, type Server } from 'node:http';
import { pathToFileURL } from 'node:url';
import { Kysely, PostgresDialect, sql, type Transaction } from 'kysely';
import pg from 'pg';
import { OnceError, receiveOnce, verifyWebhook, type VerifiedWebhook } from '../src/index.ts';

export interface InboxReceiverOptions {
  db: Kysely<any>;
  /** The Standard Webhooks secret shared with the sender, or several during a rotation. */
  secret: string | readonly string[];
  /** The work to do once per message, in the same transaction as the inbox record. */
  handle: (tx: Transaction<any>, webhook: VerifiedWebhook) => Promise<unknown>;
}

export function createInboxReceiver(options: InboxReceiverOptions): Server {
  return createServer(async (request, response) => {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    try {
      const webhook = verifyWebhook(request.headers as Record<string, string>, Buffer.concat(chunks), options.secret);
      const result = await receiveOnce(options.db, webhook, (tx) => options.handle(tx, webhook), { source: 'webhook' });
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(result ?? {}));
    } catch (error) {
      // 4xx tells the sender to stop (a forged or stale delivery); 5xx, to retry later.
      const status = error instanceof OnceError && !error.retryable && error.httpStatus < 500 ? error.httpStatus : 503;
      response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ error: error instanceof OnceError ? error.code : 'INTERNAL' }));
    }
  });
}

/**
 * The example's own business table: one row per processed message, readable by the database's
 * application role (`appRole`: MigrateResult.roles.app, or `pg-once roles`).
 */
export const receivedEventsTable = (appRole: string) => `
  CREATE TABLE IF NOT EXISTS public.received_events (
    tenant_id  text NOT NULL DEFAULT once.current_tenant(),
    message_id text NOT NULL,
    type       text,
    data       jsonb,
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, message_id)
  );
  ALTER TABLE public.received_events ENABLE ROW LEVEL SECURITY;
  ALTER TABLE public.received_events FORCE ROW LEVEL SECURITY;
  DROP POLICY IF EXISTS tenant_isolation ON public.received_events;
  CREATE POLICY tenant_isolation ON public.received_events TO ${appRole}
    USING (tenant_id = once.current_tenant()) WITH CHECK (tenant_id = once.current_tenant());
  GRANT SELECT, INSERT ON public.received_events TO ${appRole};`;

/** Stores a received event (the primary key would also refuse a second copy, as a last line). */
export async function storeReceivedEvent(tx: Transaction<any>, webhook: VerifiedWebhook): Promise<{ stored: string }> {
  const body = webhook.payload as { type?: string; data?: unknown };
  await sql`INSERT INTO received_events (message_id, type, data) VALUES (${webhook.messageId}, ${body.type ?? null}, ${JSON.stringify(body.data ?? null)}::jsonb)`.execute(
    tx,
  );
  return { stored: webhook.messageId };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const db = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: process.env.DATABASE_URL }) }) });
  const secrets = (process.env.WEBHOOK_SECRET ?? '').split(' ').filter(Boolean);
  if (secrets.length === 0) {
    console.error("Set WEBHOOK_SECRET to the sender's secret (whsec_...; `npx pg-once webhook-secret` makes one).");
    process.exit(2);
  }
  const server = createInboxReceiver({ db, secret: secrets, handle: storeReceivedEvent });
  const port = Number(process.env.PORT ?? 8787);
  server.listen(port, () =>
    console.log(`inbox receiver on http://127.0.0.1:${port}/ (create its table with receivedEventsTable(appRole) as the schema owner)`),
  );
}
