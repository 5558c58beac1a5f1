/**
 * Part of `npm run docs:check`: every relative link of the documentation points at a file that
 * exists, and every `#anchor` into a markdown file at one of its headings (GitHub's slugs), so a
 * section that is renamed or moved cannot leave dead cross-references behind.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';
import type { SnippetProblem } from './check-doc-snippets.ts';

/** GitHub's anchor for a heading: lower case, punctuation but `-` and `_` dropped, spaces to `-`. */
export function headingSlug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\- _]/gu, '')
    .replace(/ /g, '-');
}

/** The anchors of a markdown text: its headings' slugs, outside code blocks. */
export function anchorsOf(markdown: string): Set<string> {
  const anchors = new Set<string>();
  let inCode = false;
  for (const line of markdown.split('\n')) {
    if (/^\s*```/u.test(line)) inCode = !inCode;
    const heading = inCode ? null : /^#{1,6}\s+(.*)$/u.exec(line);
    if (heading) anchors.add(headingSlug(heading[1]!));
  }
  return anchors;
}

/** Dead relative links and anchors in `files` (paths relative to `root`). */
export function checkLinks(root: string, files: readonly string[]): SnippetProblem[] {
  const problems: SnippetProblem[] = [];
  for (const file of files) {
    const lines = readFileSync(join(root, file), 'utf8').split('\n');
    let inCode = false;
    lines.forEach((line, index) => {
      if (/^\s*```/u.test(line)) inCode = !inCode;
      if (inCode) return;
      for (const [, link] of line.matchAll(/\]\(([^)\s]+)\)/gu)) {
        if (/^[a-z]+:/iu.test(link!)) continue; // https:, mailto:
        const [path, anchor] = link!.split('#') as [string, string | undefined];
        const target = path === '' ? file : normalize(join(dirname(file), path));
        if (!existsSync(join(root, target))) {
          problems.push({ file, line: index + 1, message: `dead link: ${link} (no ${target})` });
        } else if (anchor && target.endsWith('.md') && !anchorsOf(readFileSync(join(root, target), 'utf8')).has(anchor)) {
          problems.push({ file, line: index + 1, message: `dead anchor: ${link} (no heading "#${anchor}" in ${target})` });
        }
      }
    });
  }
  return problems;
}
