/**
 * Identifiers that reach Postgres as text (keys, tenant ids, topics, ordering keys, headers) must
 * arrive exactly as given. Two kinds of string do not:
 * - control characters: U+0000 is refused by Postgres text (a driver error that aborts the
 *   caller's transaction); the others are refused because ids holding them are bugs or attacks;
 * - unpaired surrogates: not Unicode, so the driver's UTF-8 encoding turns every one of them into
 *   U+FFFD, and 'k\ud800' and 'k\udc00' become the SAME key (or tenant id) in the database.
 */
const CONTROL_CHARACTERS = /\p{Cc}/u;

/** Why `text` cannot be used as an identifier, or undefined when it can. */
export function textProblem(text: string): string | undefined {
  if (CONTROL_CHARACTERS.test(text)) return 'must not contain control characters';
  if (!text.isWellFormed()) return 'must be well-formed Unicode (no unpaired surrogates)';
  return undefined;
}
