import { startRelay } from '../outbox/start-relay.ts';
import type { Command } from './command.ts';
import { databaseUrl } from './database-url.ts';
import { parseFlags } from './parse-flags.ts';
import { loadRelayConfig } from './relay-config.ts';

const HELP = `Usage: pg-once relay [--database-url <url>] [--config <file>]
                    [--http <url> --webhook-secret <secret>] [--nats <servers> --nats-subject <subject>]
                    [--concurrency <n>] [--max-attempts <n>]

Delivers outbox events to sinks until SIGTERM or SIGINT, then finishes or releases in-flight
deliveries and exits. Connect as a role granted once_relay. DATABASE_URL is read when
--database-url is not given (or when the config file gives no connectionString).
--config: a .js/.mjs/.ts module default-exporting relay options, or a .json file with built-in
sinks, e.g. {"sinks": {"orders.*": {"http": {"url": "https://...", "secret": "whsec_..."}}}}.`;

export const relayCommand: Command = {
  summary: 'deliver outbox events to sinks (HTTP webhooks, NATS JetStream, your own)',
  async run(args) {
    const { values } = parseFlags(args, {
      'database-url': { type: 'string' },
      config: { type: 'string', short: 'c' },
      http: { type: 'string' },
      'webhook-secret': { type: 'string' },
      nats: { type: 'string' },
      'nats-subject': { type: 'string' },
      concurrency: { type: 'string' },
      'max-attempts': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    });
    if (values.help) {
      console.log(HELP);
      return;
    }
    const config = await loadRelayConfig({
      config: values.config,
      http: values.http,
      webhookSecret: values['webhook-secret'],
      nats: values.nats,
      natsSubject: values['nats-subject'],
      concurrency: values.concurrency,
      maxAttempts: values['max-attempts'],
    });
    const connection =
      config.pool || (config.connectionString && !values['database-url'])
        ? {}
        : { connectionString: databaseUrl(values['database-url']) };
    const relay = await startRelay({ ...config, ...connection, sinks: config.sinks!, handleSignals: true });
    console.log(`pg-once relay ${relay.id}: delivering (Ctrl-C to stop)`);
  },
};
