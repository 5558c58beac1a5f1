/**
 * HTML written by template literal, escaped by default. Everything the dashboard shows comes from
 * outbox payloads, headers, errors, tenant ids and keys, all written by applications or by the
 * receivers they call: hostile input. Interpolating a plain value always escapes it; only a
 * `SafeHtml` (what `html` itself returns) is inserted as is, so forgetting to escape is not
 * something a page can do by accident.
 */
export class SafeHtml {
  readonly text: string;

  constructor(text: string) {
    this.text = text;
  }

  toString(): string {
    return this.text;
  }
}

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Text as HTML text or as a double- or single-quoted attribute value. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (character) => ESCAPES[character]!);
}

function fragment(value: unknown): string {
  if (value instanceof SafeHtml) return value.text;
  if (value === null || value === undefined || value === false) return '';
  if (Array.isArray(value)) return value.map(fragment).join('');
  return escapeHtml(String(value));
}

/** `html\`<td>${value}</td>\``: values escaped, nested `html` fragments and arrays of them kept. */
export function html(strings: TemplateStringsArray, ...values: unknown[]): SafeHtml {
  let text = strings[0]!;
  for (let i = 0; i < values.length; i += 1) text += fragment(values[i]) + strings[i + 1]!;
  return new SafeHtml(text);
}
