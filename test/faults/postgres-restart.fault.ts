/**
 * Scenario 4, Postgres restarts: a server of this test's own (never the shared one) is restarted
 * with a fast shutdown several times while clients claim keys and a relay process delivers
 * events. Clients retry every intent under the same key until it succeeds and record every error
 * they see; the relay is never touched. Afterwards: each intent committed exactly once (the
 * result a client finally got is the one that committed, even when the commit's answer was lost),
 * every error the clients saw was retryable, and the relay delivered everything by itself.
 */
import { randomBytes } from 'node:crypto';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { enqueue, migrate, OnceError, runIdempotent, withTenant } from '../../src/index.ts';
import { databaseUrlFor } from '../support/database-url.ts';
import { startWebhookReceiver, type WebhookReceiver } from '../support/webhook-receiver.ts';
import { recordFigures } from './support/figures.ts';
import { startRelayProcess, type RelayProcess } from './support/relay-process.ts';
import { startRestartablePostgres, type RestartablePostgres } from './support/restartable-postgres.ts';
import { random, scaled, sleep } from './support/scale.ts';
import { ordersTableSql } from '../../support/orders-table.ts';

const INTENTS = scaled(2_000, 100);
const RESTARTS = scaled(3, 1);
const WORKERS = 12;
const TENANTS = 10;
/** A client gives an intent up after this long (it would count as lost). */
const INTENT_DEADLINE_MS = 60_000;

let server: RestartablePostgres;
let admin: pg.Pool;
let app: Kysely<any>;
let appPool: pg.Pool;
let relayUrl: string;
let receiver: WebhookReceiver;
let relay: RelayProcess | undefined;
let idlePoolErrors = 0;
let checkedOutClientErrors = 0;

beforeAll(async () => {
  server = await startRestartablePostgres();
  const database = 'once_restart';
  const bootstrap = new pg.Client({ connectionString: server.connectionString });
  await bootstrap.connect();
  await bootstrap.query(`CREATE DATABASE ${database}`);
  await bootstrap.end();
  const adminUrl = databaseUrlFor(server.connectionString, database);
  const { roles } = await migrate(adminUrl);
  admin = new pg.Pool({ connectionString: adminUrl, max: 2 });
  admin.on('error', () => {});
  const appPassword = randomBytes(12).toString('hex');
  const relayPassword = randomBytes(12).toString('hex');
  await admin.query(`
    CREATE ROLE restart_app LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '${appPassword}';
    GRANT ${roles.app} TO restart_app;
    CREATE ROLE restart_relay LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '${relayPassword}';
    GRANT ${roles.relay} TO restart_relay;`);
  await admin.query(ordersTableSql(roles.app));
  // The application's pool, set up as a service must set it up to survive a restart. node-postgres
  // emits a dropped connection as an 'error' EVENT: on the pool for an idle client, and on the
  // client itself for a checked-out one (pg-pool removes its listener at checkout, and Kysely adds
  // none). withTenant holds a client for the whole transaction, fn included; a fast shutdown that
  // finds one between two statements would, without the 'connect' listener below, crash the
  // process with an uncaught exception (57P01). Both are counted and reported.
  appPool = new pg.Pool({ connectionString: databaseUrlFor(server.connectionString, database, { user: 'restart_app', password: appPassword }), max: WORKERS });
  appPool.on('error', () => {
    idlePoolErrors += 1;
  });
  appPool.on('connect', (client) => {
    client.on('error', () => {
      checkedOutClientErrors += 1;
    });
  });
  app = new Kysely<any>({ dialect: new PostgresDialect({ pool: appPool }) });
  relayUrl = databaseUrlFor(server.connectionString, database, { user: 'restart_relay', password: relayPassword });
  receiver = await startWebhookReceiver();
}, 180_000);

afterAll(async () => {
  relay?.child.kill('SIGKILL');
  await receiver?.close();
  await app?.destroy();
  await admin?.end().catch(() => {});
  await server?.close();
});

/** What a client saw, by kind: a pg-once code, a SQLSTATE, a socket error code, or the message. */
function kindOf(error: unknown): string {
  if (error instanceof OnceError) return `${error.name}(${error.code})`;
  const code = (error as { code?: unknown }).code;
  if (error instanceof pg.DatabaseError) return `pg.DatabaseError(${String(code)})`;
  if (typeof code === 'string') return `${(error as Error).name}(${code})`;
  return `${(error as Error).name}: ${(error as Error).message}`;
}

/**
 * Whether a client may retry the same call: a retryable pg-once error, a SQLSTATE of class 08
 * (connection exception), 57P01-57P03 (admin/crash shutdown, cannot connect now) or 40 (rollback),
 * a refused or reset socket, or node-postgres' "Connection terminated" for a socket closed under it.
 */
function retryable(error: unknown): boolean {
  if (error instanceof OnceError) return error.retryable;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string') return /^(08|40|57P0[123])/.test(code) || ['ECONNREFUSED', 'ECONNRESET', 'EPIPE'].includes(code);
  // No code: node-postgres' own messages for a socket that closed under a query, and for a query
  // sent on a client whose connection had already failed (what Kysely's ROLLBACK after the failed
  // statement throws, replacing the original error).
  return /^Connection terminated|has encountered a connection error and is not queryable/.test((error as Error).message ?? '');
}

