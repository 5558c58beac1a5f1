/**
 * The relay's doorbell: a logical replication stream of once.outbox_events inserts (pgoutput,
 * publication `once_outbox_doorbell` of sql/0014), used only to wake the claim loop the moment
 * an event commits. Writers pay nothing for it: they INSERT as always; the server's WAL sender
 * decodes the WAL they wrote anyway (a NOTIFY, by contrast, takes a global lock at each commit,
 * and halved durable write throughput at 16 writers).
 *
 * The doorbell never decides what is delivered: a ring only ends the relay's wait, and the
 * claim stays the source of truth. So a ring lost (connection down, slot dropped, a ring that
 * beats the commit's visibility) costs latency only: the poll finds the event.
 *
 * Trade-offs chosen:
 * - The protocol is spoken with pg (`replication: 'database'`; replication-messages.ts), not a
 *   replication library: the doorbell needs three messages, and no optional dependency to install.
 * - A TEMPORARY slot per relay process: Postgres drops it when the connection ends, crash or not,
 *   so an abandoned relay never leaves a slot retaining WAL. It is created anew on each connect
 *   (which waits for transactions running at that moment to end: meanwhile the relay polls).
 * - Everything received is acknowledged at once (the stream carries nothing to keep), and a guard
 *   drops the slot if it still holds back more than maxRetainedWalBytes (a relay stalled by its
 *   host, say), then tries again later.
 * - Unavailable (wal_level below logical, no REPLICATION attribute, no publication, no free slot
 *   or WAL sender): one DOORBELL_UNAVAILABLE warning per reason, polling, and a retry every 30 s,
 *   so fixing the server (wal_level needs a restart) brings the doorbell back without a restart
 *   of the relay.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { DoorbellUnavailableError, type DoorbellUnavailableReason } from '../errors.ts';
import type { ResolvedLogicalDoorbellOptions } from './doorbell-options.ts';
import { formatLsn, parseReplicationMessage, standbyStatusUpdate } from './replication-messages.ts';
import type { RelayDatabase } from './relay-pool.ts';
import type { RelayLog } from './relay-log.ts';
import type { Wakeup } from './relay-wakeup.ts';
import { hangUp } from './hang-up.ts';
import { slotRetainedWalBytes } from './sql/doorbell-slot.ts';

/** Acknowledge what was received at most this often, in milliseconds (status updates are tiny). */
const ACK_MILLISECONDS = 1_000;
/** Ask the server for an answer this often, in milliseconds: the stream's liveness check. */
const PING_MILLISECONDS = 10_000;
/** Nothing heard for this long (two pings unanswered) means the connection is dead, in milliseconds. */
const SILENCE_MILLISECONDS = 25_000;
/** How often the guard reads the slot's retained WAL, in milliseconds. */
const GUARD_MILLISECONDS = 10_000;
/** First pause before reconnecting after a lost connection, in milliseconds; doubles to the next. */
const FIRST_PAUSE_MILLISECONDS = 500;
/** Longest pause between attempts, and the pause after a configuration problem, in milliseconds. */
const MAX_PAUSE_MILLISECONDS = 30_000;
/**
 * Each ring rings again this much later, in milliseconds (once, however many rings came
 * meanwhile). The WAL sender may decode a commit a moment before the commit is visible to other
 * sessions (the writer's backend flushes, then marks itself done), so the claim a ring starts can
 * miss the row it rang for; the echo's claim finds it, instead of the safety-net poll a tenth of
 * a second later. The relay spaces claims anyway, so under load echoes cost nothing.
 */
const ECHO_MILLISECONDS = 3;

/** Reasons an operator must fix: retried at the slow pace, not the reconnect one. */
const CONFIGURATION_REASONS = new Set<DoorbellUnavailableReason>(['wal_level', 'privilege', 'publication', 'slot_limit']);

export interface Doorbell extends Wakeup {
  /** The slot streaming now, if the doorbell is ringing. */
  readonly slot: string | undefined;
}

export interface DoorbellHooks {
  /** An outbox insert committed (or the stream just started: anything before it is the poll's). */
  ring(): void;
  log: Pick<RelayLog, 'info' | 'warn'>;
  /** What the relay polls at, for the fallback log line. */
  pollIntervalMs: number;
}

/**
 * Replication connection settings from the relay's own: without the relay's client-side
 * query_timeout (START_REPLICATION runs for as long as the stream does) and statement_timeout
 * (a role setting, or the relay's, must not end the stream either).
 */
