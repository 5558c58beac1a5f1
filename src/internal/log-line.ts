/**
 * One log record as one line of text, in either of the two formats `pg-once relay --log-format`
 * offers. `json` is pino's default shape, so that pino's tooling (pino-pretty, transports) and any
 * collector that already reads pino lines takes ours unchanged; `text` is for a human at a
 * terminal. Either way one record is one line: a value holding a newline (an error message, a
 * receiver's answer) is escaped, never printed raw, so one line can never pose as two.
 */

/** pino's numeric levels: what its tooling filters and colours by. */
export const LOG_LEVELS = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 } as const;
export type LogLevel = keyof typeof LOG_LEVELS;
export type LogFormat = 'json' | 'text';
export const LOG_FORMATS: readonly LogFormat[] = ['json', 'text'];

export interface LogRecord {
  level: LogLevel;
  /** Epoch milliseconds, as pino's `time`. */
  time: number;
  message: string;
  /** The line's own fields; `err` (or any value) holding an Error is serialized as pino does. */
  fields: Readonly<Record<string, unknown>>;
  /** Fields every line of a logger carries, written first (pino's `pid`, `hostname`, `name`). */
  base: Readonly<Record<string, unknown>>;
}

/** pino's standard error serializer, in short: type, message, stack, code, and the cause chain. */
function serializeError(error: Error, depth = 0): Record<string, unknown> {
  const serialized: Record<string, unknown> = { type: error.name, message: error.message, stack: error.stack };
  const code = (error as { code?: unknown }).code;
  if (code !== undefined) serialized.code = code;
  // A cause chain can be long (or a cycle); three levels name the root of every error we raise.
  if (error.cause instanceof Error && depth < 3) serialized.cause = serializeError(error.cause, depth + 1);
  return serialized;
}

function jsonValue(_key: string, value: unknown): unknown {
  if (value instanceof Error) return serializeError(value);
  if (typeof value === 'bigint') return value.toString();
  return value;
}

/** `{"level":30,"time":...,"pid":...,"hostname":...,...fields,"msg":...}`: pino's order. */
function jsonLine(record: LogRecord): string {
  const object = { level: LOG_LEVELS[record.level], time: record.time, ...record.base, ...record.fields, msg: record.message };
  try {
    return JSON.stringify(object, jsonValue);
  } catch (error) {
    // A field that cannot be serialized (a cycle) must not lose the line, nor throw into the relay.
    return JSON.stringify({ level: object.level, time: object.time, ...record.base, msg: record.message, logError: String(error) });
  }
}

/** A value as logfmt writes it: bare when it is one plain token, else quoted with JSON escapes. */
function textValue(value: unknown): string {
  if (value instanceof Error) return JSON.stringify(`${value.name}: ${value.message}`);
  if (typeof value === 'string') return /^[^\s"=\\\p{Cc}]+$/u.test(value) ? value : JSON.stringify(value);
  if (value === undefined || value === null || typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') {
    return String(value);
  }
  let json: string;
  try {
    json = JSON.stringify(value, jsonValue);
  } catch {
    json = String(value);
  }
  return /\s/.test(json) ? JSON.stringify(json) : json;
}

/** `key=value key2="a b"`: the fields of a record as text, without time or level. */
export function textFields(fields: Readonly<Record<string, unknown>>): string {
  return Object.entries(fields)
    .filter(([, value]) => value !== undefined)
    .map(([key, value]) => `${key}=${textValue(value)}`)
    .join(' ');
}

/** `2025-01-31T12:00:00.000Z WARN  pg-once: delivery failed, retrying eventId=42 ...`. */
function textLine(record: LogRecord): string {
  const name = typeof record.base.name === 'string' ? `${record.base.name}: ` : '';
  const fields = textFields(record.fields);
  // The message is ours, but may quote what a sink or a driver said: escaped like any value.
  const message = record.message.replace(/\p{Cc}/gu, (character) => JSON.stringify(character).slice(1, -1));
  return `${new Date(record.time).toISOString()} ${record.level.toUpperCase().padEnd(5)} ${name}${message}${fields ? ` ${fields}` : ''}`;
}

/** The record as one line, newline included. */
export function formatLogLine(format: LogFormat, record: LogRecord): string {
  return `${format === 'json' ? jsonLine(record) : textLine(record)}\n`;
}
