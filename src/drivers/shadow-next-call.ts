/**
 * Replaces `target[name]` for its next call only, for a library that takes a resource as the
 * first, synchronous act of a call and offers no way to hand it one (Drizzle's transaction takes
 * its client from the Pool, or calls postgres.js's `begin`, before anything is awaited). The
 * replacement gets the method's own implementation; the returned function puts the method back
 * (call it right after the library's call returned, whether or not the method was called).
 */
export function shadowNextCall<F extends (...args: any[]) => unknown>(
  target: object,
  name: string,
  replacement: (own: F, ...args: Parameters<F>) => ReturnType<F>,
): () => void {
  const record = target as Record<string, unknown>;
  const ownProperty = Object.hasOwn(target, name) ? record[name] : undefined;
  const own = record[name] as F;
  const unshadow = () => {
    if (ownProperty !== undefined) record[name] = ownProperty;
    else delete record[name];
  };
  record[name] = (...args: Parameters<F>) => {
    unshadow();
    return replacement((own as (...a: unknown[]) => unknown).bind(target) as F, ...args);
  };
  return unshadow;
}
