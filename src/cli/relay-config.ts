/**
 * What `pg-once relay` runs: relay options from a config file and/or flags.
 * - A JS/TS module (`.js`, `.mjs`, `.ts`) whose default export is the relay options (or a
 *   function returning them): any sink, including your own functions.
 * - A JSON file with declarative built-in sinks:
 *   `{ "sinks": { "orders.*": { "http": { "url": "...", "secret": "whsec_..." } },
 *                 ">": { "nats": { "servers": "nats://...", "subject": "events" } } },
 *      "concurrency": 16 }`
 * - Flags for the common single-sink case: `--http <url>` with its secret from
 *   `--webhook-secret-file <path>` or ONCE_WEBHOOK_SECRET (`--webhook-secret <secret>` works but
 *   warns: the command line is visible to other users), or `--nats <servers> --nats-subject
 *   <subject>` (all topics).
 */
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { InvalidOptionsError } from '../errors.ts';
import type { RelayOptions } from '../outbox/relay-options.ts';
import type { Sink } from '../outbox/sink.ts';
import { httpSink } from '../outbox/sinks/http-sink.ts';
import { natsSink } from '../outbox/sinks/nats-sink.ts';
import { readSecretsFile, splitSecrets, warnSecretOnCommandLine } from './secret-flags.ts';

export interface RelayFlags {
  config?: string | undefined;
  http?: string | undefined;
  webhookSecret?: string | undefined;
  webhookSecretFile?: string | undefined;
  nats?: string | undefined;
  natsSubject?: string | undefined;
  concurrency?: string | undefined;
  maxAttempts?: string | undefined;
  /** The relay's `pooler` option; startRelay validates it. */
  pooler?: string | undefined;
  /** `logical`: the logical replication doorbell (with the config file's settings, if any); `poll`: none. */
  wakeup?: string | undefined;
}

function usageError(message: string): InvalidOptionsError {
  return new InvalidOptionsError('command line', [{ path: [], message, code: 'invalid_flag' }]);
}

/** A declarative sink of a JSON config: `{ "http": {...} }` or `{ "nats": {...} }`. */
function declaredSink(pattern: string, spec: unknown): Sink {
  if (typeof spec === 'function') return spec as Sink;
  const { http, nats } = (spec ?? {}) as { http?: unknown; nats?: unknown };
  if (http !== undefined && nats === undefined) return httpSink(http as never);
  if (nats !== undefined && http === undefined) return natsSink(nats as never);
  throw usageError(`sink "${pattern}": expected { "http": {...} } or { "nats": {...} }`);
}

/** The --http sink's secrets: the file, else the flag (with a warning), else ONCE_WEBHOOK_SECRET. */
async function webhookSecrets(flags: RelayFlags): Promise<string[]> {
  if (flags.webhookSecretFile !== undefined && flags.webhookSecret !== undefined) {
    throw usageError('pass --webhook-secret-file or --webhook-secret, not both');
  }
  if (flags.webhookSecretFile !== undefined) return readSecretsFile('webhook-secret-file', flags.webhookSecretFile);
  if (flags.webhookSecret !== undefined) {
    warnSecretOnCommandLine('webhook-secret', '--webhook-secret-file or ONCE_WEBHOOK_SECRET');
    return [flags.webhookSecret];
  }
  const secrets = splitSecrets(process.env.ONCE_WEBHOOK_SECRET ?? '');
  if (secrets.length === 0) {
    throw usageError('--http needs a signing secret: --webhook-secret-file <path> or ONCE_WEBHOOK_SECRET (make one with `npx pg-once webhook-secret`)');
  }
  return secrets;
}

export async function loadRelayConfig(flags: RelayFlags): Promise<Partial<RelayOptions>> {
  let config: Record<string, unknown> = {};
  if (flags.config) {
    const path = resolve(flags.config);
    if (path.endsWith('.json')) {
      config = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
    } else {
      const module = (await import(pathToFileURL(path).href)) as { default?: unknown };
      const exported = typeof module.default === 'function' ? await (module.default as () => unknown)() : module.default;
      if (typeof exported !== 'object' || exported === null) throw usageError(`${flags.config} must default-export the relay options`);
      config = { ...(exported as Record<string, unknown>) };
    }
    if (config.sinks && typeof config.sinks === 'object') {
      config.sinks = Object.fromEntries(Object.entries(config.sinks).map(([pattern, spec]) => [pattern, declaredSink(pattern, spec)]));
    }
  }
  const sinks: Record<string, Sink> = { ...((config.sinks as Record<string, Sink> | undefined) ?? {}) };
  if (flags.http) {
    sinks['>'] = httpSink({ url: flags.http, secret: await webhookSecrets(flags) });
  } else if (flags.webhookSecret !== undefined || flags.webhookSecretFile !== undefined) {
    throw usageError('--webhook-secret-file and --webhook-secret go with --http');
  }
  if (flags.nats) {
    // nats://user:pass@host or nats://token@host: credentials, as visible as any other flag.
    if (flags.nats.includes('@')) warnSecretOnCommandLine('nats', "a --config file (the sink's connection options)");
    if (!flags.natsSubject) throw usageError('--nats needs --nats-subject');
    sinks['>'] = natsSink({ servers: flags.nats.split(','), subject: flags.natsSubject });
  }
  if (Object.keys(sinks).length === 0) throw usageError('no sink: pass --config <file>, --http <url> or --nats <servers>');
  const numeric = (name: string, value: string | undefined) => {
    if (value === undefined) return undefined;
    const number = Number(value);
    if (!Number.isInteger(number)) throw usageError(`--${name} expects an integer`);
    return number;
  };
  if (flags.wakeup !== undefined && flags.wakeup !== 'logical' && flags.wakeup !== 'poll') throw usageError('--wakeup expects logical or poll');
  const { wakeup: configured, ...rest } = config;
  const wakeup = flags.wakeup === 'poll' ? undefined : flags.wakeup === 'logical' ? (configured ?? { logicalReplication: {} }) : configured;
  const concurrency = numeric('concurrency', flags.concurrency);
  const maxAttempts = numeric('max-attempts', flags.maxAttempts);
  return {
    ...(rest as Partial<RelayOptions>),
    sinks,
    ...(concurrency === undefined ? {} : { concurrency }),
    ...(maxAttempts === undefined ? {} : { maxAttempts }),
    ...(flags.pooler === undefined ? {} : { pooler: flags.pooler as RelayOptions['pooler'] }),
    ...(wakeup === undefined ? {} : { wakeup: wakeup as RelayOptions['wakeup'] }),
  };
}
