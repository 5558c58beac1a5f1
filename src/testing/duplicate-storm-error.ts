/**
 * What a duplicate storm saw, and the error it throws when a property failed. A plain Error with
 * the report attached, not an assertion library's: vitest, node:test and jest all fail a test on
 * it and print its message, which carries the report.
 */

export interface DuplicateStormReport<T = unknown> {
  /** Handler invocations, retries after a busy answer included. */
  calls: number;
  /** Each invocation by how it ended. */
  outcomes: {
    /** Answered after reaching `copy.inside()`: it ran fn (exactly one should). */
    executed: number;
    /** Answered without reaching `copy.inside()`: a replay of the stored result. */
    replayed: number;
    /** Refused as busy (409 IDEMPOTENCY_IN_PROGRESS), then retried. */
    busy: number;
    /** Killed mid-call by the storm, before its commit. */
    killed: number;
    /** Failed with any other error (see `errors`). */
    failed: number;
  };
  /** Copies sent, by why. */
  copies: {
    /** Killed mid-call, one after another, before the burst. */
    kill: number;
    /** Fired at once while the first call was held inside its transaction. */
    concurrent: number;
    /** Sent by a client that gave up waiting while the first call still ran. */
    timeoutRetry: number;
    /** One more after everything settled. */
    late: number;
  };
  /** The distinct answers (deep-equal ones counted once), in the order first seen. */
  distinctResults: T[];
  /** What `countEffects()` returned (undefined when only `checkEffects` was given). */
  effects: number | undefined;
  expectedEffects: number;
  /** The errors of failed invocations, and the one `checkEffects` threw. */
  errors: unknown[];
  /** The properties that failed, each with what was seen; empty when the storm passed. */
  failures: string[];
}

export class DuplicateStormError<T = unknown> extends Error {
  override readonly name = 'DuplicateStormError';
  readonly report: DuplicateStormReport<T>;

  constructor(report: DuplicateStormReport<T>) {
    super(`duplicate storm failed: ${report.failures.join('; ')}\n${formatStormReport(report)}`);
    this.report = report;
  }
}

/** The report as a few lines of text, for the error message. */
function formatStormReport(report: DuplicateStormReport<unknown>): string {
  const { outcomes: o, copies: c } = report;
  const lines = [
    `  calls ${report.calls}: executed ${o.executed}, replayed ${o.replayed}, busy ${o.busy}, killed ${o.killed}, failed ${o.failed}`,
    `  copies: ${c.kill} killed mid-call, ${c.concurrent} concurrent, ${c.timeoutRetry} retried after a timeout, ${c.late} late`,
    `  distinct results (${report.distinctResults.length}): ${report.distinctResults.map(show).join(' | ') || '(none)'}`,
    `  effects: ${report.effects === undefined ? 'checked by checkEffects' : `${report.effects} (expected ${report.expectedEffects})`}`,
  ];
  if (report.errors.length > 0) lines.push(`  first error: ${describe(report.errors[0])}`);
  return lines.join('\n');
}

function show(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 200 ? `${text.slice(0, 200)}...` : text;
}

function describe(error: unknown): string {
  if (!(error instanceof Error)) return show(error);
  const code = (error as { code?: unknown }).code;
  return `${error.name}${typeof code === 'string' ? ` [${code}]` : ''}: ${error.message}`;
}
