/**
 * The built-in Redis Streams sink (through `ioredis`). Each event is appended with XADD by one Lua
 * script that first looks up the event's dedupe id, and records it with a time to live after the
 * append: a script runs atomically, so a repeat within the dedupe window (a retry after a lost
 * reply, a command ioredis resends after a reconnect) adds nothing and answers with the entry
 * the first delivery made. After the window a repeat is appended again, which is why start()
 * compares the window with the relay's retry horizon.
 *
 * Redis keeps entries only as well as it is configured to: without AOF a restart loses what the
 * relay already counted as delivered, and with an eviction policy memory pressure can drop
 * dedupe records early. start() warns about both when Redis lets it read its configuration.
 *
 * ioredis is imported on first use, not at load time, and is an optional peer dependency.
 */
import type { Redis, RedisOptions } from 'ioredis';
import { z } from 'zod';
import { DeliveryRejectedError, OnceError, SinkMisconfiguredError } from '../../errors.ts';
import { callback, parseOptions } from '../../options.ts';
import { eventEnvelope, type DeliveryContext, type DeliveryEvent, type Sink, type SinkStartInfo } from '../sink.ts';
import { deliveryFailure, lazyClient, missingPeer, redactedUrl, settleWithin } from './broker-delivery.ts';

const DAY_MILLISECONDS = 24 * 60 * 60 * 1_000;

/**
 * KEYS[1] the stream, KEYS[2] the event's dedupe record; ARGV: the window in milliseconds, MAXLEN
 * ('' for none), its operator ('~' or '='), then the entry's field/value pairs. Returns
 * {1, new entry id} or {0, the entry id of the first delivery}.
 *
 * One script, not GET then XADD then SET from the client: between two commands another attempt
 * of the same event (a relay that timed out and retried, a resend after a reconnect) could pass
 * the same check, and the event would be appended twice. The record is written after XADD, so an
 * XADD that fails (a key of another type, out of memory) leaves no record behind to swallow the
 * retry.
 */
const APPEND_ONCE_LUA = `
local first = redis.call('GET', KEYS[2])
if first then return {0, first} end
local command = {'XADD', KEYS[1]}
if ARGV[2] ~= '' then
  table.insert(command, 'MAXLEN')
  table.insert(command, ARGV[3])
  table.insert(command, ARGV[2])
end
table.insert(command, '*')
for i = 4, #ARGV do table.insert(command, ARGV[i]) end
local id = redis.call(unpack(command))
redis.call('SET', KEYS[2], id, 'PX', ARGV[1])
return {1, id}
`;

export interface RedisStreamSinkOptions {
  /** The Redis server, e.g. 'redis://:password@redis.internal:6379/0' (rediss: for TLS). (Required) */
  url: string;
  /**
   * The stream (key) each event is appended to: a name, or a function of the event. (Default: the
   * event's topic, one stream per topic)
   */
  stream?: string | ((event: DeliveryEvent) => string);
  /**
   * Keep each stream at about this many entries: XADD ... MAXLEN ~ n, which trims whole macro
   * nodes (cheap) and so may keep a few more. (Default: no limit)
   */
  maxLen?: number;
  /** Trim to exactly `maxLen` (MAXLEN = n) instead of about it: slower. (Default: false) */
  exactMaxLen?: boolean;
  /**
   * How long a dedupe id is remembered after its event was appended, in milliseconds: a repeat
   * within this window adds nothing. Each event costs one small key for this long. Keep it at
   * least the relay's retry horizon (start() checks). (Default: 86 400 000, i.e. 24 hours)
   */
  dedupeWindowMs?: number;
  /**
   * What start() does when `dedupeWindowMs` is shorter than the relay's retry horizon, so a late
   * retry would be appended again: 'warn' through the relay's warn(), 'refuse' by throwing
   * SinkMisconfiguredError, 'off' nothing. (Default: 'warn')
   */
  dedupeWindowCheck?: 'warn' | 'refuse' | 'off';
  /**
   * Whether start() reads Redis's configuration (CONFIG GET; skipped where it is disabled) and
   * warns when appended entries or dedupe records may be lost: no AOF (a restart loses entries
   * the relay counted as delivered), or an eviction policy other than noeviction under a
   * maxmemory. 'warn' or 'off'. (Default: 'warn')
   */
  configCheck?: 'warn' | 'off';
  /**
   * Prefix of the dedupe records' keys: `<prefix>{<stream's hash slot tag>}:<dedupe id>`, in the
   * stream's hash slot so the script's two keys stay together on a Redis Cluster node.
   * (Default: 'once:dedupe:')
   */
  dedupeKeyPrefix?: string;
  /**
   * Extra options for ioredis: `username`/`password`, `tls`, `connectTimeout`, `retryStrategy`...
   * `url` above wins for what it names. Typed loosely so that pg-once's types load without ioredis
   * installed; for checking, write `{ ... } satisfies RedisOptions` (from 'ioredis').
   * (Default: none)
   */
  redisOptions?: Readonly<Record<string, unknown>>;
  /** How long an append may wait for Redis's answer, in milliseconds, reconnection included. (Default: 5 000) */
  timeoutMs?: number;
}

