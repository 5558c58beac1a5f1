/**
 * A statement of pg-once's own with its `$n` placeholders replaced by SQL literals, for the
 * simple query protocol: only it carries several statements in one round trip (BEGIN with the
 * tenant's statement, the result's UPDATE with COMMIT), and it takes no parameters.
 *
 * Only for pg-once's fixed statements, whose text has no `$n` inside a string or a comment.
 * Strings become E'' literals with backslashes and quotes doubled, which read the same whatever
 * standard_conforming_strings is; the connection's client_encoding is UTF8 (node-postgres sets it
 * at startup), in which no byte of a multibyte character is a quote or a backslash.
 */

export interface Statement {
  text: string;
  values: readonly unknown[];
}

const PLACEHOLDER = /\$(\d+)/g;

export function inlineValues({ text, values }: Statement): string {
  return text.replace(PLACEHOLDER, (_match, index: string) => {
    const position = Number(index) - 1;
    if (position < 0 || position >= values.length) throw new Error(`pg-once: statement placeholder $${index} has no value`);
    return sqlLiteral(values[position]);
  });
}

export function sqlLiteral(value: unknown): string {
  if (value === null || value === undefined) return 'NULL';
  if (typeof value === 'string') return `E'${value.replaceAll('\\', '\\\\').replaceAll("'", "''")}'`;
  if (typeof value === 'boolean') return value ? 'TRUE' : 'FALSE';
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new Error(`pg-once: cannot inline the number ${value}`);
    return String(value);
  }
  if (value instanceof Uint8Array) return `E'\\\\x${Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('hex')}'::bytea`;
  throw new Error(`pg-once: cannot inline a value of type ${typeof value}`);
}
