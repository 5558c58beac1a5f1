/**
 * What the broker sinks (amqpSink, redisStreamSink) share: waiting for a broker's answer no longer
 * than the relay allows, and turning a client's error into the relay's "retry later".
 */
import { DeliveryFailedError, SinkMisconfiguredError } from '../../errors.ts';

/**
 * `promise`, or a rejection as soon as `signal` aborts or `timeoutMs` passes. Broker clients take
 * no signal, so the work itself goes on; its outcome is still observed, so a late failure is not
 * an unhandled rejection. A publish that lands after the caller gave up is harmless: the retry
 * carries the same dedupe id.
 */
export function settleWithin<T>(promise: Promise<T>, signal: AbortSignal, timeoutMs: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    const timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
    });
    if (signal.aborted) onAbort();
  });
}

/**
 * A transport or broker error, prefixed with the sink's name: the relay retries later. The last
 * error the client reported about its connection, when there is one, is quoted too: "no answer
 * within 5000 ms" alone does not say that the broker refuses the password.
 */
export function deliveryFailure(sink: string, what: string, error: unknown, connectionError?: unknown): DeliveryFailedError {
  let message = `pg-once ${sink}: ${what}: ${reasonOf(error)}`;
  if (connectionError !== undefined && connectionError !== error) message += ` (connection: ${reasonOf(connectionError)})`;
  return new DeliveryFailedError(message, { cause: error });
}

function reasonOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** A broker URL without its password, for messages that end up in logs and in last_error. */
export function redactedUrl(url: string): string {
  const parsed = URL.parse(url);
  if (!parsed) return 'the broker';
  if (parsed.password) parsed.password = '***';
  return parsed.toString();
}

/**
 * For `import(client).catch(missingPeer(...))`: the broker clients are optional peer dependencies,
 * so a missing one is a configuration problem (SinkMisconfiguredError, which stops the relay's
 * start) named with the command that fixes it, not a bare ERR_MODULE_NOT_FOUND.
 */
export function missingPeer(sink: string, client: string): (error: unknown) => never {
  return (error) => {
    if ((error as { code?: unknown }).code === 'ERR_MODULE_NOT_FOUND') {
      throw new SinkMisconfiguredError(`pg-once ${sink} needs the "${client}" package: npm install ${client}`, {
        cause: error,
      });
    }
    throw error;
  };
}

/** A broker client opened on first use and shared by concurrent deliveries (see lazyClient). */
export interface LazyClient<T> {
  /** The client, opening it if needed; rejects once the sink is closed. */
  get(): Promise<T>;
  /** Forgets the client (after a failed start, so the next use opens a fresh one) and returns it, if it opened. */
  forget(): Promise<T | undefined>;
  /** Marks the sink closed and returns the client to shut down, if one opened. */
  close(): Promise<T | undefined>;
}

/**
 * One client for a sink's life: opened lazily (so a relay whose sinks are never used does not
 * connect), forgotten when opening fails, so the next delivery tries again instead of failing on
 * a stale rejection until the process restarts. The clients reconnect by themselves once open.
 */
export function lazyClient<T>(sink: string, open: () => Promise<T>): LazyClient<T> {
  let client: Promise<T> | undefined;
  let closed = false;
  const forget = () => {
    const pending = client;
    client = undefined;
    return pending?.catch(() => undefined) ?? Promise.resolve(undefined);
  };
  return {
    get() {
      if (closed) return Promise.reject(new DeliveryFailedError(`pg-once ${sink}: the sink is closed.`));
      if (client === undefined) {
        // A failed open is forgotten, so the next get() tries again; unless forget() or another
        // get() already replaced it.
        const opening: Promise<T> = open().catch((error: unknown) => {
          if (client === opening) client = undefined;
          throw error;
        });
        client = opening;
      }
      return client;
    },
    forget,
    close() {
      closed = true;
      return forget();
    },
  };
}
