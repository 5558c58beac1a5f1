/**
 * The documentation checker (scripts/check-doc-snippets.ts, `npm run docs:check` in .ci/run)
 * must fail on a block that does not compile, at the block's line in its markdown file, and may
 * skip a block only for a visible reason. Checked here on small markdown texts, compiled against
 * the real source exactly as the documentation is.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkLinks, headingSlug } from '../scripts/check-doc-links.ts';
import { checkSnippets, extractSnippets } from '../scripts/check-doc-snippets.ts';

const root = join(import.meta.dirname, '..');

const markdown = [
  '# A page', // 1
  '', // 2
  '```ts', // 3
  "import { withTenant } from 'pg-once';", // 4
  'await withTenant(db, tenantId, async () => 1);', // 5
  '```', // 6
  '', // 7
  '```ts', // 8
  "import { runIdempotent } from 'pg-once';", // 9
  '', // 10
  "await runIdempotent(db, 'key', async () => 1); // a Kysely instance where a transaction belongs", // 11
  '```', // 12
  '', // 13
  '```ts skip-check: a fragment of a signature, shown for reading', // 14
  'function (', // 15
  '```', // 16
  '', // 17
  '```ts skip-check', // 18
  'const x = 1;', // 19
  '```', // 20
  '', // 21
  '```sh', // 22
  '```ts', // 23: inside a shell block, not a TypeScript block
  '```', // 24
].join('\n');

describe('docs:check', () => {
  it('extracts ts blocks with their first line, honours a skip with a reason, refuses one without', () => {
    const { snippets, problems } = extractSnippets('page.md', markdown);
    expect(snippets.map((snippet) => [snippet.line, snippet.skipReason])).toEqual([
      [4, undefined],
      [9, undefined],
      [15, 'a fragment of a signature, shown for reading'],
      [19, undefined],
    ]);
    expect(problems).toEqual([{ file: 'page.md', line: 18, message: expect.stringContaining('skip-check needs a visible reason') }]);
  });

  it('compiles blocks against the source by package name, and reports a block that does not compile at its markdown line', { timeout: 180_000 }, () => {
    const { snippets } = extractSnippets('page.md', markdown);
    const problems = checkSnippets(root, snippets.slice(0, 3), join(root, `.doc-snippets-test-${process.pid}`));
    // The first block compiles (withTenant takes a Kysely instance); the second passes one where
    // a transaction belongs, which must not compile; the third is skipped.
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatchObject({ file: 'page.md', line: 11, message: expect.stringContaining('Transaction') });
  });

  it('reports dead links and anchors, and takes anchors as GitHub makes them', () => {
    expect(headingSlug('In your own graphile-worker: `pg-once/graphile-worker`')).toBe('in-your-own-graphile-worker-pg-oncegraphile-worker');
    const docs = mkdtempSync(join(tmpdir(), 'doc-links-'));
    try {
      writeFileSync(
        join(docs, 'a.md'),
        '# A\n\n## Poolers\n\n[ok](b.md#the-relay) [here](#poolers) [gone](c.md) [moved](b.md#poolers) [web](https://example.com/x)\n',
      );
      writeFileSync(join(docs, 'b.md'), '# The relay\n\n```md\n## Poolers\n```\n');
      expect(checkLinks(docs, ['a.md', 'b.md'])).toEqual([
        { file: 'a.md', line: 5, message: expect.stringContaining('dead link: c.md') },
        { file: 'a.md', line: 5, message: expect.stringContaining('dead anchor: b.md#poolers') },
      ]);
    } finally {
      rmSync(docs, { recursive: true, force: true });
    }
  });
});