export const redisStreamSinkOptionsSchema = z
  .object({
    url: z.string().regex(/^rediss?:\/\//u, 'expected a redis:// or rediss:// URL'),
    stream: z.union([z.string().min(1), callback<(event: DeliveryEvent) => string>('expected a stream name or a function (event) => stream')]).optional(),
    maxLen: z.number().int().positive().optional(),
    exactMaxLen: z.boolean().default(false),
    dedupeWindowMs: z.number().int().positive().default(DAY_MILLISECONDS),
    dedupeWindowCheck: z.enum(['warn', 'refuse', 'off']).default('warn'),
    configCheck: z.enum(['warn', 'off']).default('warn'),
    dedupeKeyPrefix: z.string().default('once:dedupe:'),
    redisOptions: z
      .custom<Readonly<Record<string, unknown>>>((value) => typeof value === 'object' && value !== null && !Array.isArray(value), {
        message: 'expected an object of ioredis options',
      })
      .optional(),
    timeoutMs: z.number().int().positive().max(600_000).default(5_000),
  })
  .strict();
type ResolvedRedisStreamSinkOptions = z.output<typeof redisStreamSinkOptionsSchema>;

/** ioredis with the script defined on it (defineCommand adds the method; EVALSHA, EVAL on NOSCRIPT). */
type Client = Redis & { onceAppend(stream: string, dedupeKey: string, ...args: string[]): Promise<[number, string]> };

export function redisStreamSink(options: RedisStreamSinkOptions): Sink {
  const resolved = parseOptions(redisStreamSinkOptionsSchema, options, 'redisStreamSink options');
  const client = lazyClient('redisStreamSink', open);
  let lastConnectionError: unknown;

  /**
   * One client for the sink's life. ioredis reconnects by itself and, by default, resends the
   * commands that were in flight when the connection dropped: safe here, since the script appends
   * an event once however often it runs.
   */
  async function open(): Promise<Client> {
    const { Redis } = await import('ioredis').catch(missingPeer('redisStreamSink', 'ioredis'));
    const redisOptions = resolved.redisOptions as RedisOptions | undefined;
    const redis = new Redis(resolved.url, { connectionName: 'pg-once-relay', ...redisOptions });
    // ioredis logs unhandled 'error' events to the console on every failed reconnect; the error
    // is quoted instead when an append fails.
    redis.on('error', (error: unknown) => {
      lastConnectionError = error;
    });
    redis.on('ready', () => {
      lastConnectionError = undefined;
    });
    redis.defineCommand('onceAppend', { numberOfKeys: 2, lua: APPEND_ONCE_LUA });
    return redis as Client;
  }

  async function start(info: SinkStartInfo): Promise<void> {
    const redis = await client.get();
    let config: Map<string, string>;
    try {
      await settleWithin(redis.ping(), AbortSignal.timeout(resolved.timeoutMs), resolved.timeoutMs);
      config = resolved.configCheck === 'off' ? new Map() : await serverConfig(redis, resolved.timeoutMs);
    } catch (error) {
      // A relay whose start failed does not close its sinks: without this, ioredis would go on
      // reconnecting and keep the process alive.
      void client.forget();
      redis.disconnect();
      throw deliveryFailure('redisStreamSink', `connecting to ${redactedUrl(resolved.url)} failed`, error, lastConnectionError);
    }
    for (const warning of configWarnings(config)) info.warn(warning);
    if (resolved.dedupeWindowCheck === 'off' || info.retryHorizonMs <= resolved.dedupeWindowMs) return;
    const message =
      `pg-once redisStreamSink: dedupe ids are remembered for ${resolved.dedupeWindowMs / 1_000} s (dedupeWindowMs), ` +
      `but the relay may retry an event for up to ${info.retryHorizonMs / 1_000} s; a retry after the window is ` +
      `appended to the stream again, not dropped as a duplicate. Set dedupeWindowMs to at least ${info.retryHorizonMs}, ` +
      "shorten the relay's retries, or set dedupeWindowCheck: 'off'.";
    if (resolved.dedupeWindowCheck === 'refuse') throw new SinkMisconfiguredError(message);
    info.warn(message);
  }

  async function deliver(event: DeliveryEvent, context: DeliveryContext): Promise<void> {
    let stream = '';
    try {
      stream = streamOf(event, resolved);
      context.signal.throwIfAborted();
      const redis = await settleWithin(client.get(), context.signal, resolved.timeoutMs);
      const trim = resolved.maxLen === undefined ? '' : String(resolved.maxLen);
      await settleWithin(
        redis.onceAppend(
          stream,
          dedupeKey(resolved.dedupeKeyPrefix, stream, event.dedupeId),
          String(resolved.dedupeWindowMs),
          trim,
          resolved.exactMaxLen ? '=' : '~',
          ...entryFields(event),
        ),
        context.signal,
        resolved.timeoutMs,
      );
    } catch (error) {
      if (error instanceof OnceError) throw error;
      // An append that lands after the abort is harmless: the retry finds its dedupe record.
      const what = context.signal.aborted ? 'was aborted (timeout or shutdown)' : 'failed';
      throw deliveryFailure('redisStreamSink', `appending event ${event.id} to stream "${stream}" ${what}`, error, lastConnectionError);
    }
  }

  async function close(): Promise<void> {
    const redis = await client.close();
    if (!redis) return;
    // QUIT answers once every earlier reply was read; a client that is not connected has
    // nothing to wait for (and QUIT would sit in its offline queue).
    if (redis.status === 'ready') await redis.quit().catch(() => redis.disconnect());
    else redis.disconnect();
  }

  return Object.assign(deliver, { start, close });
}

function streamOf(event: DeliveryEvent, options: ResolvedRedisStreamSinkOptions): string {
  const stream = options.stream === undefined ? event.topic : typeof options.stream === 'string' ? options.stream : options.stream(event);
  if (typeof stream !== 'string' || stream.length === 0) {
    throw new DeliveryRejectedError(`pg-once redisStreamSink: the stream of event ${event.id} is not a non-empty string.`);
  }
  return stream;
}

/**
 * The dedupe record's key, in the stream's hash slot: Redis Cluster hashes only what is between
 * the first `{` and the next `}` when there is something there, so the record carries the
 * stream's own tag when it has one, else the whole stream name as its tag.
 */
function dedupeKey(prefix: string, stream: string, dedupeId: string): string {
  const open = stream.indexOf('{');
  const close = open === -1 ? -1 : stream.indexOf('}', open + 1);
  const tag = close > open + 1 ? stream.slice(open + 1, close) : stream;
  return `${prefix}{${tag}}:${dedupeId}`;
}

/**
 * The entry's fields: `dedupe_id`, `tenant`, `topic`, `ordering_key` (when set), `headers` (JSON,
 * when any) and `body`, the same JSON envelope the other sinks send.
 */
function entryFields(event: DeliveryEvent): string[] {
  const fields = ['dedupe_id', event.dedupeId, 'tenant', event.tenantId, 'topic', event.topic];
  if (event.orderingKey !== null) fields.push('ordering_key', event.orderingKey);
  if (Object.keys(event.headers).length > 0) fields.push('headers', JSON.stringify(event.headers));
  fields.push('body', JSON.stringify(eventEnvelope(event)));
  return fields;
}

/** The settings configWarnings reads, or none where CONFIG is disabled (managed Redis often does). */
async function serverConfig(redis: Redis, timeoutMs: number): Promise<Map<string, string>> {
  const config = new Map<string, string>();
  for (const name of ['appendonly', 'maxmemory', 'maxmemory-policy']) {
    const reply = await settleWithin(redis.config('GET', name), AbortSignal.timeout(timeoutMs), timeoutMs).catch((error: unknown) => {
      if (error instanceof Error && error.name === 'ReplyError') return [];
      throw error;
    });
    const pairs = reply as string[];
    for (let i = 0; i + 1 < pairs.length; i += 2) config.set(pairs[i]!, pairs[i + 1]!);
  }
  return config;
}

function configWarnings(config: Map<string, string>): string[] {
  const warnings: string[] = [];
  if (config.get('appendonly') === 'no') {
    warnings.push(
      'pg-once redisStreamSink: Redis runs without AOF (appendonly no), so a restart loses stream entries the relay ' +
        'already counted as delivered (all of them with no RDB snapshot, else those since the last one). For no loss, ' +
        'run Redis with appendonly yes and appendfsync always (everysec can lose about a second on a crash).',
    );
  }
  const policy = config.get('maxmemory-policy');
  if (config.has('maxmemory') && config.get('maxmemory') !== '0' && policy !== undefined && policy !== 'noeviction') {
    warnings.push(
      `pg-once redisStreamSink: Redis evicts keys under memory pressure (maxmemory-policy ${policy}): dedupe records ` +
        '(keys with a TTL, the first to go under volatile-* policies) and streams can disappear early, so repeats get ' +
        'appended again or entries are lost. Use maxmemory-policy noeviction for this database.',
    );
  }
  return warnings;
}
