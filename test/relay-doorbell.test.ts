/**
 * The relay's logical-replication doorbell (startRelay({ wakeup: { logicalReplication } })),
 * against a Postgres of its own started with wal_level = logical (the shared test server runs
 * wal_level = replica and must not be restarted), as production runs it: a login that is not
 * superuser, with REPLICATION and the relay role. The relays here poll every 60 s, so an event
 * delivered within the test's wait was delivered because the doorbell rang.
 *
 * On the harness's own server (wal_level = replica) the same option falls back to polling, says
 * why in one DOORBELL_UNAVAILABLE line, and still delivers.
 */
import { randomBytes } from 'node:crypto';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enqueue, migrate, startRelay, status, withTenant, type Relay, type RelayOptions } from '../src/index.ts';
import { loadRelayConfig } from '../src/cli/relay-config.ts';
import { startEmbeddedPostgres, type PostgresServer } from '../support/throwaway-postgres.ts';
import { databaseUrlFor, quoteIdentifier } from './support/database-url.ts';
import { errorOf } from './support/error-of.ts';
import { useRelayFixture } from './support/relay-fixture.ts';
import { testPool } from './support/test-database.ts';

/** Long enough that only the doorbell can explain a delivery within a test. */
const SLOW_POLL = { pollIntervalMs: 60_000, maxPollIntervalMs: 60_000 } as const;

interface LogLine {
  level: string;
  message: string;
  fields: Record<string, unknown>;
}

function recordingLogger(lines: LogLine[]) {
  const write = (level: string) => (fields: Record<string, unknown>, message: string) => lines.push({ level, message, fields });
  return { info: write('info'), warn: write('warn'), error: write('error') };
}

