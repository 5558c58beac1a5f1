/**
 * A logger of pino's shape that writes one formatted line per record: what `pg-once relay` logs
 * with (to stdout, `--log-format json|text`), and the relay's default when the application gives
 * no logger (text, to stderr, where the relay's warnings always went). Not pino itself: the CLI
 * should not need a dependency to print lines, and an application that wants pino passes its own.
 */
import { hostname } from 'node:os';
import type { StructuredRelayLogger, RelayLogFields } from '../outbox/relay-logger.ts';
import { formatLogLine, LOG_LEVELS, type LogFormat, type LogLevel } from './log-line.ts';

export interface LineLoggerOptions {
  format: LogFormat;
  /** Receives each line, newline included. */
  write(line: string): void;
  /** Records below this level are dropped. (Default: 'info') */
  level?: LogLevel;
  /** Written on every line, as pino's `name`. (Default: 'pg-once') */
  name?: string;
}

export function lineLogger(options: LineLoggerOptions): StructuredRelayLogger {
  const threshold = LOG_LEVELS[options.level ?? 'info'];
  // pino's base bindings, read once as pino does.
  const base = { pid: process.pid, hostname: hostname(), name: options.name ?? 'pg-once' };
  const at = (level: LogLevel) => (fields: RelayLogFields, message: string) => {
    if (LOG_LEVELS[level] < threshold) return;
    options.write(formatLogLine(options.format, { level, time: Date.now(), message, fields, base }));
  };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}
