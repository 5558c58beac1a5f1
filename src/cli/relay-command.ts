import { InvalidOptionsError } from '../errors.ts';
import { startRelay } from '../outbox/start-relay.ts';
import { cliLogger } from './cli-logger.ts';
import { drainOnceCommand } from './drain-once-command.ts';
import type { Command } from './command.ts';
import { databaseUrl } from './database-url.ts';
import { parseFlags } from './parse-flags.ts';
import { loadRelayConfig } from './relay-config.ts';

const HELP = `Usage: pg-once relay [--config <file>] [--http <url> [--webhook-secret-file <file>]]
                    [--nats <servers> --nats-subject <subject>] [--concurrency <n>] [--max-attempts <n>]
                    [--log-format text|json] [--pooler none|session|transaction] [--wakeup logical|poll]
                    [--once [--deadline <ms>] [--max <n>] [--json]]

Delivers outbox events to sinks until SIGTERM or SIGINT, then finishes or releases in-flight
deliveries and exits. Connect as a login granted this database's relay role (\`pg-once roles\`).

Secrets stay off the command line (other users of the host can read it with ps):
  DATABASE_URL            the connection string (or the config file's connectionString).
                          --database-url <url> also works, and warns if the URL holds a password.
  ONCE_WEBHOOK_SECRET     the --http sink's signing secret; several, space-separated, during a
                          rotation (every delivery is signed with each).
  --webhook-secret-file   a file holding the secret(s), whitespace-separated; wins over the variable.
                          --webhook-secret <secret> also works, with a warning.
Make a secret with \`npx pg-once webhook-secret\` (whsec_ + 32 random bytes, base64); secrets
shorter than 16 bytes are refused.

--config: a .js/.mjs/.ts module default-exporting relay options, or a .json file with built-in
sinks, e.g. {"sinks": {"orders.*": {"http": {"url": "https://...", "secret": "whsec_..."}}}}.
HTTP deliveries are retried on every answer but 2xx and 410 Gone (then the event is dead).

--log-format: one line per record on stdout, \`text\` (the default) or \`json\` (pino's shape:
{"level":30,"time":<ms>,"pid":..,"hostname":..,"name":"pg-once",...fields,"msg":..}). Logged: start
with the settings, stop with counts, retries with their reason and dead events (both at most a
few lines per topic every 10 s, with the count of those left out), and the relay's own trouble.

--pooler: the pool mode of PgBouncer (or another pooler) between the relay and Postgres. Behind
one the relay sends no session settings at connect (give its login statement_timeout and
jit = off with ALTER ROLE ... SET); in transaction mode it also uses no named statements and no
LISTEN (it polls). Statement mode cannot work.

--wakeup logical: wake on each committed outbox insert, read from a logical replication stream
(a temporary slot on the publication once_outbox_doorbell), instead of waiting for the next poll;
writers pay nothing for it. Needs wal_level = logical and a login with REPLICATION (rds_replication
on RDS); without them the relay logs DOORBELL_UNAVAILABLE and polls. A config file's
"wakeup": {"logicalReplication": {...}} sets slotPrefix, publication, maxRetainedWalBytes and a
direct connectionString (required behind a pooler). --wakeup poll turns it off.

--once: for a cron (Vercel, Lambda, a CronJob): deliver what is due within --deadline (default
10000 ms), at most --max deliveries, hand back the rest and exit 0 with the counts (delivered,
failed, dead, released); non-zero only when the database or the configuration fails. Safe to run
from many invocations at once. No sweeps: schedule \`pg-once sweep\` too.`;

export const relayCommand: Command = {
  summary: 'deliver outbox events to sinks (HTTP webhooks, NATS JetStream, your own)',
  async run(args) {
    const { values } = parseFlags(args, {
      'database-url': { type: 'string' },
      config: { type: 'string', short: 'c' },
      http: { type: 'string' },
      'webhook-secret': { type: 'string' },
      'webhook-secret-file': { type: 'string' },
      nats: { type: 'string' },
      'nats-subject': { type: 'string' },
      concurrency: { type: 'string' },
      'max-attempts': { type: 'string' },
      'log-format': { type: 'string' },
      pooler: { type: 'string' },
      wakeup: { type: 'string' },
      once: { type: 'boolean' },
      deadline: { type: 'string' },
      max: { type: 'string' },
      json: { type: 'boolean' },
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
      webhookSecretFile: values['webhook-secret-file'],
      nats: values.nats,
      natsSubject: values['nats-subject'],
      concurrency: values.concurrency,
      maxAttempts: values['max-attempts'],
      pooler: values.pooler,
      wakeup: values.wakeup,
    });
    const connection = config.pool || (config.connectionString && !values['database-url']) ? {} : { connectionString: databaseUrl(values['database-url']) };
    if (!values.once && (values.deadline !== undefined || values.max !== undefined || values.json)) {
      throw new InvalidOptionsError('command line', [{ path: [], message: '--deadline, --max and --json go with --once', code: 'invalid_flag' }]);
    }
    const logger = cliLogger(values['log-format'], config.logger);
    if (values.once) return drainOnceCommand({ ...config, ...connection, logger }, values);
    // The relay's start line says it is delivering, with its id and settings.
    await startRelay({ ...config, ...connection, sinks: config.sinks!, handleSignals: true, logger });
  },
};
