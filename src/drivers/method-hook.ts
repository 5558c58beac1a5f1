/**
 * Replaces a method of a library's object (a node-postgres client's `query`, a Kysely
 * connection's `executeQuery`) for the length of one transaction, without adding and deleting a
 * property each time.
 *
 * V8 keeps an object's properties in a fast, fixed layout until one of them is deleted (unless it
 * is the last one added): from then on the object is a hash table for good, and every property
 * read of the library's own hot code on it (node-postgres's query queue, its connection, Kysely's
 * private fields) is a hash lookup. The wrappers used to put a method on the object per
 * transaction and delete it afterwards, which left every pooled connection in that state; CPU per
 * call then grew by tens of microseconds on every library (measured: bench/drivers.ts).
 *
 * So a method the object inherits gets, once, a permanent own dispatcher that calls the
 * transaction's replacement while one is set and the inherited method otherwise; a method that
 * is already the object's own (pg-pool's `release`, reassigned on every checkout; Kysely's
 * logging wrapper) is assigned and assigned back, which keeps the layout.
 */

type Method = (...args: unknown[]) => unknown;

interface Slot {
  /** What the method was before the dispatcher was installed. */
  original: Method;
  /** The transaction's replacement, while one is set. */
  replacement: Method | undefined;
}

/** Each object's dispatchers, by method name. */
const slots = new WeakMap<object, Map<string, Slot>>();
const dispatchers = new WeakSet<Method>();

export interface Hooked {
  /** The method as it was before the hook: call it (with the object as `this`) to get past the hook. */
  original: Method;
  /** Ends the hook: calls go to `original` again. */
  restore(): void;
}

/**
 * Whether `target[name]` is the object's own and put there by someone else (a library's wrapper,
 * as Kysely's logging puts around `executeQuery`), not inherited and not a dispatcher of ours.
 */
export function wrappedByOthers(target: object, name: string): boolean {
  return Object.hasOwn(target, name) && !dispatchers.has((target as Record<string, unknown>)[name] as Method);
}

/** Sends calls of `target[name]` to `replacement` until `restore()`. */
export function hookMethod(target: object, name: string, replacement: Method): Hooked {
  const record = target as Record<string, unknown>;
  const current = record[name] as Method;
  if (Object.hasOwn(target, name) && !dispatchers.has(current)) {
    record[name] = replacement;
    return {
      original: current,
      restore: () => {
        if (record[name] === replacement) record[name] = current;
      },
    };
  }
  const slot = slotOf(target, name, current);
  slot.replacement = replacement;
  return {
    original: slot.original,
    restore: () => {
      if (slot.replacement === replacement) slot.replacement = undefined;
    },
  };
}

function slotOf(target: object, name: string, current: Method): Slot {
  let byName = slots.get(target);
  if (!byName) {
    byName = new Map();
    slots.set(target, byName);
  }
  let slot = byName.get(name);
  if (slot) return slot;
  const created: Slot = { original: current, replacement: undefined };
  const dispatcher = function (this: unknown, ...args: unknown[]) {
    const replacement = created.replacement;
    return replacement ? replacement(...args) : created.original.apply(this ?? target, args);
  };
  dispatchers.add(dispatcher);
  (target as Record<string, unknown>)[name] = dispatcher;
  byName.set(name, created);
  slot = created;
  return slot;
}
