/**
 * `npm run docs:check`: type-checks every TypeScript code block of the documentation (README.md,
 * CONTRIBUTING.md, docs/, examples/README.md), so an example that drifts from the API fails CI
 * instead of a reader's first try.
 *
 * Each ```ts block becomes a module of its own in a scratch directory inside the repository (so
 * kysely, pg and the frameworks resolve from node_modules), importing pg-once by its package name:
 * `pg-once` and every subpath of package.json's exports map resolve to the source under src/.
 * Blocks are fragments, so the names a fragment uses without defining (`db`, `tenantId`, `app`,
 * ...) are declared once, with real types, in scripts/doc-snippet-globals.d.ts; a block's own
 * declarations shadow them. A block that cannot compile on its own says why in its info string,
 * visibly: ```ts skip-check: <reason>. A skip without a reason is itself an error.
 *
 * It also checks the documentation's relative links and anchors (scripts/check-doc-links.ts).
 * Exit code 1, with each error at its markdown file and line, when any block does not compile or
 * any link is dead.
 */
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import ts from 'typescript';
import { checkLinks } from './check-doc-links.ts';

export interface Snippet {
  /** The markdown file, relative to the repository. */
  file: string;
  /** The line of the markdown file the block's first line of code is on (1-based). */
  line: number;
  code: string;
  /** The reason given after `skip-check:`, when the block is skipped. */
  skipReason?: string;
}

export interface SnippetProblem {
  file: string;
  line: number;
  message: string;
}

export interface SnippetReport {
  checked: number;
  skipped: Snippet[];
  problems: SnippetProblem[];
}

const TYPESCRIPT_FENCE = /^(\s*)```(?:ts|typescript)(?:\s+(.*))?$/u;

/** The ```ts blocks of one markdown text, with where each starts. */
export function extractSnippets(file: string, markdown: string): { snippets: Snippet[]; problems: SnippetProblem[] } {
  const lines = markdown.split('\n');
  const snippets: Snippet[] = [];
  const problems: SnippetProblem[] = [];
  for (let index = 0; index < lines.length; index++) {
    const open = TYPESCRIPT_FENCE.exec(lines[index]!);
    if (!open) {
      // Skip other fenced blocks whole, so a ```ts inside a ```md example is not taken.
      if (/^\s*```/u.test(lines[index]!)) {
        const end = lines.findIndex((text, at) => at > index && /^\s*```\s*$/u.test(text));
        if (end !== -1) index = end;
      }
      continue;
    }
    const indent = open[1]!.length;
    const info = (open[2] ?? '').trim();
    const end = lines.findIndex((text, at) => at > index && /^\s*```\s*$/u.test(text));
    if (end === -1) {
      problems.push({ file, line: index + 1, message: 'unclosed ```ts block' });
      break;
    }
    const code = lines
      .slice(index + 1, end)
      .map((text) => text.slice(Math.min(indent, text.length - text.trimStart().length)))
      .join('\n');
    const snippet: Snippet = { file, line: index + 2, code };
    if (info !== '') {
      const skip = /^skip-check(?::\s*(.*))?$/u.exec(info);
      if (!skip) {
        problems.push({ file, line: index + 1, message: `unknown info string "${info}" (only "skip-check: <reason>" is allowed)` });
      } else if (!skip[1]?.trim()) {
        problems.push({ file, line: index + 1, message: 'skip-check needs a visible reason: ```ts skip-check: <why this block cannot compile>' });
      } else {
        snippet.skipReason = skip[1].trim();
      }
    }
    snippets.push(snippet);
    index = end;
  }
  return { snippets, problems };
}

/** Markdown files whose blocks are checked: README.md, CONTRIBUTING.md, docs/**, examples/README.md. */
export function documentationFiles(root: string): string[] {
  const files = ['README.md', 'CONTRIBUTING.md', 'examples/README.md'].filter((file) => {
    try {
      readFileSync(join(root, file));
      return true;
    } catch {
      return false;
    }
  });
  const walk = (directory: string): string[] =>
    readdirSync(join(root, directory), { withFileTypes: true }).flatMap((entry) => {
      const path = join(directory, entry.name);
      if (entry.isDirectory()) return path === join('docs', 'api') ? [] : walk(path);
      return entry.name.endsWith('.md') ? [path] : [];
    });
  return [...files, ...walk('docs')];
}

