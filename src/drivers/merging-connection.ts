/**
 * A Kysely connection that sends withTenant's statements in fewer round trips than Kysely's
 * transaction does by itself, while `fn` still gets a real Kysely `Transaction` (its plugins,
 * logging, and guard against statements after COMMIT included).
 *
 * Kysely sends BEGIN and COMMIT as statements of their own (its driver's beginTransaction and
 * commitTransaction) and offers no hook to add to either. Both go through the connection's
 * `executeQuery`, as every statement does, so for the length of one transaction this hooks that
 * method (method-hook.ts; Kysely's own logging wraps it too, see RuntimeDriver#addLogging):
 * - BEGIN carries the tenant's statement (set-tenant.ts) in the same simple-protocol query: a
 *   transaction opens in one round trip instead of two;
 * - a statement deferred by the call (the UPDATE storing a call's result, see
 *   TransactionClient.defer) is sent with COMMIT in one query when nothing came between them, or
 *   on its own right before the next statement, which therefore sees it;
 * - ROLLBACK drops what is deferred: it would be undone anyway.
 *
 * Several statements in one query need the simple query protocol, which takes no parameters:
 * the statements merged here have their values inlined as literals (inline-values.ts); every
 * other statement goes through unchanged.
 */
import { CompiledQuery, type DatabaseConnection, type QueryResult } from 'kysely';
import { inlineValues } from '../internal/inline-values.ts';
import type { DeferredStatement } from '../internal/transaction-client.ts';
import { DeferredStatements } from './deferred-statements.ts';
import { type Hooked, hookMethod } from './method-hook.ts';

const BEGIN = /^\s*(?:begin|start\s+transaction)\b/i;
const COMMIT = /^\s*commit\s*$/i;
const ROLLBACK = /^\s*rollback\s*$/i;
/**
 * SQLSTATE syntax_error: what a connection that sends every query with the extended protocol
 * (some Kysely dialects other than node-postgres') answers to several statements in one query,
 * "cannot insert multiple commands into a prepared statement", before running any of them.
 */
const SYNTAX_ERROR = '42601';

type Execute = DatabaseConnection['executeQuery'];

export class MergingConnection {
  readonly #connection: DatabaseConnection;
  readonly #opening: string;
  readonly #hooks: Hooked[];
  /** The connection's `executeQuery` past the hook (Kysely's own, or its logging wrapper). */
  readonly #execute: Execute;
  readonly #pending = new DeferredStatements(async (text, values) => (await this.#run(CompiledQuery.raw(text, [...values]))).rows);
  #begun = false;
  /** True when the connection refused BEGIN and the tenant's statement in one query; nothing ran. */
  refused = false;

  /** Wraps `connection` until restore(); `opening` is the statement sent with BEGIN, values inlined. */
  constructor(connection: DatabaseConnection, opening: string) {
    this.#connection = connection;
    this.#opening = opening;
    const execute = hookMethod(connection, 'executeQuery', (query, ...rest) => this.#intercept(query as CompiledQuery, rest));
    this.#execute = execute.original as Execute;
    this.#hooks = [execute];
    if (typeof connection.streamQuery !== 'function') return;
    const self = this;
    // A streamed query must see a deferred statement too (it is another statement).
    const stream = hookMethod(connection, 'streamQuery', async function* (...args: unknown[]) {
      await self.#pending.flush();
      yield* stream.original.apply(connection, args) as AsyncIterableIterator<unknown>;
    });
    this.#hooks.push(stream);
  }

  /** Ends the hooks: the connection's methods are its own again; it then goes back to its pool. */
  restore(): void {
    for (const hook of this.#hooks) hook.restore();
  }

  defer(statement: DeferredStatement, owner: object): void {
    this.#pending.add(statement, owner);
  }

  #run(query: CompiledQuery, rest: unknown[] = []): Promise<QueryResult<any>> {
    return (this.#execute as (...args: unknown[]) => Promise<QueryResult<any>>).call(this.#connection, query, ...rest);
  }

  async #intercept(query: CompiledQuery, rest: unknown[]): Promise<QueryResult<any>> {
    if (query.parameters.length === 0) {
      if (!this.#begun && BEGIN.test(query.sql)) return this.#begin(query, rest);
      if (COMMIT.test(query.sql) && this.#pending.size > 0) return this.#commit(query, rest);
      if (ROLLBACK.test(query.sql)) this.#pending.drop();
    }
    await this.#pending.flush();
    return this.#run(query, rest);
  }

  async #begin(query: CompiledQuery, rest: unknown[]): Promise<QueryResult<any>> {
    this.#begun = true;
    try {
      return await this.#run(CompiledQuery.raw(`${query.sql}; ${this.#opening}`), rest);
    } catch (error) {
      if ((error as { code?: unknown } | null)?.code === SYNTAX_ERROR) this.refused = true;
      // BEGIN may have run before the tenant's statement failed: never leave the connection in
      // a transaction (Kysely does not roll back a BEGIN that threw).
      await this.#run(CompiledQuery.raw('rollback')).catch(() => {});
      throw error;
    }
  }

  /** The last deferred statement goes with COMMIT; any before it go first, one by one. */
  async #commit(query: CompiledQuery, rest: unknown[]): Promise<QueryResult<any>> {
    await this.#pending.flush(this.#pending.size - 1);
    const last = this.#pending.takeLast();
    try {
      // An error in the UPDATE skips the COMMIT (the transaction is aborted and Kysely rolls it
      // back); a COMMIT that turns into a ROLLBACK needs an aborted transaction, in which the
      // UPDATE before it would have failed already.
      return await this.#run(CompiledQuery.raw(`${inlineValues(last.statement)}; ${query.sql}`), rest);
    } catch (error) {
      return this.#pending.failed(last.statement, last.owner, error);
    }
  }
}
