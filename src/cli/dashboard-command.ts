import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dashboardHandler } from '../dashboard/dashboard-handler.ts';
import { InvalidOptionsError } from '../errors.ts';
import type { Command } from './command.ts';
import { databaseUrl } from './database-url.ts';
import { parseFlags } from './parse-flags.ts';
import { readSecretsFile, splitSecrets } from './secret-flags.ts';

const HELP = `Usage: pg-once dashboard [--port <n>] [--host <address>] [--token-file <file>] [--read-only]
                        [--base-path <path>] [--sweep-schedule <cron>] [--database-url <url>]

Serves the operator dashboard until SIGTERM or SIGINT: the outbox backlog by tenant and topic,
delivery latency, dead events (requeue or discard, each recorded with who did it), relays and
sweeps, and per tenant and tool what the idempotency log saw; look up a key.

  --port         (default 4100; 0 picks a free port)
  --host         (default 127.0.0.1) any other address needs a token: without one the
                 dashboard refuses to start, since it shows every tenant's events.
  --token-file   a file holding the token(s), whitespace-separated, each at least 16 characters;
                 ONCE_DASHBOARD_TOKEN holds them otherwise. Make one with \`npx pg-once webhook-secret\`.
  --read-only    pages only: no requeue or discard.
Connect as a login granted this database's relay role (\`pg-once roles\`). Reads DATABASE_URL
unless --database-url is given.`;

const DEFAULT_PORT = 4100;

/** Addresses only this host can reach. */
function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

function usage(path: string, message: string): InvalidOptionsError {
  return new InvalidOptionsError('command line', [{ path: [path], message, code: 'invalid_flag' }]);
}

export const dashboardCommand: Command = {
  summary: 'serve the operator dashboard (backlog, dead events, idempotency log)',
  async run(args) {
    const { values } = parseFlags(args, {
      'database-url': { type: 'string' },
      port: { type: 'string' },
      host: { type: 'string' },
      'token-file': { type: 'string' },
      'read-only': { type: 'boolean' },
      'base-path': { type: 'string' },
      'sweep-schedule': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    });
    if (values.help) {
      console.log(HELP);
      return;
    }
    const host = values.host ?? '127.0.0.1';
    const port = values.port === undefined ? DEFAULT_PORT : Number(values.port);
    if (!Number.isInteger(port) || port < 0 || port > 65_535) throw usage('port', 'expected a port number from 0 to 65535');
    const tokens =
      values['token-file'] !== undefined ? await readSecretsFile('token-file', values['token-file']) : splitSecrets(process.env.ONCE_DASHBOARD_TOKEN ?? '');
    if (tokens.length === 0 && !isLoopbackHost(host)) {
      throw usage(
        'host',
        `refusing to serve every tenant's events on ${host} without a token: give --token-file <file> (or ONCE_DASHBOARD_TOKEN), or listen on 127.0.0.1`,
      );
    }
    const handler = dashboardHandler({
      database: databaseUrl(values['database-url']),
      ...(tokens.length > 0 ? { tokens } : { allowUnauthenticatedLoopback: true }),
      readOnly: values['read-only'] === true,
      ...(values['base-path'] === undefined ? {} : { basePath: values['base-path'] }),
      ...(values['sweep-schedule'] === undefined ? {} : { sweepSchedule: values['sweep-schedule'] }),
    });
    const server = createServer((request, response) => void handler(request, response));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, resolve);
    });
    const address = server.address() as AddressInfo;
    const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    console.log(
      `pg-once dashboard on http://${shown}:${address.port}${values['base-path'] ?? ''}/` +
        (tokens.length > 0 ? ' (token required)' : ' (loopback only, no token)') +
        (values['read-only'] ? ' read-only' : ''),
    );
    await new Promise<void>((resolve) => {
      const stop = () => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        server.close(() => resolve());
        server.closeAllConnections();
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
    await handler.close();
  },
};
