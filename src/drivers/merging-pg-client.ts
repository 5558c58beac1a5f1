/**
 * A node-postgres client that sends withTenant's statements in fewer round trips, for the
 * transactions withTenant opens through pg-once/pg, Knex and Drizzle over node-postgres: what
 * merging-connection.ts does for Kysely, one level down. Each of those libraries sends BEGIN and
 * COMMIT through the client's `query` as it sends every statement, with no hook to add to either,
 * so for the length of one transaction this wraps that method on the client object:
 * - BEGIN carries the tenant's statement in the same simple-protocol query (values inlined,
 *   inline-values.ts): one round trip instead of two. On a connection whose backend has not been
 *   checked yet (native-query.ts: named statements only on a backend of its own) the tenant's
 *   statement goes on its own, through that check, once per connection.
 * - A deferred statement (the UPDATE storing a call's result, TransactionClient.defer) goes with
 *   COMMIT in one query when nothing came between them, else on its own right before the next
 *   statement, which therefore sees it. When it fails inside COMMIT's query, Postgres skips the
 *   COMMIT and the transaction is aborted: it is rolled back here, since Knex does not roll back
 *   after a failed COMMIT and the connection would go back to its pool inside it.
 * - ROLLBACK drops what is deferred.
 * Every other query goes through untouched (callback, promise and Submittable forms alike).
 */
import type pg from 'pg';
import { inlineValues, type Statement } from '../internal/inline-values.ts';
import type { DeferredStatement } from '../internal/transaction-client.ts';
import { isDeferredFailure } from '../internal/deferred-failure.ts';
import { behind, DeferredStatements } from './deferred-statements.ts';
import { backendChecked, nodePostgresQuery } from './native-query.ts';

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
  readonly #ownQuery: Query | undefined;
  readonly #ownRelease: unknown;
  readonly #release: unknown;
  readonly #pending = new DeferredStatements(async (text, values) => ((await this.#query.call(this.#client, text, [...values])) as pg.QueryResult).rows);
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
    const target = client as unknown as Record<string, unknown>;
    this.#ownQuery = Object.hasOwn(client, 'query') ? (target.query as Query) : undefined;
    this.#ownRelease = Object.hasOwn(client, 'release') ? target.release : undefined;
    this.#query = client.query as unknown as Query;
    target.query = (...args: unknown[]) => this.#intercept(args);
    const release = target.release;
    this.#release = release;
    // Drizzle releases the client itself, right after COMMIT: the pool must get it back unwrapped.
    if (typeof release === 'function')
      target.release = (...args: unknown[]) => {
        this.restore();
        return release.apply(client, args);
      };
  }

  /** Puts the client's own methods back. */
  restore(): void {
    if (this.#restored) return;
    this.#restored = true;
    wrapped.delete(this.#client);
    const target = this.#client as unknown as Record<string, unknown>;
    if (this.#ownQuery) target.query = this.#ownQuery;
    else delete target.query;
    if (this.#ownRelease) target.release = this.#ownRelease;
    else delete target.release;
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
    else if (simple && COMMIT.test(text) && (this.#pending.size > 0 || this.#unread)) result = this.#commit(args, text);
    else {
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
    const callback = typeof args.at(-1) === 'function' ? (args.at(-1) as Callback) : undefined;
    if (!callback) return result;
    result.then(
      (value) => callback(null, value),
      (error: Error) => callback(error),
    );
    return undefined;
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
      if (backendChecked(this.#client)) return await this.#run(args, `${text.replace(TRAILING_SEMICOLON, '')}; ${inlineValues(opening)}`);
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
    const committed = this.#run(args, last ? `${inlineValues(last.statement)}; ${text}` : undefined);
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

  /** Rolls back, past the wrapper; true when the ROLLBACK went through (the connection is usable). */
  #rollback(): Promise<boolean> {
    return (this.#query.call(this.#client, 'ROLLBACK') as Promise<unknown>).then(
      () => true,
      () => false,
    );
  }
}
