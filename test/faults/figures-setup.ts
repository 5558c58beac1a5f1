/**
 * Global setup of the fault suite (beside test/support/global-setup.ts, which provides the
 * Postgres server): a file the scenarios append their figures to, printed as one table when the
 * run ends. ONCE_FAULT_FIGURES_OUT=path also writes the table there (for docs/guarantees.md).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import './support/figures.ts';

interface Row {
  scenario: string;
  operations: number;
  faults: number;
  lost: number;
  doubled: number;
  detail?: Record<string, unknown>;
  seed: number;
  scale: number;
}

export default function setup(project: TestProject) {
  const directory = mkdtempSync(join(tmpdir(), 'pg-once-faults-'));
  const file = join(directory, 'figures.jsonl');
  writeFileSync(file, '');
  project.provide('faultFiguresFile', file);
  const started = Date.now();

  return () => {
    const rows = readFileSync(file, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as Row);
    rmSync(directory, { recursive: true, force: true });
    if (rows.length === 0) return;
    rows.sort((a, b) => a.scenario.localeCompare(b.scenario));
    const table = [
      '| scenario | operations | faults injected | lost | doubled | details |',
      '| --- | ---: | ---: | ---: | ---: | --- |',
      ...rows.map(
        (row) =>
          `| ${row.scenario} | ${row.operations} | ${row.faults} | ${row.lost} | ${row.doubled} | ` +
          `${Object.entries(row.detail ?? {})
            .map(([name, value]) => `${name}=${typeof value === 'object' ? JSON.stringify(value) : String(value)}`)
            .join(', ')} |`,
      ),
      '',
      `seed ${rows[0]!.seed}, scale ${rows[0]!.scale}, wall ${((Date.now() - started) / 1_000).toFixed(1)} s`,
    ].join('\n');
    console.log(`\n[faults] figures\n${table}\n`);
    if (process.env.ONCE_FAULT_FIGURES_OUT) writeFileSync(process.env.ONCE_FAULT_FIGURES_OUT, `${table}\n`);
  };
}
