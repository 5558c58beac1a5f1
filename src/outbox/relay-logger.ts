/**
 * What the relay logs to. The shape is pino's (fields first, then the message), so a pino logger,
 * or a child of one, is passed as it is, and so is any logger built to the same shape (bunyan's
 * methods take the same arguments). The relay's first shape, message-first warn and error, is
 * still accepted: a logger without an `info` method is called that way.
 */

/**
 * A log line's fields: JSON values, and `err` holding an Error (pino serializes it with its
 * standard serializer: type, message, stack).
 */
export type RelayLogFields = Record<string, unknown>;

/** A pino-compatible logger: `pino()`, `pino().child({ ... })`, or anything of that shape. */
export interface StructuredRelayLogger {
  /** Start (with the relay's settings) and stop (with its counts). */
  info(fields: RelayLogFields, message: string): void;
  /** Retries with their reason (rate-limited per topic), connections lost, and other trouble the relay gets over by itself. */
  warn(fields: RelayLogFields, message: string): void;
  /** Dead events, and claims or settles that fail (the database is unreachable, a statement times out). */
  error(fields: RelayLogFields, message: string): void;
  /** Not used today; part of the shape so that a pino logger matches it as a whole. */
  debug?(fields: RelayLogFields, message: string): void;
}

/**
 * The relay's first logger shape, still accepted: warnings and errors only, each line as one
 * string with its fields written out (`key=value`). Prefer {@link StructuredRelayLogger}.
 */
export interface MessageRelayLogger {
  warn(message: string): void;
  /** `error` is the Error behind the line, when there is one. */
  error(message: string, error?: unknown): void;
}

/** Either shape: a logger with an `info` method is structured, one without is message-first. */
export type RelayLogger = StructuredRelayLogger | MessageRelayLogger;

export function isStructuredLogger(logger: RelayLogger): logger is StructuredRelayLogger {
  return typeof (logger as Partial<StructuredRelayLogger>).info === 'function';
}
