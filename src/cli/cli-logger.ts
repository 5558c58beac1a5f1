/**
 * The logger `pg-once relay` runs with: one line per record on stdout, `--log-format text` (the
 * default) or `json` (pino's shape, for collectors and pino's tooling), unless the --config
 * module brings a logger of its own.
 *
 * Text is the default whatever stdout is, rather than json when it is not a terminal: a format
 * that changes with where the output goes surprises whoever pipes the relay into `less` or
 * `grep`, and a deployment that ships logs says `--log-format json` once.
 */
import { InvalidOptionsError } from '../errors.ts';
import { lineLogger } from '../internal/line-logger.ts';
import { LOG_FORMATS, type LogFormat } from '../internal/log-line.ts';
import type { RelayLogger } from '../outbox/relay-logger.ts';

function usageError(message: string): InvalidOptionsError {
  return new InvalidOptionsError('command line', [{ path: ['log-format'], message, code: 'invalid_flag' }]);
}

export function cliLogger(format: string | undefined, configured: RelayLogger | undefined): RelayLogger {
  if (format !== undefined && !LOG_FORMATS.includes(format as LogFormat)) {
    throw usageError(`--log-format expects ${LOG_FORMATS.join(' or ')} (got ${JSON.stringify(format)})`);
  }
  if (configured !== undefined) {
    if (format !== undefined) throw usageError('the --config module has a logger of its own: pass --log-format or a logger, not both');
    return configured;
  }
  // Synchronous on a pipe or a file (Linux), so the stop line is out before the process exits.
  return lineLogger({ format: (format as LogFormat | undefined) ?? 'text', write: (line) => void process.stdout.write(line) });
}
