/**
 * Ends a connection of the relay's own (its LISTEN, its doorbell): a polite goodbye, but not
 * forever. On a connection that went silent, end() would wait for an answer that never comes (and
 * keep the process alive), so after a grace the socket is cut.
 */
import type pg from 'pg';

/** How long hangUp() waits for the server to acknowledge the end of the session, in milliseconds. */
const CLOSE_GRACE_MILLISECONDS = 500;

export async function hangUp(client: pg.Client): Promise<void> {
  let grace: NodeJS.Timeout | undefined;
  await Promise.race([client.end().catch(() => {}), new Promise<void>((resolve) => (grace = setTimeout(resolve, CLOSE_GRACE_MILLISECONDS)))]);
  clearTimeout(grace);
  (client as pg.Client & { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
}
