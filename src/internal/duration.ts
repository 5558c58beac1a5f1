/**
 * Durations as users write them: a number of milliseconds, or a string like '24h', '15m', '90s',
 * '500ms', '7d', '1h30m'. Returns milliseconds, or undefined when the text is not a duration.
 */
const UNIT_MILLISECONDS: Record<string, number> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};
const PART = /(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)/gy;

export function parseDuration(input: number | string): number | undefined {
  if (typeof input === 'number') return Number.isFinite(input) ? input : undefined;
  const text = input.trim();
  if (text === '') return undefined;
  let total = 0;
  PART.lastIndex = 0;
  let consumed = 0;
  for (let match = PART.exec(text); match !== null; match = PART.exec(text)) {
    total += Number(match[1]) * UNIT_MILLISECONDS[match[2]!]!;
    consumed = PART.lastIndex;
    while (text[PART.lastIndex] === ' ') PART.lastIndex += 1;
  }
  return consumed === text.length ? total : undefined;
}
