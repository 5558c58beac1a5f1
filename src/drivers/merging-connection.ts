/**
 * A Kysely connection that sends withTenant's statements in fewer round trips than Kysely's
 * transaction does by itself, while `fn` still gets a real Kysely `Transaction` (its plugins,
 * logging, and guard against statements after COMMIT included).
 *
 * Kysely sends BEGIN and COMMIT as statements of their own (its driver's beginTransaction and
 * commitTransaction) and offers no hook to add to either. Both go through the connection's
 * `executeQuery`, as every statement does, so for the length of one transaction this hooks that
 * method (method-hook.ts; Kysely's own logging wraps it too, see RuntimeDriver#addLogging).
 *
 * On a node-postgres connection that is its backend's own (kysely-backend-check.ts), what
 * merging-pg-client.ts does for pg-once/pg, Knex and Drizzle:
 * - BEGIN is held (Kysely gets its answer at once) and goes with the transaction's first
 *   statement: when that is pg-once's (the claim), BEGIN, the tenant's statement and it go in one
 *   round trip, all prepared (pipelined-query.ts: a node-postgres query that Kysely's
 *   PostgresConnection passes to its client as the SQL it was given); otherwise BEGIN and the
 *   tenant's statement go ahead of it in one simple-protocol query. A transaction with no
 *   statement never reaches the server.
 * - Every statement of pg-once's goes prepared (parsed once per connection, not on every call).
 * - A deferred statement (the UPDATE storing a call's result, TransactionClient.defer) goes with
 *   COMMIT in one round trip, both prepared, when nothing came between them, or on its own right
 *   before the next statement, which therefore sees it.
 * Elsewhere (another dialect, a pooler), the same in simple-protocol queries, which take no
 * parameters (values inlined as literals, inline-values.ts): BEGIN carries the tenant's statement,
 * and a deferred statement goes with COMMIT.
 * In both, ROLLBACK drops what is deferred: it would be undone anyway.
 */
import { CompiledQuery, type DatabaseConnection, type QueryResult } from 'kysely';
import { inlineValues, type Statement } from '../internal/inline-values.ts';
import type { DeferredStatement } from '../internal/transaction-client.ts';
import { DeferredStatements } from './deferred-statements.ts';
import { type Hooked, hookMethod } from './method-hook.ts';
import { noteNamedFailure, preparedName } from './native-query.ts';
import { awaitableQuery, type PreparedStatement } from './pipelined-query.ts';

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

/** pg-once's own statements (kysely-driver.ts marks them): the ones prepared, and the claim that takes the held BEGIN. */
const ownQueries = new WeakSet<CompiledQuery>();
export const markOwn = (query: CompiledQuery): CompiledQuery => {
  ownQueries.add(query);
  return query;
};

/** Per connection: the prepared statements known parsed on it (they may lead a pipelined query). */
const parsedNames = new WeakMap<object, Set<string>>();

export class MergingConnection {
  readonly #connection: DatabaseConnection;
  readonly #opening: Statement;
  /** Whether pg-once's statements go prepared and pipelined on this connection. */
  readonly #prepared: boolean;
  readonly #parsed: Set<string>;
  readonly #hooks: Hooked[];
  /** The connection's `executeQuery` past the hook (Kysely's own, or its logging wrapper). */
  readonly #execute: Execute;
  readonly #pending = new DeferredStatements(async (text, values) => (await this.#runOwn(CompiledQuery.raw(text, [...values]), [])).rows);
  /** BEGIN as Kysely sent it, held until the transaction's first statement (prepared mode). */
  #held: CompiledQuery | undefined;
  #begun = false;
  /** True when the connection refused BEGIN and the tenant's statement in one query; nothing ran. */
  refused = false;

