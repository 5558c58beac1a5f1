/**
 * How big the fault scenarios run, and from which seed.
 *
 * ONCE_FAULT_SCALE multiplies every count (default 1: the sizes of issue 8, sized to finish in a
 * few minutes on 2 cores; 0.1 for a quick local pass, 5 for a long soak). ONCE_FAULT_SEED fixes
 * every random choice (fast-check runs, fn failures, kill points); CI uses a fixed default so a
 * red run can be replayed exactly, local runs pick a fresh seed and print it in every figures line.
 */

const rawScale = Number(process.env.ONCE_FAULT_SCALE ?? '1');
if (!Number.isFinite(rawScale) || rawScale <= 0) throw new Error(`ONCE_FAULT_SCALE must be a positive number (got ${process.env.ONCE_FAULT_SCALE})`);

export const FAULT_SCALE = rawScale;

/** The seed of this run: ONCE_FAULT_SEED, else a fixed one under CI, else the clock. */
export const FAULT_SEED = process.env.ONCE_FAULT_SEED ? Number(process.env.ONCE_FAULT_SEED) : process.env.CI ? 20_260_008 : Date.now() % 2_147_483_647;

/** `count` times the scale, at least `minimum`. */
export function scaled(count: number, minimum = 1): number {
  return Math.max(minimum, Math.round(count * FAULT_SCALE));
}

export interface Random {
  /** Uniform in [0, 1). */
  next(): number;
  /** Integer in [min, max], both included. */
  int(min: number, max: number): number;
  /** True with probability p. */
  chance(p: number): boolean;
  pick<T>(items: readonly T[]): T;
  shuffle<T>(items: T[]): T[];
}

/** mulberry32: small, fast and good enough to spread faults; seeded per scenario from FAULT_SEED. */
export function random(stream: number): Random {
  let state = (FAULT_SEED ^ Math.imul(stream + 1, 0x9e3779b1)) >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
  const rng: Random = {
    next,
    int: (min, max) => min + Math.floor(next() * (max - min + 1)),
    chance: (p) => next() < p,
    pick: (items) => items[Math.floor(next() * items.length)]!,
    shuffle: (items) => {
      for (let i = items.length - 1; i > 0; i -= 1) {
        const j = Math.floor(next() * (i + 1));
        [items[i], items[j]] = [items[j]!, items[i]!];
      }
      return items;
    },
  };
  return rng;
}

export const sleep = (milliseconds: number) => new Promise<void>((resolve) => setTimeout(resolve, milliseconds));