export function doorbellConnectionConfig(relay: pg.ClientConfig, options: ResolvedLogicalDoorbellOptions): pg.ClientConfig {
  const { query_timeout: _query, statement_timeout: _statement, options: _startup, ...rest } = relay as pg.ClientConfig & { options?: string };
  const base = options.connectionString === undefined ? rest : { connectionString: options.connectionString, ssl: rest.ssl };
  return {
    ...base,
    replication: 'database',
    options: '-c statement_timeout=0',
    application_name: 'pg-once doorbell',
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
  } as pg.ClientConfig;
}

export function startLogicalDoorbell(connection: pg.ClientConfig, options: ResolvedLogicalDoorbellOptions, db: RelayDatabase, hooks: DoorbellHooks): Doorbell {
  let closed = false;
  /** The connection being opened or streaming. */
  let client: pg.Client | undefined;
  let slot: string | undefined;
  let pauseMs = FIRST_PAUSE_MILLISECONDS;
  let retryTimer: NodeJS.Timeout | undefined;
  let tick: NodeJS.Timeout | undefined;
  let guard: NodeJS.Timeout | undefined;
  /** The reason last logged, so a retry that fails the same way is not logged again. */
  let lastReason: DoorbellUnavailableReason | undefined;

  const stopTimers = () => {
    clearInterval(tick);
    clearInterval(guard);
    tick = guard = undefined;
  };

  const fail = (failed: pg.Client, error: DoorbellUnavailableError) => {
    if (closed || failed !== client) return;
    client = undefined;
    slot = undefined;
    stopTimers();
    hangUp(failed);
    const configuration = CONFIGURATION_REASONS.has(error.reason);
    const retryInMs = configuration ? MAX_PAUSE_MILLISECONDS : pauseMs;
    pauseMs = Math.min(pauseMs * 2, MAX_PAUSE_MILLISECONDS);
    if (error.reason !== lastReason) {
      // One message for every reason (lines group by it); the reason is in the fields and `err`.
      hooks.log.warn('doorbell unavailable; the relay polls', {
        err: error,
        code: error.code,
        reason: error.reason,
        pollIntervalMs: hooks.pollIntervalMs,
        retryInMs,
      });
      lastReason = error.reason;
    }
    retryTimer = setTimeout(() => {
      retryTimer = undefined;
      void connect();
    }, retryInMs);
    retryTimer.unref();
  };

  const connect = async () => {
    if (closed) return;
    const next = new pg.Client(connection);
    client = next;
    next.on('error', (error) => fail(next, explain(error)));
    next.on('end', () => fail(next, new DoorbellUnavailableError('connection', 'the replication connection ended')));
    const name = `${options.slotPrefix}_${randomBytes(4).toString('hex')}`;
    try {
      await next.connect();
      // Checked first, for a clear reason: START_REPLICATION on a missing publication only
      // fails at the first insert it decodes. Names are pattern-checked (doorbell-options.ts):
      // a replication connection takes no parameters.
      const { rows } = await next.query<{ wal_level: string; publication: boolean }>(
        `SELECT current_setting('wal_level') AS wal_level,
                EXISTS (SELECT FROM pg_catalog.pg_publication WHERE pubname = '${options.publication}') AS publication`,
      );
      if (rows[0]?.wal_level !== 'logical') {
        throw new DoorbellUnavailableError('wal_level', `wal_level is '${rows[0]?.wal_level}'; the doorbell needs 'logical' (a server restart)`);
      }
      if (!rows[0]?.publication) {
        throw new DoorbellUnavailableError('publication', `publication ${options.publication} does not exist (run pg-once migrate, or create it)`);
      }
      await next.query(`CREATE_REPLICATION_SLOT ${name} TEMPORARY LOGICAL pgoutput NOEXPORT_SNAPSHOT`);
      if (closed || client !== next) return hangUp(next);
      stream(next, name);
    } catch (error) {
      fail(next, error instanceof DoorbellUnavailableError ? error : explain(error));
    }
  };

  let echo: NodeJS.Timeout | undefined;
  const ring = () => {
    hooks.ring();
    echo ??= setTimeout(() => {
      echo = undefined;
      if (!closed) hooks.ring();
    }, ECHO_MILLISECONDS);
  };

  const stream = (streaming: pg.Client, name: string) => {
    let received = 0n;
    let acknowledged = 0n;
    let heardAt = Date.now();
    let pingedAt = Date.now();
    let inTransactionRung = false;
    const send = (lsn: bigint, replyRequested: boolean) => {
      (streaming as pg.Client & { connection: { sendCopyFromChunk(chunk: Buffer): void } }).connection.sendCopyFromChunk(
        standbyStatusUpdate(lsn, replyRequested),
      );
      acknowledged = lsn;
    };
    (streaming as pg.Client & { connection: NodeJS.EventEmitter }).connection.on('copyData', ({ chunk }: { chunk: Buffer }) => {
      heardAt = Date.now();
      const message = parseReplicationMessage(chunk);
      if (message.type === 'other') return;
      if (message.walEnd > received) received = message.walEnd;
      if (message.type === 'keepalive') {
        if (message.replyRequested) send(received, false);
        return;
      }
      // pgoutput sends a transaction as Begin, Relation, Insert..., Commit, only once it has
      // committed: one ring per transaction, at its first insert.
      if (message.kind === 'B') inTransactionRung = false;
      else if (message.kind === 'I' && !inTransactionRung) {
        inTransactionRung = true;
        ring();
      }
    });
    streaming.query(`START_REPLICATION SLOT ${name} LOGICAL 0/0 (proto_version '1', publication_names '${options.publication}')`).then(
      () => fail(streaming, new DoorbellUnavailableError('connection', 'the server ended the replication stream')),
      (error: unknown) => fail(streaming, explain(error)),
    );
    slot = name;
    pauseMs = FIRST_PAUSE_MILLISECONDS;
    lastReason = undefined;
    hooks.log.info('doorbell ringing', { slot: name, publication: options.publication });
    tick = setInterval(() => {
      const now = Date.now();
      if (now - heardAt > SILENCE_MILLISECONDS) {
        return fail(streaming, new DoorbellUnavailableError('connection', `the replication connection was silent for ${SILENCE_MILLISECONDS} ms`));
      }
      const ping = now - pingedAt >= PING_MILLISECONDS;
      if (ping) pingedAt = now;
      if (ping || received > acknowledged) send(received, ping);
    }, ACK_MILLISECONDS);
    tick.unref();
    guard = setInterval(() => {
      slotRetainedWalBytes(db, name).then(
        (retained) => {
          if (retained !== null && retained > options.maxRetainedWalBytes) {
            fail(
              streaming,
              new DoorbellUnavailableError(
                'wal_retained',
                `slot ${name} retains ${retained} bytes of WAL (acknowledged ${formatLsn(acknowledged)}), over maxRetainedWalBytes ${options.maxRetainedWalBytes}: dropped`,
              ),
            );
          }
        },
        () => {}, // the relay's own statements report a database that is down
      );
    }, GUARD_MILLISECONDS);
    guard.unref();
    hooks.ring(); // what committed before the stream began is the poll's: look now
  };

  void connect();
  return {
    get slot() {
      return slot;
    },
    async close() {
      closed = true;
      clearTimeout(retryTimer);
      clearTimeout(echo);
      stopTimers();
      const last = client;
      client = undefined;
      slot = undefined;
      if (last) await hangUp(last);
    },
  };
}

/** SQLSTATEs meaning the server will not give this login a doorbell until an operator acts. */
const REASON_BY_SQLSTATE: Record<string, DoorbellUnavailableReason> = {
  '42501': 'privilege', // insufficient_privilege: no REPLICATION attribute (or rds_replication)
  '55000': 'wal_level', // object_not_in_prerequisite_state: logical decoding requires wal_level >= logical
  '53400': 'slot_limit', // configuration_limit_exceeded: all replication slots are in use
  '53300': 'slot_limit', // too_many_connections: max_wal_senders reached
  '42704': 'publication', // undefined_object: the publication was dropped under the stream
};

function explain(error: unknown): DoorbellUnavailableError {
  const code = (error as { code?: unknown } | null)?.code;
  const reason = (typeof code === 'string' ? REASON_BY_SQLSTATE[code] : undefined) ?? 'connection';
  const detail = error instanceof Error ? error.message : String(error);
  const hint = reason === 'privilege' ? ' (the login needs the REPLICATION attribute, or rds_replication on RDS)' : '';
  return new DoorbellUnavailableError(reason, `${detail}${hint}`, { cause: error });
}
