/**
 * LISTEN once_outbox on a connection of its own, to wake an idle relay early (requeue and anyone
 * else who runs `NOTIFY once_outbox` can). Purely an optimisation: the relay polls regardless, so
 * a lost notification or a broken listener only costs latency. Reconnects with a growing pause.
 */
import pg from 'pg';
import { hangUp } from './hang-up.ts';

export const WAKE_CHANNEL = 'once_outbox';

export interface Wakeup {
  close(): Promise<void>;
}

export function listenForWakeups(connectionConfig: pg.ClientConfig, onWake: () => void, onError: (error: unknown) => void): Wakeup {
  let client: pg.Client | undefined;
  let closed = false;
  let pauseMs = 500;
  let timer: NodeJS.Timeout | undefined;

  const connect = async () => {
    if (closed) return;
    const next = new pg.Client(connectionConfig);
    next.on('notification', () => onWake());
    next.on('error', (error) => {
      onError(error);
      retry(next);
    });
    next.on('end', () => retry(next));
    try {
      await next.connect();
      await next.query(`LISTEN ${WAKE_CHANNEL}`);
      if (closed) {
        await next.end();
        return;
      }
      client = next;
      pauseMs = 500;
      onWake(); // anything sent while we were not listening is found by this poll
    } catch (error) {
      onError(error);
      retry(next);
    }
  };
  const retry = (failed: pg.Client) => {
    if (closed || (client !== undefined && client !== failed) || timer) return;
    client = undefined;
    failed.end().catch(() => {});
    timer = setTimeout(() => {
      timer = undefined;
      void connect();
    }, pauseMs);
    timer.unref();
    pauseMs = Math.min(pauseMs * 2, 30_000);
  };
  void connect();
  return {
    async close() {
      closed = true;
      if (timer) clearTimeout(timer);
      const last = client;
      if (!last) return;
      await hangUp(last);
    },
  };
}
