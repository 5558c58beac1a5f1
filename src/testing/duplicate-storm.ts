/**
 * duplicateStorm(): sends one call many times, the ways duplicates reach a tool handler in
 * production, and asserts that it behaved as if it ran once: one effect, and the same answer to
 * every copy. In this order, so that each part meets the call still uncommitted:
 *   1. kills: a copy executes and dies inside its transaction, before its commit (`kills` times);
 *      its client's retry is the next part's first copy.
 *   2. the burst: `copies` copies at once. The first to get inside its transaction is held there,
 *      a slow call: its client gives up every `timeoutMs` and sends another copy (`timeouts`
 *      times) while it still runs, and `holdMs` later it is let go and commits. Copies refused as
 *      busy (409) are sent again, as a client would.
 *   3. one late copy, after everything settled: it must replay.
 * The storm knows where a copy is only through `copy.inside()`, which the handler calls inside
 * runIdempotent's fn: that is where it holds and kills, and how it tells executions (which reached
 * it) from replays (which did not).
 */
import { AsyncResource } from 'node:async_hooks';
import { isDeepStrictEqual } from 'node:util';
import { InvalidOptionsError } from '../errors.ts';
import { sleep } from '../internal/sleep.ts';
import { DuplicateStormError, type DuplicateStormReport } from './duplicate-storm-error.ts';
import { type DuplicateStormOptions, parseStormOptions } from './duplicate-storm-options.ts';
import { CopyKilledError, terminateBackendOf } from './kill-copy.ts';

export type StormCopyKind = 'kill' | 'concurrent' | 'timeout-retry' | 'late';

/** What each invocation of the handler is given. */
export interface StormCopy {
  /** Which copy this is, from 1, in the order sent. */
  readonly copy: number;
  /** Which try of this copy, from 1: a copy refused as busy is sent again. */
  readonly attempt: number;
  /** Why it was sent. */
  readonly kind: StormCopyKind;
  /**
   * Call it inside runIdempotent's fn, after the handler's writes, passing fn's transaction. The
   * storm holds the executing copy there and kills copies there; a copy that reaches it ran fn.
   */
  inside(tx?: unknown): Promise<void>;
}

export type StormHandler<T> = (copy: StormCopy) => Promise<T>;

/** The client's pause before resending a busy copy, when the refusal names none. */
const DEFAULT_RETRY_AFTER_MILLISECONDS = 50;

/**
 * Sends `handler` as duplicates (see the file comment) and resolves with the report when the
 * effects are as expected, every copy got the same answer, none failed and (when copies reach
 * `copy.inside()`) exactly one answered copy ran fn. Otherwise throws DuplicateStormError with
 * the report. Give every storm a key of its own: a key already completed would only replay.
 */