async function waitFor<T>(read: () => Promise<T>, done: (value: T) => boolean, what: string, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (Date.now() > deadline) throw new Error(`${what}: still ${JSON.stringify(value)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('on a server with wal_level = logical', () => {
  let server: PostgresServer;
  let admin: pg.Pool;
  let relayUrl: string;
  let app: Kysely<any>;
  /** Every statement the application's connections sent. */
  const appStatements: string[] = [];
  const relays: Relay[] = [];
  const delivered: string[] = [];
  const sink = async (event: { id: string }) => {
    delivered.push(event.id);
  };
  const doorbellSlots = async () =>
    (await admin.query<{ slot_name: string; active: boolean }>("SELECT slot_name, active FROM pg_replication_slots WHERE slot_name LIKE 'once\\_doorbell\\_%'"))
      .rows;
  const start = (options: Partial<RelayOptions> = {}) =>
    startRelay({
      connectionString: relayUrl,
      sinks: { '>': sink },
      handleSignals: false,
      sweep: false,
      ...SLOW_POLL,
      wakeup: { logicalReplication: {} },
      ...options,
    } as RelayOptions).then((relay) => {
      relays.push(relay);
      return relay;
    });
  const enqueueOne = (tenant = 't1') => withTenant(app, tenant, (tx) => enqueue(tx, { topic: 'doorbell.test', payload: { at: Date.now() } }));

  beforeAll(async () => {
    server = await startEmbeddedPostgres({ settings: { wal_level: 'logical', max_wal_senders: '10', max_replication_slots: '10' } });
    const database = `once_doorbell_${randomBytes(4).toString('hex')}`;
    const superuser = new pg.Client({ connectionString: server.connectionString });
    await superuser.connect();
    await superuser.query(`CREATE DATABASE ${quoteIdentifier(database)}`);
    const { roles } = await migrate(databaseUrlFor(server.connectionString, database));
    // Production's logins: neither superuser nor BYPASSRLS; the relay's with REPLICATION.
    await superuser.query(`CREATE ROLE doorbell_relay LOGIN REPLICATION NOSUPERUSER NOBYPASSRLS PASSWORD 'relay-pw' IN ROLE ${quoteIdentifier(roles.relay)}`);
    await superuser.query(`CREATE ROLE doorbell_app LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD 'app-pw' IN ROLE ${quoteIdentifier(roles.app)}`);
    await superuser.end();
    relayUrl = databaseUrlFor(server.connectionString, database, { user: 'doorbell_relay', password: 'relay-pw' });
    admin = testPool({ connectionString: databaseUrlFor(server.connectionString, database), max: 2 });
    const appPool = testPool({ connectionString: databaseUrlFor(server.connectionString, database, { user: 'doorbell_app', password: 'app-pw' }), max: 4 });
    appPool.on('connect', (client) => {
      const query = client.query.bind(client) as (...args: unknown[]) => unknown;
      (client as { query: unknown }).query = (...args: unknown[]) => {
        const first = args[0];
        appStatements.push(typeof first === 'string' ? first : String((first as { text?: string }).text));
        return query(...args);
      };
    });
    app = new Kysely<any>({ dialect: new PostgresDialect({ pool: appPool }) });
  }, 120_000);

  afterAll(async () => {
    await Promise.all(relays.map((relay) => relay.stop()));
    await app?.destroy();
    await admin?.end();
    await server?.stop();
  }, 60_000);

  it('the migration created the insert-only publication of the outbox', async () => {
    const { rows } = await admin.query(
      `SELECT p.pubinsert, p.pubupdate, p.pubdelete, t.schemaname, t.tablename
         FROM pg_publication p JOIN pg_publication_tables t USING (pubname) WHERE p.pubname = 'once_outbox_doorbell'`,
    );
    expect(rows).toEqual([{ pubinsert: true, pubupdate: false, pubdelete: false, schemaname: 'once', tablename: 'outbox_events' }]);
  });

  it('rings on each committed insert: the relay delivers at once although it polls every minute; writers send no NOTIFY', async () => {
    const lines: LogLine[] = [];
    await start({ logger: recordingLogger(lines) });
    await waitFor(
      async () => lines.filter((line) => line.message === 'doorbell ringing').length,
      (n) => n === 1,
      'the doorbell never started',
    );
    // The relay's first poll is behind it: from here on, only a ring wakes it within a minute.
    const listener = new pg.Client({ connectionString: relayUrl });
    listener.on('error', () => {});
    const notifications: string[] = [];
    await listener.connect();
    listener.on('notification', (message) => notifications.push(message.channel));
    try {
      await listener.query('LISTEN once_outbox');
      appStatements.length = 0;
      for (let round = 0; round < 3; round += 1) {
        const { id } = await enqueueOne(`tenant-${round}`);
        await waitFor(async () => delivered.includes(id), Boolean, `event ${id} of round ${round} was not delivered`);
      }
    } finally {
      await listener.end();
    }
    expect(appStatements.length).toBeGreaterThan(0);
    expect(appStatements.filter((text) => /notify/i.test(text))).toEqual([]);
    expect(notifications).toEqual([]);
    const ringing = lines.find((line) => line.message === 'doorbell ringing')!;
    expect(ringing.fields).toMatchObject({ publication: 'once_outbox_doorbell', slot: expect.stringMatching(/^once_doorbell_[0-9a-f]{8}$/) });
    expect(lines.filter((line) => line.level !== 'info')).toEqual([]);
  });

  it('status shows the slot, active and temporary, with the WAL it holds; the slot is gone after stop', async () => {
    const relay = relays.at(-1)!;
    const report = await status(relayUrl);
    const slots = report.replicationSlots.filter((slot) => slot.slot.startsWith('once_doorbell_'));
    expect(slots).toEqual([{ slot: expect.any(String), plugin: 'pgoutput', temporary: true, active: true, retainedWalBytes: expect.any(Number) }]);
    expect(slots[0]!.retainedWalBytes).toBeGreaterThanOrEqual(0);
    await relay.stop();
    // Postgres drops a temporary slot as its WAL sender exits, a moment after the connection ends.
    await waitFor(doorbellSlots, (rows) => rows.length === 0, 'the slot outlived its relay');
  });

  it('reconnects with a new slot when its connection is cut, and rings again', async () => {
    const lines: LogLine[] = [];
    await start({ logger: recordingLogger(lines) });
    const [first] = await waitFor(doorbellSlots, (rows) => rows.length === 1 && rows[0]!.active, 'no active slot');
    await admin.query('SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1', [first!.slot_name]);
    const [second] = await waitFor(
      doorbellSlots,
      (rows) => rows.length === 1 && rows[0]!.slot_name !== first!.slot_name && rows[0]!.active,
      'no new slot',
      30_000,
    );
    expect(second!.slot_name).toMatch(/^once_doorbell_/);
    expect(lines.filter((line) => line.level === 'warn').map((line) => line.fields.reason)).toEqual(['connection']);
    const { id } = await enqueueOne();
    await waitFor(async () => delivered.includes(id), Boolean, 'not delivered after the reconnect');
  });

  it('a slot holding back more than maxRetainedWalBytes is dropped, and comes back once it can', async () => {
    await Promise.all(relays.splice(0).map((relay) => relay.stop()));
    await waitFor(doorbellSlots, (rows) => rows.length === 0, 'slots of earlier relays remain');
    const lines: LogLine[] = [];
    await start({ logger: recordingLogger(lines), wakeup: { logicalReplication: { maxRetainedWalBytes: 1_048_576 } } });
    const [first] = await waitFor(doorbellSlots, (rows) => rows.length === 1 && rows[0]!.active, 'no active slot');
    // A transaction left open with a change pins the slot's restart point (decoding may need its
    // WAL), however promptly the doorbell acknowledges: WAL written meanwhile stays retained.
    await admin.query('CREATE TABLE IF NOT EXISTS wal_filler (b text)');
    const holder = new pg.Client({
      connectionString: databaseUrlFor(server.connectionString, (await admin.query('SELECT current_database() AS d')).rows[0].d),
    });
    holder.on('error', () => {});
    await holder.connect();
    await holder.query('BEGIN');
    await holder.query("INSERT INTO wal_filler VALUES ('held')");
    await admin.query('INSERT INTO wal_filler SELECT repeat(md5(g::text), 40) FROM generate_series(1, 4000) g');
    await waitFor(
      async () => lines.filter((line) => line.fields.reason === 'wal_retained').length,
      (n) => n === 1,
      'the guard did not drop the slot',
      30_000,
    );
    const warning = lines.find((line) => line.fields.reason === 'wal_retained')!;
    expect(warning).toMatchObject({ level: 'warn', fields: { code: 'DOORBELL_UNAVAILABLE' } });
    // Dropped: that slot retains no WAL any more. A new one waits for the open transaction to end.
    await waitFor(doorbellSlots, (rows) => rows.every((row) => row.slot_name !== first!.slot_name), 'the slot was not dropped');
    await holder.query('COMMIT');
    await holder.end();
    await waitFor(
      doorbellSlots,
      (rows) => rows.length === 1 && rows[0]!.active && rows[0]!.slot_name !== first!.slot_name,
      'the doorbell did not come back',
      60_000,
    );
    const { id } = await enqueueOne();
    await waitFor(async () => delivered.includes(id), Boolean, 'not delivered after the doorbell came back');
  }, 120_000);
});

describe('where the doorbell cannot ring', () => {
  const setting = useRelayFixture();
  const relays: Relay[] = [];
  afterAll(async () => {
    await Promise.all(relays.map((relay) => relay.stop()));
  });

  const deliverWith = async (relayUrl: string) => {
    const lines: LogLine[] = [];
    const delivered: string[] = [];
    const relay = await startRelay({
      connectionString: relayUrl,
      sinks: { '>': async (event) => void delivered.push(event.id) },
      handleSignals: false,
      sweep: false,
      logger: recordingLogger(lines),
      wakeup: { logicalReplication: {} },
    });
    relays.push(relay);
    await waitFor(
      async () => lines.filter((line) => line.message.startsWith('doorbell unavailable')).length,
      (n) => n > 0,
      'no fallback line',
    );
    const { id } = await withTenant(setting.fx.app, 't1', (tx) => enqueue(tx, { topic: 'doorbell.fallback', payload: {} }));
    await waitFor(async () => delivered.includes(id), Boolean, 'the polling relay did not deliver');
    await relay.stop();
    return lines.filter((line) => line.level !== 'info');
  };

  it('wal_level = replica: one clear warning, and the relay polls and delivers', async () => {
    const { rows } = await setting.fx.database.admin.query<{ wal_level: string }>('SHOW wal_level');
    expect(rows[0]!.wal_level).toBe('replica'); // the harness's server (shared PG 15, or embedded)
    const user = new URL(setting.relayUrl).username;
    await setting.fx.database.admin.query(`ALTER ROLE ${quoteIdentifier(decodeURIComponent(user))} REPLICATION`);
    const warnings = await deliverWith(setting.relayUrl);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ level: 'warn', fields: { code: 'DOORBELL_UNAVAILABLE', reason: 'wal_level' } });
    expect(warnings[0]!.message).toBe('doorbell unavailable; the relay polls');
    expect((warnings[0]!.fields.err as Error).message).toContain("wal_level is 'replica'; the doorbell needs 'logical'");
  });

  it('a login without REPLICATION: says so, and polls', async () => {
    const warnings = await deliverWith(await setting.fx.database.createLoginRole('relay'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ level: 'warn', fields: { code: 'DOORBELL_UNAVAILABLE', reason: 'privilege' } });
    expect((warnings[0]!.fields.err as Error).message).toContain('REPLICATION');
  });

  it('refuses bad doorbell options, and a pooler without a direct connection for it', async () => {
    const base = { connectionString: setting.relayUrl, sinks: { '>': async () => {} }, handleSignals: false, sweep: false } as const;
    const badSlot = await errorOf(startRelay({ ...base, wakeup: { logicalReplication: { slotPrefix: 'Bad-Name' } } }));
    expect(badSlot).toMatchObject({ code: 'INVALID_OPTIONS' });
    const pooled = await errorOf(startRelay({ ...base, pooler: 'transaction', wakeup: { logicalReplication: {} } }));
    expect(pooled).toMatchObject({ code: 'INVALID_OPTIONS' });
    expect((pooled as Error).message).toContain('direct connectionString');
  });

  it('pg-once relay --wakeup logical turns it on, --wakeup poll off', async () => {
    const sinks = { config: undefined, nats: 'nats://127.0.0.1:4222', natsSubject: 'events' };
    expect((await loadRelayConfig({ ...sinks, wakeup: 'logical' })).wakeup).toEqual({ logicalReplication: {} });
    expect((await loadRelayConfig({ ...sinks, wakeup: 'poll' })).wakeup).toBeUndefined();
    expect(await errorOf(loadRelayConfig({ ...sinks, wakeup: 'notify' }))).toMatchObject({ code: 'INVALID_OPTIONS' });
  });
});
