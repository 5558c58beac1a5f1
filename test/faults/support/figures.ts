/**
 * The one line of figures each scenario prints: operations, faults injected, lost, doubled, plus
 * scenario-specific details. Also appended to a file the figures setup prints as a table at the
 * end of the run (test/faults/figures-setup.ts), so the whole suite's numbers sit in one place.
 */
import { appendFileSync } from 'node:fs';
import { inject } from 'vitest';
import { FAULT_SCALE, FAULT_SEED } from './scale.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    /** JSON-lines file the scenarios append their figures to. */
    faultFiguresFile: string;
  }
}

export interface Figures {
  scenario: string;
  operations: number;
  faults: number;
  lost: number;
  doubled: number;
  /** Anything else worth a number: repeats, waits, error kinds... */
  detail?: Record<string, unknown>;
}

export function recordFigures(figures: Figures): void {
  const detail = Object.entries(figures.detail ?? {})
    .map(([name, value]) => `${name}=${typeof value === 'object' ? JSON.stringify(value) : String(value)}`)
    .join(' ');
  const line =
    `[faults] ${figures.scenario}: operations=${figures.operations} faults=${figures.faults} ` +
    `lost=${figures.lost} doubled=${figures.doubled}${detail ? ` ${detail}` : ''} (seed=${FAULT_SEED} scale=${FAULT_SCALE})`;
  console.log(line);
  appendFileSync(inject('faultFiguresFile'), `${JSON.stringify({ ...figures, seed: FAULT_SEED, scale: FAULT_SCALE })}\n`);
}
