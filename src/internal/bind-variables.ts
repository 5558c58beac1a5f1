/**
 * Binds psql-style variables in a migration file: `:"name"` becomes a quoted identifier and
 * `:'name'` a quoted literal, exactly as `psql -v name=value -f file.sql` would, so a DBA can
 * apply the shipped files by hand with psql and get what `migrate` applies. `::"char"` (a cast)
 * is not a variable. A variable the file uses but the caller did not give is an error, never an
 * empty string.
 */
const VARIABLE = /(?<!:):(["'])([a-z_][a-z0-9_]*)\1/g;

export function bindVariables(sql: string, values: Readonly<Record<string, string>>): string {
  return sql.replace(VARIABLE, (_match, quote: string, name: string) => {
    const value = values[name];
    if (value === undefined) throw new Error(`pg-once: migration variable ${name} has no value`);
    return quote === '"' ? quoteIdentifier(value) : quoteLiteral(value);
  });
}

export function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

export function quoteLiteral(text: string): string {
  return `'${text.replaceAll("'", "''")}'`;
}