  /**
   * Wraps `connection` until restore(); `opening` is the statement sent with BEGIN. `prepared`:
   * the connection is node-postgres's, on a backend of its own.
   */
  constructor(connection: DatabaseConnection, opening: Statement, prepared: boolean) {
    this.#connection = connection;
    this.#opening = opening;
    this.#prepared = prepared;
    let parsed = parsedNames.get(connection);
    if (!parsed) {
      parsed = new Set();
      parsedNames.set(connection, parsed);
    }
    this.#parsed = parsed;
    const execute = hookMethod(connection, 'executeQuery', (query, ...rest) => this.#intercept(query as CompiledQuery, rest));
    this.#execute = execute.original as Execute;
    this.#hooks = [execute];
    if (typeof connection.streamQuery !== 'function') return;
    const self = this;
    // A streamed query must see a deferred statement too (it is another statement).
    const stream = hookMethod(connection, 'streamQuery', async function* (...args: unknown[]) {
      if (self.#held !== undefined) await self.#sendHeld([]);
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

  #run(query: CompiledQuery, rest: unknown[]): Promise<QueryResult<any>> {
    return (this.#execute as (...args: unknown[]) => Promise<QueryResult<any>>).call(this.#connection, query, ...rest);
  }

  // Not async where it need not be: each async layer is a promise and a turn of the microtask
  // queue on every statement of every transaction.
  #intercept(query: CompiledQuery, rest: unknown[]): Promise<QueryResult<any>> {
    const simple = query.parameters.length === 0;
    if (simple && !this.#begun && BEGIN.test(query.sql)) return this.#begin(query, rest);
    if (this.#held !== undefined) {
      if (simple && (COMMIT.test(query.sql) || ROLLBACK.test(query.sql))) {
        // Nothing ran since BEGIN: the transaction never reached the server.
        this.#held = undefined;
        return Promise.resolve({ rows: [{ command: COMMIT.test(query.sql) ? 'COMMIT' : 'ROLLBACK' }] });
      }
      if (ownQueries.has(query)) return this.#first(query, rest);
      // The caller's own statement first: BEGIN and the tenant's statement go ahead of it.
      return this.#sendHeld(rest).then(() => this.#afterBegin(query, rest));
    }
    return this.#afterBegin(query, rest);
  }

  #afterBegin(query: CompiledQuery, rest: unknown[]): Promise<QueryResult<any>> {
    if (query.parameters.length === 0) {
      if (COMMIT.test(query.sql) && this.#pending.size > 0) return this.#commit(query, rest);
      if (ROLLBACK.test(query.sql)) this.#pending.drop();
    }
    const send = () => (ownQueries.has(query) ? this.#runOwn(query, rest) : this.#run(query, rest));
    return this.#pending.size > 0 ? this.#pending.flush().then(send) : send();
  }

  #begin(query: CompiledQuery, rest: unknown[]): Promise<QueryResult<any>> {
    this.#begun = true;
    if (this.#prepared) {
      this.#held = query;
      return Promise.resolve({ rows: [] });
    }
    return this.#run(CompiledQuery.raw(`${query.sql}; ${inlineValues(this.#opening)}`), rest).catch(async (error: unknown) => {
      if ((error as { code?: unknown } | null)?.code === SYNTAX_ERROR) this.refused = true;
      await this.#rollbackAfterBegin();
      throw error;
    });
  }

  /**
   * The held BEGIN and the tenant's statement, ahead of a statement of the caller's: pipelined
   * and prepared where they can be (one after another the first time), else in one
   * simple-protocol query.
   */
  async #sendHeld(rest: unknown[]): Promise<void> {
    const begin = this.#held!;
    this.#held = undefined;
    const opening = this.#opening;
    try {
      const leading = this.#preparedAll([{ text: begin.sql, values: [] }]);
      if (leading === undefined) await this.#run(CompiledQuery.raw(`${begin.sql}; ${inlineValues(opening)}`), rest);
      else if (this.#parsed.has(leading[0]!.name))
        await this.#sendPipelined(begin, leading, { name: preparedName(this.#connection, opening.text), text: opening.text, values: opening.values }, rest);
      else {
        await this.#runOwn(begin, rest);
        await this.#runOwn(CompiledQuery.raw(opening.text, [...opening.values]), rest);
      }
    } catch (error) {
      await this.#rollbackAfterBegin();
      throw error;
    }
  }

  /**
   * BEGIN may have run before what came with it failed: never leave the connection in a
   * transaction (Kysely does not roll back a BEGIN that threw).
   */
  async #rollbackAfterBegin(): Promise<void> {
    await this.#run(CompiledQuery.raw('rollback'), []).catch(() => {});
  }

  /**
   * pg-once's first statement with the held BEGIN and the tenant's statement in front, in one
   * round trip; the first time on a connection (its statements not parsed yet), one after another.
   */
  #first(query: CompiledQuery, rest: unknown[]): Promise<QueryResult<any>> {
    const leading = this.#preparedAll([{ text: this.#held!.sql, values: [] }, this.#opening]);
    const name = preparedName(this.#connection, query.sql);
    if (leading === undefined || name === undefined || !leading.every((statement) => this.#parsed.has(statement.name))) {
      return this.#sendHeld(rest).then(() => this.#runOwn(query, rest));
    }
    this.#held = undefined;
    return this.#sendPipelined(query, leading, { name, text: query.sql, values: query.parameters }, rest);
  }

  /** The last deferred statement goes with COMMIT; any before it go first, one by one. */
  async #commit(query: CompiledQuery, rest: unknown[]): Promise<QueryResult<any>> {
    await this.#pending.flush(this.#pending.size - 1);
    const last = this.#pending.takeLast();
    try {
      // An error in the UPDATE skips the COMMIT (the transaction is aborted and Kysely rolls it
      // back); a COMMIT that turns into a ROLLBACK needs an aborted transaction, in which the
      // UPDATE before it would have failed already.
      if (!this.#prepared) return await this.#run(CompiledQuery.raw(`${inlineValues(last.statement)}; ${query.sql}`), rest);
      const store = this.#preparedAll([last.statement]);
      if (store === undefined || !this.#parsed.has(store[0]!.name)) {
        await this.#runOwn(CompiledQuery.raw(last.statement.text, [...last.statement.values]), rest);
        return await this.#run(query, rest);
      }
      return await this.#sendPipelined(query, store, { name: preparedName(this.#connection, query.sql), text: query.sql }, rest);
    } catch (error) {
      return this.#pending.failed(last.statement, last.owner, error);
    }
  }

  /** Names for `statements` as prepared statements, or undefined when any has none (not prepared mode, the names are used up). */
  #preparedAll(statements: readonly Statement[]): PreparedStatement[] | undefined {
    if (!this.#prepared) return undefined;
    const named: PreparedStatement[] = [];
    for (const { text, values } of statements) {
      const name = preparedName(this.#connection, text);
      if (name === undefined) return undefined;
      named.push({ name, text, values });
    }
    return named;
  }

  /** One of pg-once's statements, prepared (when the connection allows it): node-postgres parses it on first use. */
  async #runOwn(query: CompiledQuery, rest: unknown[]): Promise<QueryResult<any>> {
    const name = this.#prepared ? preparedName(this.#connection, query.sql) : undefined;
    if (name === undefined) return this.#run(query, rest);
    const result = await this.#sendPipelined(query, [], { name, text: query.sql, values: query.parameters }, rest);
    this.#parsed.add(name);
    return result;
  }

  /** `leading` and `last` in one round trip, through Kysely's connection (pipelined-query.ts). */
  async #sendPipelined(
    query: CompiledQuery,
    leading: PreparedStatement[],
    last: { name?: string; text: string; values?: readonly unknown[] },
    rest: unknown[],
  ) {
    try {
      return await this.#run({ ...query, sql: awaitableQuery(leading, last) as unknown as string }, rest);
    } catch (error) {
      // A statement gone (DISCARD ALL) or whose plan no longer fits: the next transactions use new names.
      noteNamedFailure(this.#connection, error);
      throw error;
    }
  }
}