export async function duplicateStorm<T>(handler: StormHandler<T>, options: DuplicateStormOptions): Promise<DuplicateStormReport<T>> {
  if (typeof handler !== 'function') {
    throw new InvalidOptionsError('duplicateStorm', [{ path: ['handler'], message: 'expected a function (copy) => Promise<result>', code: 'invalid_type' }]);
  }
  const opts = parseStormOptions(options);
  const isBusy = opts.isBusy ?? isRetryable;
  const report: DuplicateStormReport<T> = {
    calls: 0,
    outcomes: { executed: 0, replayed: 0, busy: 0, killed: 0, failed: 0 },
    copies: { kill: 0, concurrent: 0, timeoutRetry: 0, late: 0 },
    distinctResults: [],
    effects: undefined,
    expectedEffects: opts.expectedEffects,
    errors: [],
    failures: [],
  };
  let copies = 0;
  let insideReached = 0;
  // The terminating connection's refusal: the storm's setup failing, thrown as it is, not counted.
  let setupError: unknown;
  let held: Promise<void> | undefined;
  const timeoutRetries: Promise<void>[] = [];

  // The first copy to get inside is the slow call the others meet in progress; a second one
  // (only a handler that is not idempotent lets one in) waits for the same release. Bound to the
  // storm's own async context: started from inside the held copy's fn, the retries would inherit
  // its call context, and pg-once would take them for a re-entrant call of the same key.
  const release = AsyncResource.bind(async (): Promise<void> => {
    for (let retry = 0; retry < opts.timeouts; retry += 1) {
      await sleep(opts.timeoutMs);
      timeoutRetries.push(send('timeout-retry'));
    }
    await sleep(opts.holdMs);
  });
  const hold = (): Promise<void> => {
    held ??= release();
    return held;
  };

  const send = async (kind: StormCopyKind): Promise<void> => {
    const copy = ++copies;
    report.copies[kind === 'timeout-retry' ? 'timeoutRetry' : kind] += 1;
    for (let attempt = 1; ; attempt += 1) {
      let reached = false;
      let killed = false;
      const context: StormCopy = {
        copy,
        attempt,
        kind,
        async inside(tx?: unknown) {
          reached = true;
          insideReached += 1;
          if (kind === 'kill') {
            if (opts.kill !== 'throw') {
              try {
                await terminateBackendOf(tx, opts.kill);
              } catch (error) {
                setupError = error;
                throw error;
              }
            }
            killed = true;
            throw new CopyKilledError(`pg-once duplicateStorm: copy ${copy} killed mid-call, before its commit`);
          }
          if (kind !== 'late') await hold();
        },
      };
      report.calls += 1;
      try {
        const value = await handler(context);
        if (reached) report.outcomes.executed += 1;
        else report.outcomes.replayed += 1;
        if (!report.distinctResults.some((seen) => isDeepStrictEqual(seen, value))) report.distinctResults.push(value);
        return;
      } catch (error) {
        if (setupError !== undefined) throw setupError;
        if (killed) {
          report.outcomes.killed += 1;
          return;
        }
        if (!reached && isBusy(error) && attempt <= opts.maxBusyRetries) {
          report.outcomes.busy += 1;
          await sleep(Math.min(retryAfter(error), opts.maxRetryAfterMs));
          continue;
        }
        report.outcomes.failed += 1;
        report.errors.push(error);
        return;
      }
    }
  };

  for (let kill = 0; kill < opts.kills; kill += 1) {
    const [reachedBefore, failedBefore] = [insideReached, report.outcomes.failed];
    await send('kill');
    // A copy that failed before it got inside is reported as a failure; one that answered
    // without getting inside means the storm cannot kill anything.
    if (insideReached === reachedBefore && report.outcomes.failed === failedBefore) {
      throw needsInside('kills', 'the copy to be killed answered without reaching copy.inside()');
    }
  }

  let next = 0;
  const sender = async () => {
    while (next < opts.copies) {
      next += 1;
      await send('concurrent');
    }
  };
  await Promise.all(Array.from({ length: Math.min(opts.concurrency, opts.copies) }, sender));
  await held;
  await Promise.all(timeoutRetries);
  if (opts.timeouts > 0 && insideReached === 0 && report.outcomes.failed === 0) {
    throw needsInside('timeouts', 'no copy reached copy.inside(), so none could be held while a client retried');
  }

  await send('late');

  await judge(report, opts, insideReached > 0);
  if (report.failures.length > 0) throw new DuplicateStormError(report);
  return report;
}

async function judge<T>(report: DuplicateStormReport<T>, opts: ReturnType<typeof parseStormOptions>, inside: boolean): Promise<void> {
  const { failures } = report;
  if (opts.countEffects) {
    report.effects = Number(await opts.countEffects());
    if (report.effects !== opts.expectedEffects) {
      failures.push(`one effect: countEffects() returned ${report.effects}, expected ${opts.expectedEffects}`);
    }
  }
  if (opts.checkEffects) {
    try {
      if ((await opts.checkEffects()) === false) failures.push('one effect: checkEffects() returned false');
    } catch (error) {
      report.errors.push(error);
      failures.push(`one effect: checkEffects() threw ${(error as Error)?.message ?? String(error)}`);
    }
  }
  if (report.distinctResults.length === 0) failures.push('equal answers: no copy was answered');
  if (report.distinctResults.length > 1) failures.push(`equal answers: the copies got ${report.distinctResults.length} different results`);
  if (report.outcomes.failed > 0) failures.push(`no failures: ${report.outcomes.failed} call(s) failed`);
  // Without copy.inside() the storm cannot tell an execution from a replay.
  if (inside && report.outcomes.executed !== 1) {
    failures.push(`one execution: ${report.outcomes.executed} answered copies ran fn (reached copy.inside()), expected 1`);
  }
}

function isRetryable(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { retryable?: unknown }).retryable === true;
}

function retryAfter(error: unknown): number {
  const after = typeof error === 'object' && error !== null ? (error as { retryAfterMs?: unknown }).retryAfterMs : undefined;
  return typeof after === 'number' && Number.isFinite(after) ? Math.max(after, 1) : DEFAULT_RETRY_AFTER_MILLISECONDS;
}

function needsInside(option: 'kills' | 'timeouts', what: string): InvalidOptionsError {
  return new InvalidOptionsError('duplicateStorm options', [
    {
      path: [option],
      message:
        `${what}: call \`await copy.inside(tx)\` inside runIdempotent's fn (after its writes), and give the storm a key ` +
        `no earlier call completed; or set ${option}: 0`,
      code: 'custom',
    },
  ]);
}
