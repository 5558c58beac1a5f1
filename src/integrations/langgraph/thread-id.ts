import { InvalidKeyError } from '../../errors.ts';

/**
 * The thread a run belongs to. Keys are scoped by it because a thread is what a checkpointer
 * resumes: without one (no checkpointer, no thread_id) nothing is ever resumed, and a key would
 * have nothing stable to hang on.
 */
export function threadIdOf(configurable: Record<string, unknown> | undefined, what: string): string {
  const threadId = configurable?.thread_id;
  if ((typeof threadId === 'string' && threadId.length > 0) || (typeof threadId === 'number' && Number.isSafeInteger(threadId))) {
    return String(threadId);
  }
  throw new InvalidKeyError(
    `pg-once: ${what} needs config.configurable.thread_id (a checkpointed thread) to derive its idempotency key; ` +
      'invoke the graph with { configurable: { thread_id } } and a checkpointer.',
  );
}
