import type { Sink, SinkStartInfo } from './sink.ts';

/** Each sink once, though several topic patterns may route to it. */
export function sinksOf(routes: Record<string, Sink>): Sink[] {
  return [...new Set(Object.values(routes))];
}

/** Runs each sink's start() in turn; the first failure ends the start-up. */
export async function startSinks(sinks: readonly Sink[], info: SinkStartInfo): Promise<void> {
  for (const sink of sinks) await sink.start?.(info);
}

/** Closes every sink; a close that fails is nothing the relay can act on. */
export async function closeSinks(sinks: readonly Sink[]): Promise<void> {
  await Promise.all(sinks.map((sink) => sink.close?.().catch(() => {})));
}
