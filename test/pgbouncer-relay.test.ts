/**
 * The relay through PgBouncer (1.18 here: no protocol-level prepared statements), each pool mode
 * on a PgBouncer of this file's own:
 * - transaction mode, `pooler: 'transaction'`: delivers everything (unnamed statements, polling
 *   instead of LISTEN, graphile-worker's sweeps without prepared statements); without the option
 *   PgBouncer refuses the relay's startup settings, and the relay says which option to set;
 * - transaction mode that ignores the startup options, relay not told: a named statement that
 *   meets the wrong server connection is sent again unnamed, with a warning, and nothing is lost;
 * - session mode, `pooler: 'session'`: delivers everything, LISTEN included.
 *
 * Without PgBouncer the suite is skipped, unless CI or ONCE_REQUIRE_SERVICES is set.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PoolerSettingError, startRelay, type DeliveryEvent, type Relay, type RelayOptions } from '../src/index.ts';
import { loadRelayConfig } from '../src/cli/relay-config.ts';
import { timedDatabase } from '../src/outbox/relay-pool.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { errorOf } from './support/error-of.ts';
import { fillOutbox, waitForOutbox } from './support/outbox-helpers.ts';
import { type Pgbouncer, pgbouncerAvailable, pgbouncerRequired, requirePgbouncer, startPgbouncer } from './support/pgbouncer.ts';
import { testPool } from './support/test-database.ts';

describe.skipIf(!pgbouncerAvailable && !pgbouncerRequired)('the relay through PgBouncer', () => {
  let fx: AppFixture;
  let relayUrl: string;
  /** pool_mode = transaction, refusing unknown startup parameters (PgBouncer's default). */
  let transaction: Pgbouncer;
  /** pool_mode = transaction, ignoring the startup `options`; one server connection per alias. */
  let lenient: Pgbouncer;
  /** pool_mode = session. */
  let session: Pgbouncer;
  const relays: Relay[] = [];
  const pools: pg.Pool[] = [];

  beforeAll(async () => {
    requirePgbouncer();
    fx = await createAppFixture();
    relayUrl = await fx.database.createLoginRole('relay');
    const databases = { app: fx.appUrl, relay: relayUrl };
    [transaction, lenient, session] = await Promise.all([
      startPgbouncer({ databases, poolMode: 'transaction', poolSize: 2 }),
      startPgbouncer({ databases, poolMode: 'transaction', poolSize: 1, ignoreStartupParameters: ['options'] }),
      startPgbouncer({ databases, poolMode: 'session', poolSize: 8 }),
    ]);
  });
  afterEach(async () => {
    await Promise.all(relays.splice(0).map((relay) => relay.stop()));
    await fx.database.admin.query('DELETE FROM once.outbox_events');
  });
  afterAll(async () => {
    await Promise.all(pools.map((pool) => pool.end()));
    await fx?.close();
    await Promise.all([transaction, lenient, session].map((bouncer) => bouncer?.stop()));
  });

  /** A relay through `bouncer`, with a sink that fails a fifth of its attempts; what it logged. */
  async function relayThrough(bouncer: Pgbouncer, options: Partial<RelayOptions>) {
    const attempts = new Map<string, Set<string>>();
    const logged = { warnings: [] as string[], errors: [] as string[] };
    const relay = await startRelay({
      connectionString: bouncer.url('relay'),
      sinks: {
        '>': async (event: DeliveryEvent) => {
          attempts.set(event.id, (attempts.get(event.id) ?? new Set()).add(event.dedupeId));
          if (Math.random() < 0.2) throw new Error('receiver hiccup');
        },
      },
      backoff: { initialMs: 5, maxMs: 40 },
      handleSignals: false,
      sweep: false,
      logger: { warn: (message: string) => logged.warnings.push(message), error: (message: string) => logged.errors.push(message) },
      ...options,
    });
    relays.push(relay);
    return { attempts, logged };
  }

  /** Enqueues through `bouncer` too (the application's own path), then waits for every event. */
  async function deliverAll(bouncer: Pgbouncer, count: number, attempts: Map<string, Set<string>>) {
    const app = fx.database.kysely(bouncer.url('app'), { max: 8 });
    // One event a transaction: two transactions taking ordering-key locks in different orders deadlock.
    const refs = await fillOutbox(app, { count, tenants: 5, orderingKeys: 7, perTransaction: 1 });
    const counts = await waitForOutbox(fx.database.admin, (c) => c.delivered === count, 60_000);
    expect(counts).toStrictEqual({ pending: 0, delivered: count, dead: 0 });
    for (const ref of refs) expect([...(attempts.get(ref.id) ?? [])]).toStrictEqual([ref.dedupeId]);
  }

  it('refuses to start through PgBouncer without the pooler option, naming the option', async () => {
    const error = await errorOf(relayThrough(transaction, {}));
    expect(error).toBeInstanceOf(PoolerSettingError);
    expect(error).toMatchObject({ code: 'POOLER_SETTING_REQUIRED', retryable: false });
    expect(error.message).toContain("pooler: 'transaction'");
    expect((error.cause as { code?: string }).code).toBe('08P01');
  });

  it("delivers every event through transaction mode with pooler: 'transaction', sweeps scheduled", async () => {
    const { attempts, logged } = await relayThrough(transaction, { pooler: 'transaction', sweep: { schedule: '* * * * *' } });
    await deliverAll(transaction, 300, attempts);
    expect(logged.errors).toStrictEqual([]);
    expect(logged.warnings).toStrictEqual([]);
  });

  it('sends a named statement again unnamed when it meets the wrong server connection, once warned', async () => {
    const pool = testPool({ connectionString: lenient.url('relay'), max: 2 });
    pools.push(pool);
    const misplaced: unknown[] = [];
    const db = timedDatabase(pool, 5_000, { named: true, onMisplaced: (error) => misplaced.push(error) });
    // Two clients, one server connection: the second Parse of the name finds the first's there.
    const results = await Promise.all(
      [1, 2, 3, 4].map((n) => db.query<{ n: number }>({ name: 'once_test_misplaced', text: 'SELECT $1::int AS n', values: [n] })),
    );
    expect(results.map((result) => result.rows[0]!.n)).toStrictEqual([1, 2, 3, 4]);
    expect(misplaced).toHaveLength(1);
    expect((misplaced[0] as { code?: string }).code).toMatch(/^(42P05|26000)$/u);
  });

  it('delivers every event through a transaction-mode PgBouncer that ignores the startup options, relay not told', async () => {
    const { attempts, logged } = await relayThrough(lenient, {});
    await deliverAll(lenient, 100, attempts);
    // No claim or settle failed: each misplaced statement was sent again at once (without the
    // fallback, they fail and are retried a second later, over and over).
    expect(logged.errors).toStrictEqual([]);
    for (const warning of logged.warnings) expect(warning).toContain("pooler: 'transaction'");
  });

  it("delivers every event through session mode with pooler: 'session'", async () => {
    const { attempts, logged } = await relayThrough(session, { pooler: 'session' });
    await deliverAll(session, 100, attempts);
    expect(logged.errors).toStrictEqual([]);
  });

  it('refuses statement mode as an invalid option', async () => {
    const error = await errorOf(relayThrough(transaction, { pooler: 'statement' as never }));
    expect(error).toMatchObject({ code: 'INVALID_OPTIONS' });
    expect(error.issues[0].path).toStrictEqual(['pooler']);
  });

  it('takes the pool mode from the command line (pg-once relay --pooler transaction)', async () => {
    const directory = await mkdtemp(join(tmpdir(), 'once-pooler-'));
    try {
      const file = join(directory, 'relay.json');
      const secret = `whsec_${randomBytes(32).toString('base64')}`;
      await writeFile(file, JSON.stringify({ sinks: { '>': { http: { url: 'http://127.0.0.1:9/hooks', secret } } } }));
      const config = await loadRelayConfig({ config: file, pooler: 'transaction' });
      expect(config.pooler).toBe('transaction');
      const relay = await startRelay({ ...config, sinks: config.sinks!, connectionString: transaction.url('relay'), handleSignals: false, sweep: false });
      relays.push(relay);
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  });
});