/** `pg-once` and each subpath of the exports map, to its source file under src/. */
function packagePaths(root: string): Record<string, string[]> {
  const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { name: string; exports: Record<string, string | { types?: string }> };
  const paths: Record<string, string[]> = {};
  for (const [subpath, target] of Object.entries(manifest.exports)) {
    const types = typeof target === 'string' ? target : target.types;
    if (!types?.endsWith('.d.ts')) continue;
    const source = types.replace(/^\.\/dist\//u, './src/').replace(/\.d\.ts$/u, '.ts');
    paths[subpath === '.' ? manifest.name : `${manifest.name}/${subpath.slice(2)}`] = [resolve(root, source)];
  }
  return paths;
}

/** Type-checks `snippets` (those not skipped) together, one module each, against the source. */
export function checkSnippets(root: string, snippets: readonly Snippet[], scratch = join(root, '.doc-snippets')): SnippetProblem[] {
  rmSync(scratch, { recursive: true, force: true });
  mkdirSync(scratch, { recursive: true });
  try {
    const origins = new Map<string, Snippet>();
    snippets.forEach((snippet, index) => {
      if (snippet.skipReason !== undefined) return;
      const name = resolve(scratch, `${String(index).padStart(3, '0')}-${snippet.file.replace(/[^A-Za-z0-9]+/gu, '-')}.ts`);
      // `export {}` makes every block a module: its declarations shadow the shared globals
      // instead of clashing with them or with another block's.
      writeFileSync(name, `${snippet.code}\nexport {};\n`);
      origins.set(name, snippet);
    });
    const base = ts.getParsedCommandLineOfConfigFile(
      join(root, 'tsconfig.json'),
      {},
      {
        ...ts.sys,
        onUnRecoverableConfigFileDiagnostic: (diagnostic) => {
          throw new Error(ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n'));
        },
      },
    );
    if (!base) throw new Error('cannot read tsconfig.json');
    const options: ts.CompilerOptions = { ...base.options, noEmit: true, paths: packagePaths(root), noUnusedLocals: false };
    const program = ts.createProgram({
      rootNames: [...origins.keys(), join(root, 'scripts', 'doc-snippet-globals.d.ts')],
      options,
    });
    const problems: SnippetProblem[] = [];
    for (const diagnostic of ts.getPreEmitDiagnostics(program)) {
      const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n');
      const origin = diagnostic.file ? origins.get(resolve(diagnostic.file.fileName)) : undefined;
      if (diagnostic.file && origin && diagnostic.start !== undefined) {
        const { line } = diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start);
        problems.push({ file: origin.file, line: origin.line + line, message });
      } else {
        // An error outside the blocks (the globals file, the source) fails the check too.
        const where = diagnostic.file ? relative(root, diagnostic.file.fileName) : 'tsconfig';
        problems.push({
          file: where,
          line: diagnostic.file && diagnostic.start !== undefined ? diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start).line + 1 : 0,
          message,
        });
      }
    }
    return problems;
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

/** Extracts and checks every block of the documentation of the repository at `root`. */
export function checkDocumentation(root: string): SnippetReport {
  const snippets: Snippet[] = [];
  const files = documentationFiles(root);
  const problems: SnippetProblem[] = checkLinks(root, files);
  for (const file of files) {
    const extracted = extractSnippets(file, readFileSync(join(root, file), 'utf8'));
    snippets.push(...extracted.snippets);
    problems.push(...extracted.problems);
  }
  problems.push(...checkSnippets(root, snippets));
  const skipped = snippets.filter((snippet) => snippet.skipReason !== undefined);
  return { checked: snippets.length - skipped.length, skipped, problems };
}

if (import.meta.main) {
  const root = resolve(import.meta.dirname, '..');
  const report = checkDocumentation(root);
  for (const snippet of report.skipped) console.log(`skipped ${snippet.file}:${snippet.line - 1}: ${snippet.skipReason}`);
  for (const problem of report.problems) console.error(`${problem.file}:${problem.line}: ${problem.message}`);
  console.log(`docs:check: ${report.checked} TypeScript blocks compiled, ${report.skipped.length} skipped, ${report.problems.length} problems`);
  process.exitCode = report.problems.length === 0 ? 0 : 1;
}
