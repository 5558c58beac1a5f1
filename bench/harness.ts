/**
 * Measuring helpers shared by the benchmarks: closed-loop throughput at a fixed concurrency, and
 * the table/JSON output. Every figure is printed beside a baseline measured in the same run, on
 * the same server, so ratios (not absolute numbers) carry from one machine to another.
 */

export interface Throughput {
  ops: number;
  seconds: number;
  opsPerSecond: number;
  errors: number;
}

/** Runs `op(worker, i)` from `concurrency` loops for `seconds` (after a warm-up) and counts. */
export async function measureThroughput(
  op: (worker: number, iteration: number) => Promise<unknown>,
  options: { concurrency: number; seconds: number; warmupSeconds?: number },
): Promise<Throughput> {
  const run = async (seconds: number) => {
    const deadline = performance.now() + seconds * 1_000;
    let ops = 0;
    let errors = 0;
    let firstError: unknown;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: options.concurrency }, async (_, worker) => {
        for (let iteration = 0; performance.now() < deadline; iteration += 1) {
          try {
            await op(worker, iteration);
            ops += 1;
          } catch (error) {
            errors += 1;
            firstError ??= error;
          }
        }
      }),
    );
    const elapsed = (performance.now() - started) / 1_000;
    if (errors > 0) console.error(`  ${errors} errors, first:`, firstError);
    return { ops, seconds: elapsed, opsPerSecond: ops / elapsed, errors };
  };
  if ((options.warmupSeconds ?? 0.5) > 0) await run(options.warmupSeconds ?? 0.5);
  return run(options.seconds);
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index]!;
}

/** Prints rows as an aligned text table. */
export function printTable(headers: string[], rows: (string | number)[][]): void {
  const cells = [headers, ...rows.map((row) => row.map((cell) => (typeof cell === 'number' ? formatNumber(cell) : cell)))];
  const widths = headers.map((_, column) => Math.max(...cells.map((row) => String(row[column] ?? '').length)));
  const line = (row: (string | number)[]) =>
    row.map((cell, column) => (column === 0 ? String(cell).padEnd(widths[column]!) : String(cell).padStart(widths[column]!))).join('  ');
  console.log(line(cells[0]!));
  console.log(widths.map((width) => '-'.repeat(width)).join('  '));
  for (const row of cells.slice(1)) console.log(line(row));
}

function formatNumber(value: number): string {
  if (!Number.isFinite(value)) return '-';
  if (Math.abs(value) >= 100) return Math.round(value).toLocaleString('en-US');
  return value.toFixed(2);
}
