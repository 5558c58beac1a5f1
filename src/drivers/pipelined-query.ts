/**
 * Several statements in one round trip on a node-postgres connection, each a prepared statement
 * with its values bound (the extended protocol): the statements in front are sent Bind, Execute,
 * and the last one as node-postgres sends any statement of its own, then one Sync. The server
 * runs them in order and stops at the first error; only the last one's rows come back, as
 * node-postgres's own result.
 *
 * A simple-protocol query takes several statements too, but no parameters: its statements are
 * parsed and planned again on every call. Merged that way (BEGIN with the tenant's statement, the
 * stored result with COMMIT), pg-once's statements cost a node-postgres connection about 190 us
 * more server CPU per call than the same statements named, one round trip each (bench/drivers.ts:
 * "pg (the caller's own transaction)" against "pg (Pool)"). Here they stay named and still share
 * a round trip (merging-pg-client.ts).
 *
 * node-postgres sends a Submittable whole and hands it every message until the ReadyForQuery that
 * the one Sync brings, so nothing of another query can interleave. The statements in front must
 * have been parsed on the connection already (isParsed): their Parse would bring a ParseComplete
 * that node-postgres's client credits to the Query's own name. The last one is parsed here if it
 * is new, as node-postgres does it.
 */
import pg from 'pg';

export interface PreparedStatement {
  name: string;
  text: string;
  values: readonly unknown[];
}

/** The last statement: node-postgres's query config (named, or unnamed with `queryMode: 'extended'`). */
export interface LastStatement {
  name?: string;
  text: string;
  values?: readonly unknown[];
}

/** The members of node-postgres's Query (lib/query.js) this file relies on. */
interface NodePostgresQuery {
  handleDataRow(message: unknown): void;
  handleCommandComplete(message: unknown, connection: unknown): void;
  submit(connection: Connection): Error | null;
}
type QueryClass = new (config: object) => NodePostgresQuery;

/** The members of node-postgres's Connection (lib/connection.js) this file relies on. */
interface Connection {
  /** The socket: its `write` is what node-postgres sends each message with. */
  stream: { write: (chunk: Buffer) => boolean };
  parsedStatements: Record<string, string>;
  /** node-postgres 8.20+: named statements whose Parse is on its way. */
  submittedNamedStatements?: Record<string, string>;
  bind(config: { portal: string; statement: string; values: unknown[]; valueMapper?: (value: unknown) => unknown }): void;
  execute(config: { portal: string; rows: number }): void;
}

const pipelinedClasses = new WeakMap<QueryClass, QueryClass>();

function connectionOf(client: pg.ClientBase): Connection | undefined {
  const connection = (client as unknown as { connection?: Partial<Connection> }).connection;
  return connection as Connection | undefined;
}

/**
 * node-postgres's Query class of `client` (its own module's, whatever version the application
 * installed), or undefined for a client that is not node-postgres's pure-JavaScript one (pg-native
 * has no protocol-level connection).
 */
function queryClassOf(client: pg.ClientBase): QueryClass | undefined {
  const Query = (client.constructor as { Query?: unknown }).Query;
  const connection = connectionOf(client);
  if (typeof Query !== 'function' || typeof connection?.bind !== 'function' || typeof connection.parsedStatements !== 'object') return undefined;
  return Query as QueryClass;
}

/** Whether `client` can take a pipelined query whose statements in front are `names`. */
export function canPipeline(client: pg.ClientBase, names: readonly string[]): boolean {
  if (queryClassOf(client) === undefined) return false;
  const parsed = connectionOf(client)!.parsedStatements;
  return names.every((name) => parsed[name] !== undefined);
}

/**
 * `leading`, then `last`, in one round trip, sent with `send` (the client's own `query`, past any
 * wrapper). Resolves with the last statement's result, or rejects with the first error. Only
 * when canPipeline said yes.
 */
export function pipelinedQuery(
  client: pg.ClientBase,
  send: (query: object) => unknown,
  leading: readonly PreparedStatement[],
  last: LastStatement,
): Promise<pg.QueryResult> {
  const Query = queryClassOf(client)!;
  let Pipelined = pipelinedClasses.get(Query);
  if (!Pipelined) {
    Pipelined = pipelinedClass(Query);
    pipelinedClasses.set(Query, Pipelined);
  }
  return new Promise((resolve, reject) => {
    const query = new Pipelined({
      ...(last.name === undefined ? { queryMode: 'extended' } : { name: last.name }),
      text: last.text,
      values: [...(last.values ?? [])],
      leading,
      callback: (error: Error | null, result: pg.QueryResult) => (error ? reject(error) : resolve(result)),
    });
    send(query);
  });
}

