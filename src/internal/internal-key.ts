/**
 * The key namespaces pg-once writes itself, kept apart from every key a user or a model supplies.
 *
 * Inbox records (`inbox:<message id>`), MCP calls (`mcp:<client key>`) and LangGraph calls
 * (`lg:<thread>:...`) live in once.idempotency_keys beside the application's own keys. If a key
 * given to runIdempotent could take one of these forms, a prompt-injected model writing
 * `inbox:<id of tomorrow's webhook>` would claim that record first: the webhook's handler would
 * then never run (KEY_REUSED, or the tool's result replayed to it). So assertValidKey refuses a
 * key in a reserved namespace unless it is the one key pg-once's own caller is running right now,
 * which that caller declares with runWithInternalKey. A string cannot carry that declaration, so
 * no key built from data (a model's output, a header, a client's `_meta`) can.
 *
 * Why a scope rather than a different prefix alphabet: the namespaces keep the prefixes 0.1
 * already wrote, so a webhook redelivered across an upgrade still finds its record.
 */
import { AsyncLocalStorage } from 'node:async_hooks';

/**
 * Prefixes of the keys pg-once writes itself; no user or model key may start with one. `once:` is
 * held for namespaces added later, so adding one never turns a user's existing key invalid.
 */
export const RESERVED_KEY_PREFIXES = ['inbox:', 'mcp:', 'lg:', 'once:'] as const;

/** The reserved prefix `key` starts with, or undefined. */
export function reservedPrefixOf(key: string): string | undefined {
  return RESERVED_KEY_PREFIXES.find((prefix) => key.startsWith(prefix));
}

/**
 * The internal key being run. An AsyncLocalStorage, not a module variable set around a
 * synchronous call: runIdempotent may await before it validates its key, and concurrent calls
 * must not see each other's.
 */
const running = new AsyncLocalStorage<string>();

/**
 * Runs `call` (a runIdempotent of pg-once's own) with `key` allowed although it is in a reserved
 * namespace. Pass the call's fn through `outsideInternalKey`, so that code running inside it (the
 * user's handler) is back to the rules of user keys.
 */
export function runWithInternalKey<T>(key: string, call: () => T): T {
  if (reservedPrefixOf(key) === undefined) {
    throw new TypeError(`pg-once: internal key ${JSON.stringify(key)} is outside the reserved namespaces (a pg-once bug).`);
  }
  return running.run(key, call);
}

/** Whether `key` is the internal key pg-once is running in this async context. */
export function isRunningInternalKey(key: string): boolean {
  return running.getStore() === key;
}

/** Wraps a handler so that it runs without the internal key's allowance. */
export function outsideInternalKey<A extends unknown[], R>(fn: (...args: A) => R): (...args: A) => R {
  return (...args) => running.exit(() => fn(...args));
}
