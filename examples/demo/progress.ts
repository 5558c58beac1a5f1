/** Progress while the runs go: a bar redrawn in place on a terminal, a line per 10% otherwise. */
import type { DemoStats } from './stats.ts';

const BAR_WIDTH = 30;

export function startProgress(total: number, stats: DemoStats): { stop(): void } {
  const started = performance.now();
  const tty = process.stdout.isTTY === true;
  let printedTenth = 0;
  const line = () => {
    const seconds = ((performance.now() - started) / 1_000).toFixed(1);
    const duplicates = stats.calls.replayed + stats.calls.waited;
    return `${stats.runsDone}/${total} runs · ${stats.received.toLocaleString('en-US')} calls · ${duplicates.toLocaleString('en-US')} duplicates answered · ${seconds} s`;
  };
  const draw = () => {
    if (tty) {
      const filled = Math.round((stats.runsDone / total) * BAR_WIDTH);
      process.stdout.write(`\r  [${'█'.repeat(filled)}${'░'.repeat(BAR_WIDTH - filled)}] ${line()}\u001b[K`);
      return;
    }
    const tenth = Math.floor((stats.runsDone / total) * 10);
    if (tenth > printedTenth) {
      printedTenth = tenth;
      console.log(`  ${line()}`);
    }
  };
  const timer = setInterval(draw, tty ? 100 : 250);
  return {
    stop() {
      clearInterval(timer);
      draw();
      if (tty) process.stdout.write('\n');
    },
  };
}
