/**
 * Deferred statements (TransactionClient.defer) on postgres.js, alone or under Drizzle, in a
 * transaction withTenant opened. postgres.js sends BEGIN and COMMIT from closures of its own, so
 * nothing can ride in their round trips as on Kysely and node-postgres (merging-connection.ts,
 * merging-pg-client.ts); but it pipelines: a statement sent while another is out goes at once, on
 * the transaction's connection, and is answered after it. So the statement storing a call's result
 * is sent at once and its answer is not waited for: the transaction's next statement, and its
 * COMMIT, go right behind it, in the same round trip.
 *
 * Its answer is checked later, and its failure is the one thrown (through its onError):
 * - by pg-once's next statement in the transaction, which waits for it first;
 * - when the transaction has ended: a failed UPDATE aborted the transaction, so Postgres answered
 *   the COMMIT behind it with a rollback (postgres.js reports no error for that), and withTenant
 *   throws the UPDATE's error instead of returning; nothing of the transaction committed;
 * - when the transaction failed: the caller's own statements behind a failed UPDATE were refused
 *   (25P02, "current transaction is aborted"), and the UPDATE's error is the cause worth throwing.
 */
import { deferredFailure } from '../internal/deferred-failure.ts';
import type { Statement } from '../internal/inline-values.ts';
import { refusedAfterAbort } from './deferred-statements.ts';
import type { DeferredStatement, TransactionClient } from '../internal/transaction-client.ts';

interface Sent {
  answer: Promise<unknown>;
  statement: DeferredStatement;
}

export class PipelinedStatements {
  /** Sends a statement; resolves with its rows. */
  readonly #send: (text: string, values: readonly unknown[]) => Promise<unknown[]>;
  /** Runs a statement outside the transaction (for onError, after the transaction has ended). */
  readonly #direct: TransactionClient;
  #sent: Sent[] = [];

  constructor(send: (text: string, values: readonly unknown[]) => Promise<unknown[]>, direct: TransactionClient) {
    this.#send = send;
    this.#direct = direct;
  }

  /** Sends `statement` now; its answer is checked by the next `query`, `settle` or `failure`. */
  defer(statement: DeferredStatement): void {
    const answer = this.#send(statement.text, statement.values);
    // Checked later; until then, a failure is not an unhandled rejection.
    answer.catch(() => {});
    this.#sent.push({ answer, statement });
  }

  /**
   * withTenant's first statement, sent right after BEGIN, its answer checked as a deferred
   * statement's: should it fail, its error is thrown as it is (what came behind it was refused).
   */
  open(opening: Statement): void {
    this.defer({ ...opening, onError: rethrow });
  }

  /** A statement of pg-once's own: sent at once (behind the deferred ones), and answered after them. */
  async query<Row>(text: string, values: readonly unknown[]): Promise<Row[]> {
    if (this.#sent.length === 0) return (await this.#send(text, values)) as Row[];
    const answer = this.#send(text, values);
    try {
      await this.settle();
    } catch (error) {
      answer.catch(() => {});
      throw error;
    }
    return (await answer) as Row[];
  }

  /** Waits for every deferred statement's answer; the first that failed throws its onError's error. */
  async settle(): Promise<void> {
    const failed = await this.#firstFailure();
    if (failed) await this.#failed(failed);
  }

  /**
   * The error to throw for a transaction that failed with `error`: a deferred statement's, if one
   * failed first, unless it was only refused because something else had aborted the transaction
   * already (25P02): then `error` (postgres.js reports that earlier failure) says more.
   */
  async failure(error: unknown): Promise<unknown> {
    const failed = await this.#firstFailure();
    if (!failed || refusedAfterAbort(failed.error)) return error;
    return this.#failed(failed).catch((thrown: unknown) => thrown);
  }

  async #firstFailure(): Promise<{ statement: DeferredStatement; error: unknown } | undefined> {
    const sent = this.#sent;
    this.#sent = [];
    for (const { answer, statement } of sent) {
      try {
        await answer;
      } catch (error) {
        return { statement, error };
      }
    }
    return undefined;
  }

  #failed({ statement, error }: { statement: DeferredStatement; error: unknown }): Promise<never> {
    return deferredFailure(statement, this.#direct, error);
  }
}

const rethrow = async (error: unknown): Promise<never> => {
  throw error;
};

/** The pipeline of each transaction withPipeline opened, by the library's transaction object. */
const pipelines = new WeakMap<object, PipelinedStatements>();

export const pipelineOf = (tx: object): PipelinedStatements | undefined => pipelines.get(tx);

/**
 * Opens a transaction with `open` and runs `fn` in it, with a pipeline made by `make` for the
 * transaction (undefined: none, the library does not pipeline); after the transaction, the
 * deferred statements' answers decide what is returned or thrown (see above).
 */
export async function withPipeline<Tx extends object, T>(
  open: (fn: (tx: Tx) => Promise<T>) => Promise<T>,
  make: (tx: Tx) => PipelinedStatements | undefined,
  fn: (tx: Tx) => Promise<T>,
): Promise<T> {
  let pipeline: PipelinedStatements | undefined;
  try {
    const result = await open((tx) => {
      pipeline = make(tx);
      if (pipeline) pipelines.set(tx, pipeline);
      return fn(tx);
    });
    await pipeline?.settle();
    return result;
  } catch (error) {
    throw pipeline ? await pipeline.failure(error) : error;
  }
}
