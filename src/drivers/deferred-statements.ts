/**
 * The statements one transaction has deferred (TransactionClient.defer), held by the connection
 * wrapper that sends them: merging-connection.ts on a Kysely connection, merging-pg-client.ts on
 * a node-postgres client (pg-once/pg, Knex, Drizzle over node-postgres). The wrapper decides when
 * (with COMMIT, or before the next statement); this keeps them in order and turns a failure into
 * the error the call chose (DeferredStatement.onError).
 */
import type { DeferredStatement, TransactionClient } from '../internal/transaction-client.ts';

/** Runs one statement on the connection at once, past the wrapper; resolves with its rows. */
export type RunDirect = (text: string, values: readonly unknown[]) => Promise<unknown[]>;

interface Deferred {
  statement: DeferredStatement;
  /** The transaction the statement was deferred in (the owner of the client `onError` gets). */
  owner: object;
}

/** Errors a deferred statement's failure became: a library that wraps the errors of its own statements (Drizzle) unwraps these. */
const deferredFailures = new WeakSet<object>();

/** Whether `error` is what a deferred statement's failure became (its onError's error). */
export const isDeferredFailure = (error: unknown): boolean => typeof error === 'object' && error !== null && deferredFailures.has(error);

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

  /** Sends the first `count` deferred statements, one by one; the first that fails throws its onError's error. */
  async flush(count = this.#pending.length): Promise<void> {
    for (let i = 0; i < count; i += 1) {
      const { statement, owner } = this.#pending.shift()!;
      try {
        await this.#run(statement.text, statement.values);
      } catch (error) {
        this.#pending = [];
        await this.#failed(statement, owner, error);
      }
    }
  }

  /**
   * For COMMIT: sends every deferred statement but the last, and hands back the last, to go in
   * COMMIT's round trip; `failed` turns that round trip's error into the call's.
   */
  async takeLast(): Promise<{ statement: DeferredStatement; failed: (error: unknown) => Promise<never> }> {
    await this.flush(this.#pending.length - 1);
    const last = this.#pending.shift()!;
    return { statement: last.statement, failed: (error) => this.#failed(last.statement, last.owner, error) };
  }

  async #failed(statement: DeferredStatement, owner: object, error: unknown): Promise<never> {
    try {
      return await statement.onError(error, this.direct(owner));
    } catch (thrown) {
      if (typeof thrown === 'object' && thrown !== null) deferredFailures.add(thrown);
      throw thrown;
    }
  }

  /** A client that runs statements on the connection at once, never deferred (for onError). */
  direct(owner: object): TransactionClient {
    return { owner, query: async <Row>(text: string, values: readonly unknown[]) => (await this.#run(text, values)) as Row[] };
  }
}
