/**
 * The layout that shows who may call what, kept by reading the source: operator-only functions
 * live in src/ops/ and each runs the one role check first; the code an application calls does
 * not reach into src/ops/; and modules import the modules that define what they use, never the
 * package's entry points (src/index.ts and the subpaths of package.json's exports), which would
 * load every adapter's dependencies and hide the real dependency graph.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..');
const SRC = join(ROOT, 'src');

function sourceFiles(directory: string): string[] {
  return readdirSync(directory, { withFileTypes: true }).flatMap((entry) => {
    const path = join(directory, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith('.ts') ? [path] : [];
  });
}

const parse = (file: string) => ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);

/** The files this one imports or re-exports, relative to the repository. */
function importsOf(file: string): string[] {
  const source = parse(file);
  const found: string[] = [];
  for (const statement of source.statements) {
    const specifier = (ts.isImportDeclaration(statement) || ts.isExportDeclaration(statement)) && statement.moduleSpecifier;
    if (specifier && ts.isStringLiteral(specifier) && specifier.text.startsWith('.')) {
      found.push(relative(ROOT, resolve(dirname(file), specifier.text)));
    }
  }
  return found;
}

const FILES = sourceFiles(SRC).map((file) => relative(ROOT, file));

describe('source layout', () => {
  it("no module imports an entry point of the package (src/index.ts or an exports subpath's module)", () => {
    const manifest = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { exports: Record<string, { default?: string } | string> };
    const entries = new Set(
      Object.values(manifest.exports)
        .map((target) => (typeof target === 'string' ? target : target.default))
        .filter((target): target is string => target?.startsWith('./dist/') === true)
        .map((target) => target.replace(/^\.\/dist\//, 'src/').replace(/\.js$/, '.ts')),
    );
    expect(entries).toContain('src/index.ts');
    const offending = FILES.flatMap((file) => importsOf(join(ROOT, file)).flatMap((target) => (entries.has(target) ? [`${file} -> ${target}`] : [])));
    expect(offending).toEqual([]);
  });

  it('every operator function of src/ops/ that opens a database runs the operator role check', () => {
    const unguarded: string[] = [];
    let checked = 0;
    for (const file of FILES.filter((path) => dirname(path) === 'src/ops')) {
      for (const statement of parse(join(ROOT, file)).statements) {
        if (!ts.isFunctionDeclaration(statement) || !statement.body || !statement.name) continue;
        const exported = statement.modifiers?.some((modifier) => modifier.kind === ts.SyntaxKind.ExportKeyword);
        const target = statement.parameters[0]?.type?.getText();
        if (!exported || target !== 'DatabaseTarget') continue;
        checked += 1;
        if (!statement.body.getText().includes('assertOperatorRole(')) unguarded.push(`${file}: ${statement.name.text}`);
      }
    }
    // migrate, sweep, status, doctor, the dead events' two and the limits' three.
    expect(checked).toBeGreaterThanOrEqual(9);
    expect(unguarded).toEqual([]);
  });

  it('the code an application calls does not import operator-only code', () => {
    const applicationSide = (file: string) =>
      /^src\/(idempotency|inbox|http|drivers|testing)\//.test(file) ||
      (file.startsWith('src/integrations/') && !file.startsWith('src/integrations/graphile-worker')) ||
      ['src/tenant.ts', 'src/set-tenant.ts', 'src/keys.ts', 'src/outbox/enqueue.ts'].includes(file);
    const offending = FILES.filter(applicationSide).flatMap((file) =>
      importsOf(join(ROOT, file)).flatMap((target) => (target.startsWith('src/ops/') ? [`${file} -> ${target}`] : [])),
    );
    expect(offending).toEqual([]);
  });
});