it(`Postgres restarts: ${RESTARTS} fast shutdowns of a test-owned server during ${INTENTS} claims and their deliveries`, async () => {
  const rng = random(4);
  receiver.respond = async () => {
    await sleep(rng.int(1, 6));
    return 200;
  };
  relay = await startRelayProcess({
    name: 'restart-relay',
    databaseUrl: relayUrl,
    receiverUrl: receiver.url,
    secret: receiver.secret,
    env: { LEASE_MS: '1000', CONCURRENCY: '8' },
  });

  const errors = new Map<string, number>();
  const notRetryable: string[] = [];
  const finalValue = new Map<string, number>();
  let completed = 0;
  let attempts = 0;
  let next = 0;
  const worker = async () => {
    while (next < INTENTS) {
      const index = next++;
      const tenant = `restart-tenant-${index % TENANTS}`;
      const key = `restart:${index}`;
      const deadline = Date.now() + INTENT_DEADLINE_MS;
      while (Date.now() < deadline) {
        attempts += 1;
        try {
          const value = await withTenant(app, tenant, (tx) =>
            runIdempotent(
              tx,
              key,
              async (t) => {
                const amount = Math.floor(Math.random() * 2_000_000_000) + 1;
                await sql`INSERT INTO orders (key, amount) VALUES (${key}, ${amount})`.execute(t);
                await enqueue(t, { topic: 'restart.charged', payload: { key, amount } });
                return { amount };
              },
              { request: { key }, tool: 'charge_card', waitMs: 5_000 },
            ),
          );
          finalValue.set(key, value.amount);
          completed += 1;
          break;
        } catch (error) {
          const kind = kindOf(error);
          errors.set(kind, (errors.get(kind) ?? 0) + 1);
          if (!retryable(error)) notRetryable.push(`${kind}: ${(error as Error).message}`);
          await sleep(rng.int(30, 120));
        }
      }
    }
  };

  // Restart k happens once (k+1)/(RESTARTS+1) of the intents are done: always mid-workload.
  let restarts = 0;
  const restarter = async () => {
    for (let k = 0; k < RESTARTS; k += 1) {
      while (completed < ((k + 1) * INTENTS) / (RESTARTS + 1)) await sleep(10);
      await server.restart(rng.int(200, 800));
      restarts += 1;
    }
  };
  const started = Date.now();
  await Promise.all([restarter(), ...Array.from({ length: WORKERS }, worker)]);
  const workloadMs = Date.now() - started;

  // The relay was never touched: it must find its way back to the database by itself.
  const drainStarted = Date.now();
  let pending = -1;
  while (Date.now() - drainStarted < 90_000) {
    const { rows } = await admin
      .query<{ pending: string }>("SELECT count(*) AS pending FROM once.outbox_events WHERE status <> 'delivered'")
      .catch(() => ({ rows: [{ pending: '-1' }] }));
    pending = Number(rows[0]!.pending);
    if (pending === 0) break;
    await sleep(100);
  }
  const relayAlive = relay.child.exitCode === null && relay.child.signalCode === null;

  const { rows } = await admin.query<{ key: string; rows: string; amount: number }>(
    'SELECT key, count(*) AS rows, min(amount) AS amount FROM public.orders GROUP BY key',
  );
  const { rows: eventRows } = await admin.query<{ key: string; dedupe_id: string; events: string }>(
    "SELECT payload->>'key' AS key, min(dedupe_id) AS dedupe_id, count(*) AS events FROM once.outbox_events GROUP BY 1",
  );
  const orders = new Map(rows.map((row) => [row.key, { rows: Number(row.rows), amount: row.amount }]));
  const events = new Map(eventRows.map((row) => [row.key, { events: Number(row.events), dedupeId: row.dedupe_id }]));
  const accepted = new Set(receiver.accepted.map((d) => d.webhookId));
  let lost = 0;
  let doubled = 0;
  let undelivered = 0;
  for (let index = 0; index < INTENTS; index += 1) {
    const key = `restart:${index}`;
    const stored = orders.get(key) ?? { rows: 0, amount: 0 };
    const event = events.get(key);
    if (!finalValue.has(key) || stored.rows === 0) lost += 1;
    if (stored.rows > 1 || (event?.events ?? 0) !== stored.rows || (finalValue.has(key) && finalValue.get(key) !== stored.amount)) doubled += 1;
    if (event && !accepted.has(event.dedupeId)) undelivered += 1;
  }
  const mismatched = receiver.requests.filter((r) => r.webhookId !== r.idempotencyKey || r.webhookId !== r.body.id).length;
  const relayErrors = relay.logs.filter((line) => line.startsWith('error'));

  recordFigures({
    scenario: '4 Postgres restarts',
    operations: attempts,
    faults: restarts,
    lost: lost + undelivered,
    doubled: doubled + mismatched,
    detail: {
      intents: INTENTS,
      client_errors: Object.fromEntries([...errors].sort((a, b) => b[1] - a[1])),
      not_retryable: notRetryable.length,
      idle_pool_errors: idlePoolErrors,
      checked_out_client_errors: checkedOutClientErrors,
      deliveries: receiver.requests.length,
      repeats: receiver.accepted.length - accepted.size,
      relay_alive: relayAlive,
      relay_errors_logged: relayErrors.length,
      workload_ms: workloadMs,
      relay_drain_ms: Date.now() - drainStarted,
    },
  });
  if (process.env.ONCE_FAULT_DEBUG) console.error(relay.logs.slice(0, 40), notRetryable.slice(0, 10));

  expect(notRetryable.slice(0, 10)).toEqual([]);
  expect({ lost, undelivered, doubled, mismatched }).toEqual({ lost: 0, undelivered: 0, doubled: 0, mismatched: 0 });
  expect(restarts).toBe(RESTARTS);
  expect(pending).toBe(0);
  expect(relayAlive).toBe(true);
});
