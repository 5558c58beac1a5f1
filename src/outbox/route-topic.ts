/**
 * Which sink gets an event: `sinks` maps topics or patterns to sinks. Patterns use NATS-style
 * wildcards on dot-separated tokens: `*` matches one token, `>` (last) matches one or more, so
 * `orders.*` matches `orders.created` and `>` matches everything. An exact topic wins over
 * patterns; among patterns, the one declared first wins. Results are cached per topic.
 */
import type { Sink } from './sink.ts';

export type SinkRouter = (topic: string) => Sink | undefined;

export function routeTopics(sinks: Record<string, Sink>): SinkRouter {
  const exact = new Map<string, Sink>();
  const patterns: Array<{ tokens: string[]; sink: Sink }> = [];
  for (const [pattern, sink] of Object.entries(sinks)) {
    if (pattern.split('.').some((token) => token === '*' || token === '>')) patterns.push({ tokens: pattern.split('.'), sink });
    else exact.set(pattern, sink);
  }
  const cache = new Map<string, Sink | undefined>();
  return (topic) => {
    if (cache.has(topic)) return cache.get(topic);
    const tokens = topic.split('.');
    const sink = exact.get(topic) ?? patterns.find((pattern) => matches(pattern.tokens, tokens))?.sink;
    if (cache.size < 10_000) cache.set(topic, sink);
    return sink;
  };
}

function matches(pattern: string[], topic: string[]): boolean {
  for (let i = 0; i < pattern.length; i += 1) {
    const token = pattern[i];
    if (token === '>') return i === pattern.length - 1 && topic.length > i;
    if (i >= topic.length) return false;
    if (token !== '*' && token !== topic[i]) return false;
  }
  return pattern.length === topic.length;
}
