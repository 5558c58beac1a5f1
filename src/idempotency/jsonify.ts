/**
 * The type of a value after a trip through JSON, which is what runIdempotent returns on the first
 * call and on every replay: a Date becomes its ISO string (via toJSON), functions and symbols are
 * refused at run time, and everything else keeps its shape.
 */
export type Jsonify<T> = T extends { toJSON(...args: any[]): infer R }
  ? Jsonify<R>
  : T extends string | number | boolean | null | undefined
    ? T
    : T extends bigint | symbol | ((...args: any[]) => unknown)
      ? never
      : T extends object
        ? { [K in keyof T]: Jsonify<T[K]> }
        : unknown;
