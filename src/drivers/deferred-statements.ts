/**
 * The statements one transaction has deferred (TransactionClient.defer), held by the connection
 * wrapper that sends them: merging-connection.ts on a Kysely connection, merging-pg-client.ts on
 * a node-postgres client (pg-once/pg, Knex, Drizzle over node-postgres). The wrapper decides when
 * (with COMMIT, or right before the next statement); this keeps them and turns a failure into the
 * error the call chose (DeferredStatement.onError).
 *
 * On node-postgres they are sent synchronously (sendNow), each as its own statement, in the order
 * they were deferred, right before the statement that made the wrapper send them: the client
 * queues statements in the order they are sent, so that statement, and any sent after it
 * (concurrent statements of the caller's, COMMIT), run behind them, and none waits for a round
 * trip of its own. A failed deferred statement aborts the transaction; what was queued behind it
 * is refused (25P02), and the wrapper reports the deferred statement's error instead (behind()).
 * On Kysely, whose dialects may take one statement at a time, they go one by one (flush).
 */
import { deferredFailure, IN_FAILED_TRANSACTION } from '../internal/deferred-failure.ts';
import type { DeferredStatement, TransactionClient } from '../internal/transaction-client.ts';

/** Sends one statement on the connection at once, past the wrapper; resolves with its rows. */
export type RunDirect = (text: string, values: readonly unknown[]) => Promise<unknown[]>;

interface Deferred {
  statement: DeferredStatement;
  /** The transaction the statement was deferred in (the owner of the client `onError` gets). */
  owner: object;
}

export class DeferredStatements {
  readonly #run: RunDirect;
  #pending: Deferred[] = [];

  constructor(run: RunDirect) {
    this.#run = run;
  }

  get size(): number {
    return this.#pending.length;
  }

  add(statement: DeferredStatement, owner: object): void {
    this.#pending.push({ statement, owner });
  }

  /** ROLLBACK: what is deferred would be undone anyway. */
  drop(): void {
    this.#pending = [];
  }

  /**
   * Sends the first `count` deferred statements one after another, each once the one before it
   * was answered: for a connection that takes one statement at a time (any Kysely dialect's, whose
   * callers Kysely already serialises). The first that fails throws its error.
   */
  async flush(count = this.#pending.length): Promise<void> {
    for (let i = 0; i < count; i += 1) {
      const { statement, owner } = this.#pending.shift()!;
      try {
        await this.#run(statement.text, statement.values);
      } catch (error) {
        this.#pending = [];
        await this.failed(statement, owner, error);
      }
    }
  }

  /**
   * Sends the deferred statements now, all at once (all, or all but the last: `keep` 1, for
   * COMMIT's query), for a connection that queues statements in the order they are sent
   * (node-postgres).
   * Resolves once their answers have come, or rejects with the first failure's error (its
   * onError's), marked as a deferred failure (deferred-failure.ts).
   */
  sendNow(keep = 0): Promise<void> {
    const sent = this.#pending
      .slice(0, this.#pending.length - keep)
      .map((deferred) => ({ ...deferred, answer: this.#run(deferred.statement.text, deferred.statement.values) }));
    this.#pending = this.#pending.slice(sent.length);
    for (const { answer } of sent) answer.catch(() => {}); // read below, in order
    const answered = (async () => {
      for (const { statement, owner, answer } of sent) {
        try {
          await answer;
        } catch (error) {
          await this.failed(statement, owner, error);
        }
      }
    })();
    answered.catch(() => {}); // the caller may read it later (or, for a cursor sent after it, not at all)
    return answered;
  }

  /** For COMMIT's query: the last deferred statement, taken out (the others must have been sent with sendNow(1)). */
  takeLast(): Deferred {
    return this.#pending.pop()!;
  }

  /** Throws the error `statement`'s failure becomes (its onError's), marked as a deferred failure. */
  failed(statement: DeferredStatement, owner: object, error: unknown): Promise<never> {
    return deferredFailure(statement, this.direct(owner), error);
  }

  /** A client that runs statements on the connection at once, never deferred (for onError). */
  direct(owner: object): TransactionClient {
    return { owner, query: async <Row>(text: string, values: readonly unknown[]) => (await this.#run(text, values)) as Row[] };
  }
}

/**
 * What a statement that was queued behind deferred ones answers: a deferred statement's error if
 * one failed (the statement itself was then refused), else its own answer.
 */
export async function behind<T>(deferred: Promise<void>, answer: Promise<T>): Promise<T> {
  try {
    await deferred;
  } catch (error) {
    // Its own answer (a refusal, 25P02) comes first: the caller's next statement (ROLLBACK) then
    // finds the client idle, not queued behind it.
    await answer.catch(() => {});
    throw error;
  }
  return answer;
}

/** Whether `error` says only that an earlier statement had aborted the transaction (25P02). */
export const refusedAfterAbort = (error: unknown): boolean => (error as { code?: unknown } | null)?.code === IN_FAILED_TRANSACTION;