function pipelinedClass(Query: QueryClass): QueryClass {
  return class PipelinedQuery extends Query {
    readonly #leading: readonly PreparedStatement[];
    /** Statements in front whose CommandComplete has not come yet: their messages are not the result's. */
    #ahead: number;

    constructor(config: object) {
      super(config);
      this.#leading = (config as { leading: readonly PreparedStatement[] }).leading;
      this.#ahead = this.#leading.length;
    }

    /**
     * Never throws: node-postgres calls submit with the query already active, and a throw would
     * leave the client waiting for an answer that never comes (every later query queued behind
     * it). Refused instead, with nothing written (writtenAtOnce), and the client goes on. (A
     * client of an older node-postgres than this package's lacks what this Query class reads,
     * `submittedNamedStatements`: the backend check then fails, and the connection is not used
     * this way, kysely-backend-check.ts.)
     */
    override submit(connection: Connection): Error | null {
      try {
        return this.#submit(connection);
      } catch (error) {
        return error instanceof Error ? error : new Error(String(error));
      }
    }

    #submit(connection: Connection): Error | null {
      // What node-postgres's own submit refuses, it refuses before writing anything: refused here
      // before the statements in front are written (they would go without their Sync).
      const { name, text } = this as unknown as { name?: string; text: string };
      const previous = name === undefined ? undefined : (connection.parsedStatements[name] ?? connection.submittedNamedStatements?.[name]);
      if (previous !== undefined && previous !== text) return super.submit(connection);
      // Said by canPipeline (or by the caller's own record) beforehand; checked again here, where
      // it is certain, since a Bind of a statement never parsed would fail the whole transaction.
      const unparsed = this.#leading.find((statement) => connection.parsedStatements[statement.name] !== statement.text);
      if (unparsed) return new Error(`pg-once: prepared statement ${unparsed.name} is not parsed on this connection`);
      return writtenAtOnce(connection, () => {
        for (const statement of this.#leading) {
          connection.bind({ portal: '', statement: statement.name, values: statement.values.map(textValue) });
          connection.execute({ portal: '', rows: 0 });
        }
        // The last statement as node-postgres sends it: Parse if it is new, Bind, Describe, Execute, Sync.
        return super.submit(connection);
      });
    }

    /** What a logger or an instrumentation that prints the query shows: the statements' texts. */
    override toString(): string {
      const { text } = this as unknown as { text: string };
      return [...this.#leading.map((statement) => statement.text), text].join('; ');
    }

    override handleDataRow(message: unknown): void {
      if (this.#ahead === 0) super.handleDataRow(message);
    }

    override handleCommandComplete(message: unknown, connection: unknown): void {
      if (this.#ahead > 0) this.#ahead -= 1;
      else super.handleCommandComplete(message, connection);
    }
  };
}

/**
 * A pipelined query that is its own promise as well: for a library that hands the SQL it is
 * given to node-postgres's `client.query` untouched and awaits what comes back (Kysely's
 * PostgresConnection: `await client.query(compiledQuery.sql, parameters)`). node-postgres takes
 * any object with a `submit` method as a query of its own and returns it; awaiting it then gives
 * the last statement's result. Built on this package's node-postgres Query class (the client's
 * is out of reach there): its messages are the protocol's, whatever version sends them.
 * `onSubmit` sees the connection the query is written to (its socket, for the backend check).
 * With no statements in front, it is one statement, named or not, as node-postgres sends it.
 */
export function awaitableQuery(
  leading: readonly PreparedStatement[],
  last: LastStatement,
  onSubmit?: (connection: { stream: object }) => void,
): AwaitableQuery {
  awaitableClass ??= awaitable(pipelinedClass(pg.Query as unknown as QueryClass));
  return new awaitableClass({
    ...(last.name === undefined ? { queryMode: 'extended' } : { name: last.name }),
    text: last.text,
    values: [...(last.values ?? [])],
    leading,
    onSubmit,
  }) as unknown as AwaitableQuery;
}

/** A node-postgres Submittable that can be awaited for its result. */
export interface AwaitableQuery extends PromiseLike<pg.QueryResult> {
  submit(connection: unknown): Error | null;
}

let awaitableClass: QueryClass | undefined;

function awaitable(Pipelined: QueryClass): QueryClass {
  return class AwaitablePipelinedQuery extends Pipelined {
    readonly #answer: Promise<pg.QueryResult>;
    readonly #onSubmit: ((connection: Connection) => void) | undefined;

    constructor(config: object) {
      let settle!: (error: Error | null, result?: pg.QueryResult) => void;
      const answer = new Promise<pg.QueryResult>((resolve, reject) => {
        settle = (error, result) => (error ? reject(error) : resolve(result!));
      });
      super({ ...config, callback: settle });
      this.#answer = answer;
      this.#onSubmit = (config as { onSubmit?: (connection: Connection) => void }).onSubmit;
    }

    override submit(connection: Connection): Error | null {
      this.#onSubmit?.(connection);
      return super.submit(connection);
    }

    // biome-ignore lint/suspicious/noThenProperty: awaited by the library that sent it, as node-postgres's own query promise would be
    then<T, E>(onFulfilled?: (result: pg.QueryResult) => T | PromiseLike<T>, onRejected?: (error: unknown) => E | PromiseLike<E>): Promise<T | E> {
      return this.#answer.then(onFulfilled, onRejected);
    }
  };
}

/**
 * Runs `send`, which writes protocol messages to the connection's socket, and writes what it
 * wrote as one buffer, in one `write` (as cork/uncork would, in one `writev` of a dozen small
 * buffers), or nothing at all when it threw or refused (returned an Error): messages without
 * their Sync would leave the statements in front to run with whatever the connection sends next.
 */
function writtenAtOnce(connection: Connection, send: () => Error | null): Error | null {
  const stream = connection.stream;
  const write = stream.write;
  const chunks: Buffer[] = [];
  stream.write = (chunk: Buffer) => {
    chunks.push(chunk);
    return true;
  };
  let refused: Error | null;
  try {
    refused = send();
  } finally {
    stream.write = write;
  }
  if (refused === null && chunks.length > 0) stream.write(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
  return refused;
}

/** A value of a statement in front, in the text format, as node-postgres would send it. */
function textValue(value: unknown): string | Buffer | null {
  if (value === null || value === undefined) return null;
  if (Buffer.isBuffer(value)) return value;
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') return String(value);
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  throw new TypeError(`pg-once: cannot send a value of type ${typeof value} in front of a pipelined statement`);
}
