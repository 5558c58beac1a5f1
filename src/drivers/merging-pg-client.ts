/**
 * A node-postgres client that sends withTenant's statements in fewer round trips, for the
 * transactions withTenant opens through pg-once/pg, Knex and Drizzle over node-postgres: what
 * merging-connection.ts does for Kysely, one level down. Each of those libraries sends BEGIN and
 * COMMIT through the client's `query` as it sends every statement, with no hook to add to either,
 * so for the length of one transaction this hooks that method of the client object (method-hook.ts):
 * - BEGIN is held (the library gets its answer at once) and goes with the transaction's first
 *   statement: when that is one of pg-once's named statements (the claim), BEGIN, the tenant's
 *   statement and it go in one round trip as prepared statements (pipelined-query.ts), none of
 *   them parsed again; otherwise BEGIN and the tenant's statement go ahead of it in one
 *   simple-protocol query (values inlined, inline-values.ts). A transaction with no statement at
 *   all never reaches the server. On a connection whose backend has not been checked yet
 *   (native-query.ts: named statements only on a backend of its own) BEGIN goes at once and the
 *   tenant's statement on its own, through that check, once per connection.
 * - A deferred statement (the UPDATE storing a call's result, TransactionClient.defer) goes with
 *   COMMIT in one round trip when nothing came between them (both prepared, or in one
 *   simple-protocol query behind a pooler), else on its own right before the next statement, which
 *   therefore sees it. When it fails there, Postgres skips the COMMIT and the transaction is
 *   aborted: it is rolled back here, since Knex does not roll back after a failed COMMIT and the
 *   connection would go back to its pool inside it.
 * - ROLLBACK drops what is deferred.
 * Every other query goes through untouched (callback, promise and Submittable forms alike).
 */
import type pg from 'pg';
import { inlineValues, type Statement } from '../internal/inline-values.ts';
import type { DeferredStatement } from '../internal/transaction-client.ts';
import { isDeferredFailure } from '../internal/deferred-failure.ts';
import { behind, DeferredStatements } from './deferred-statements.ts';
import { type Hooked, hookMethod } from './method-hook.ts';
import { backendChecked, nodePostgresQuery, noteNamedFailure, preparedName, type SendQuery } from './native-query.ts';
import { canPipeline, pipelinedQuery, type PreparedStatement } from './pipelined-query.ts';

const BEGIN = /^\s*(?:begin|start\s+transaction)\b/i;
const COMMIT = /^\s*commit\s*;?\s*$/i;
const ROLLBACK = /^\s*rollback\s*;?\s*$/i;
/** The trailing semicolon Knex ends BEGIN and COMMIT with. */
const TRAILING_SEMICOLON = /;\s*$/;

type Query = (...args: unknown[]) => unknown;
type Callback = (error: Error | null, result?: unknown) => void;

/** Clients wrapped now: a client is wrapped for one transaction at a time (concurrent transactions on one client fall back). */
const wrapped = new WeakSet<object>();

export interface MergingOptions {
  /**
   * Release the client (destroying it if its ROLLBACK fails) when the BEGIN carrying the opening
   * fails: for a library that takes the client and sends BEGIN before the code that would release
   * it (Drizzle over a Pool).
   */
  releaseIfBeginFails?: boolean;
}

export class MergingPgClient {
  /** Whether `client` is wrapped for a transaction now. */
  static isWrapped(client: object): boolean {
    return wrapped.has(client);
  }

  readonly #client: pg.ClientBase;
  readonly #opening: Statement | undefined;
  readonly #options: MergingOptions;
  readonly #query: Query;
  readonly #hooks: Hooked[];
  readonly #release: unknown;
  /** The client's own `query`, past the hook. */
  readonly #send: SendQuery = (query, values) => this.#query.call(this.#client, query, values) as Promise<pg.QueryResult>;
  readonly #pending = new DeferredStatements((text, values) => nodePostgresQuery(this.#client, text, values, this.#send));
  /** BEGIN as the library sent it, held until the transaction's first statement. */
  #held: string | undefined;
  /** Deferred statements sent ahead of a cursor or stream, whose answer nobody awaited: COMMIT reads it. */
  #unread: Promise<void> | undefined;
  #begun = false;
  #restored = false;

  /**
   * Wraps `client` until restore() (or until the client is released to its pool, whichever comes
   * first); `opening` is sent with BEGIN.
   */
  constructor(client: pg.ClientBase, opening: Statement | undefined, options: MergingOptions = {}) {
    this.#client = client;
    this.#opening = opening;
    this.#options = options;
    wrapped.add(client);
    const query = hookMethod(client, 'query', (...args: unknown[]) => this.#intercept(args));
    this.#query = query.original;
    this.#hooks = [query];
    const release = (client as unknown as Record<string, unknown>).release;
    this.#release = release;
    // Drizzle releases the client itself, right after COMMIT: the pool must get it back unwrapped.
    if (typeof release === 'function')
      this.#hooks.push(
        hookMethod(client, 'release', (...args: unknown[]) => {
          this.restore();
          return release.apply(client, args);
        }),
      );
  }

  /** Puts the client's own methods back. */
  restore(): void {
    if (this.#restored) return;
    this.#restored = true;
    wrapped.delete(this.#client);
    for (const hook of this.#hooks) hook.restore();
  }

  defer(statement: DeferredStatement, owner: object): void {
    this.#pending.add(statement, owner);
  }

  #intercept(args: unknown[]): unknown {
    const [first] = args;
    const text = typeof first === 'string' ? first : (first as { text?: unknown } | null)?.text;
    const submittable = typeof (first as { submit?: unknown } | null)?.submit === 'function';
    // Without values, node-postgres sends a query with the simple protocol, which takes several statements.
    const simple =
      !submittable &&
      typeof text === 'string' &&
      (first as { name?: unknown }).name === undefined &&
      !args.some((arg, i) => i > 0 && Array.isArray(arg) && arg.length > 0) &&
      !((first as { values?: unknown[] }).values?.length ?? 0);
    let result: Promise<unknown>;
    if (simple && !this.#begun && BEGIN.test(text)) result = this.#begin(args, text);
    else if (this.#held !== undefined && simple && (COMMIT.test(text) || ROLLBACK.test(text))) {
      // Nothing ran since BEGIN: the transaction never reached the server.
      this.#held = undefined;
      result = Promise.resolve(emptyResult(COMMIT.test(text) ? 'COMMIT' : 'ROLLBACK'));
    } else if (this.#held !== undefined && !submittable && args.slice(1).every((arg) => arg === undefined) && isOwnStatement(first))
      result = this.#first(first);
    else if (simple && COMMIT.test(text) && (this.#pending.size > 0 || this.#unread)) result = this.#commit(args, text);
    else {
      if (this.#held !== undefined) {
        // The caller's own statement first: BEGIN and the tenant's statement go ahead of it.
        const begun = this.#sendHeld().then(() => {});
        begun.catch(() => {}); // read by behind(), or by COMMIT for a Submittable
        if (submittable) {
          this.#unread = begun;
          return this.#query.apply(this.#client, args);
        }
        result = behind(begun, this.#run(args));
        return this.#answer(args, result);
      }
      if (simple && ROLLBACK.test(text)) {
        this.#pending.drop();
        this.#unread = undefined;
      }
      if (this.#pending.size === 0) return this.#query.apply(this.#client, args);
      // The deferred statements go first, queued ahead of this one (deferred-statements.ts).
      const before = this.#pending.sendNow();
      if (submittable) {
        // A cursor or stream reports its own errors; a deferred failure is read by COMMIT.
        this.#unread = this.#unread ? this.#unread.then(() => before) : before;
        return this.#query.apply(this.#client, args);
      }
      result = behind(before, this.#run(args));
    }
    return this.#answer(args, result);
  }

  /** `result` as the caller asked for it: the promise, or through its callback. */
  #answer(args: unknown[], result: Promise<unknown>): unknown {
    const callback = typeof args.at(-1) === 'function' ? (args.at(-1) as Callback) : undefined;
    if (!callback) return result;
    result.then(
      (value) => callback(null, value),
      (error: Error) => callback(error),
    );
    return undefined;
  }

  /** The held BEGIN and the tenant's statement ahead of pg-once's first statement, in one round trip when all are prepared. */
  #first(statement: PreparedStatement): Promise<unknown> {
    const begin = this.#held!;
    const opening = this.#opening!;
    const leading: PreparedStatement[] = [];
    for (const { text, values } of [{ text: begin, values: [] }, opening]) {
      const name = preparedName(this.#client, text);
      if (name !== undefined) leading.push({ name, text, values });
    }
    if (
      leading.length < 2 ||
      !canPipeline(
        this.#client,
        leading.map(({ name }) => name),
      )
    ) {
      // Not prepared on this connection yet (or never, behind a pooler): BEGIN and the tenant's
      // statement go first, prepared one after another this once where they can be (node-postgres
      // 8.20+ deprecates a third query queued behind two).
      return (async () => {
        if (leading.length < 2) await this.#sendHeld();
        else {
          this.#held = undefined;
          for (const prepared of leading) await this.#send(queryConfig(prepared));
        }
        return this.#send(queryConfig(statement));
      })();
    }
    this.#held = undefined;
    // A failure of a prepared statement is noted by nodePostgresQuery, which sent this one.
    return pipelinedQuery(this.#client, (query) => this.#query.call(this.#client, query), leading, statement);
  }

  /** Sends the held BEGIN with the tenant's statement, in one simple-protocol query. */
  #sendHeld(): Promise<pg.QueryResult> {
    const begin = this.#held!;
    this.#held = undefined;
    return this.#send(`${begin.replace(TRAILING_SEMICOLON, '')}; ${inlineValues(this.#opening!)}`);
  }

  /** The query the caller asked for, sent now, as a promise (its callback, if any, is called by #intercept). */
  #run(args: unknown[], text?: string): Promise<unknown> {
    const withoutCallback = typeof args.at(-1) === 'function' ? args.slice(0, -1) : [...args];
    if (text !== undefined) withoutCallback[0] = typeof args[0] === 'string' ? text : { ...(args[0] as object), text };
    return this.#query.apply(this.#client, withoutCallback) as Promise<unknown>;
  }

  async #begin(args: unknown[], text: string): Promise<unknown> {
    this.#begun = true;
    const opening = this.#opening;
    try {
      if (opening === undefined) return await this.#run(args);
      if (backendChecked(this.#client)) {
        this.#held = text;
        return emptyResult('BEGIN');
      }
      // The backend check rides on the tenant's statement (native-query.ts): it goes on its own this once.
      const begun = this.#run(args);
      const tenant = nodePostgresQuery(this.#client, opening.text, opening.values);
      tenant.catch(() => {});
      const result = await begun;
      await tenant;
      return result;
    } catch (error) {
      // BEGIN may have run before what came with it failed: the client must not stay in a
      // transaction (no library here rolls back a BEGIN that threw).
      const rolledBack = await this.#rollback();
      if (this.#options.releaseIfBeginFails && typeof this.#release === 'function') {
        this.restore();
        (this.#release as (error?: Error) => void).call(this.#client, rolledBack ? undefined : (error as Error));
      }
      throw error;
    }
  }

  /** The last deferred statement goes with COMMIT, any before it right ahead of that query. */
  async #commit(args: unknown[], text: string): Promise<unknown> {
    const unread = this.#unread;
    this.#unread = undefined;
    const before = this.#pending.sendNow(1);
    const last = this.#pending.size > 0 ? this.#pending.takeLast() : undefined;
    const committed = last ? this.#commitWith(last.statement, args, text) : this.#run(args);
    try {
      if (unread) await behind(unread, Promise.resolve());
      return await behind(before, committed);
    } catch (error) {
      committed.catch(() => {});
      // A statement before COMMIT failed, so COMMIT did not run: the transaction is aborted, and
      // ends here (Knex does not roll back after a failed COMMIT; the client would go back to its
      // pool inside it).
      await this.#rollback();
      if (isDeferredFailure(error) || !last) throw error;
      return this.#pending.failed(last.statement, last.owner, error);
    }
  }

  /**
   * COMMIT with the deferred statement in front: both prepared, in one round trip; prepared one
   * after the other the first time on a connection; behind a pooler, in one simple-protocol query.
   */
  #commitWith(statement: DeferredStatement, args: unknown[], text: string): Promise<unknown> {
    const name = preparedName(this.#client, statement.text);
    if (name === undefined) return this.#run(args, `${inlineValues(statement)}; ${text}`);
    const store = { name, text: statement.text, values: statement.values };
    if (!canPipeline(this.#client, [name])) {
      const stored = this.#send(queryConfig(store)).then(() => {});
      stored.catch(() => {});
      return behind(stored, this.#run(args));
    }
    const answer = pipelinedQuery(this.#client, (query) => this.#query.call(this.#client, query), [store], { text: text.replace(TRAILING_SEMICOLON, '') });
    answer.catch((error: unknown) => noteNamedFailure(this.#client, error));
    return answer;
  }

  /** Rolls back, past the wrapper; true when the ROLLBACK went through (the connection is usable). */
  #rollback(): Promise<boolean> {
    return (this.#query.call(this.#client, 'ROLLBACK') as Promise<unknown>).then(
      () => true,
      () => false,
    );
  }
}

/** One of pg-once's own prepared statements (native-query.ts names them `once_...`), as a query config. */
function isOwnStatement(query: unknown): query is PreparedStatement {
  const { name, text, values } = (query ?? {}) as { name?: unknown; text?: unknown; values?: unknown };
  return typeof name === 'string' && name.startsWith('once_') && typeof text === 'string' && Array.isArray(values);
}

/** What node-postgres answers to a statement that returns no rows (BEGIN, COMMIT, ROLLBACK). */
function emptyResult(command: string): pg.QueryResult {
  return { command, rowCount: null, oid: 0, rows: [], fields: [] } as unknown as pg.QueryResult;
}

const queryConfig = ({ name, text, values }: PreparedStatement): pg.QueryConfig => ({ name, text, values: [...values] });
