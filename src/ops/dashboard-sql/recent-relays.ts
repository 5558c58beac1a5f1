import type { Session } from '../../internal/session.ts';

export interface RelaySeen {
  relayId: string;
  host: string;
  pid: number;
  startedAt: Date;
  seenAt: Date;
  stoppedAt: Date | null;
}

/** Relays seen in the last `withinMs` (they renew seen_at every 30 s; sql/0008). A small table. */
export async function recentRelays(session: Session, withinMs: number): Promise<RelaySeen[]> {
  const { rows } = await session.query<{ relay_id: string; host: string; pid: number; started_at: Date; seen_at: Date; stopped_at: Date | null }>(
    `SELECT relay_id, host, pid, started_at, seen_at, stopped_at FROM once.relays
      WHERE seen_at >= now() - $1 * interval '1 millisecond' ORDER BY seen_at DESC LIMIT 100`,
    [withinMs],
  );
  return rows.map((row) => ({
    relayId: row.relay_id,
    host: row.host,
    pid: row.pid,
    startedAt: row.started_at,
    seenAt: row.seen_at,
    stoppedAt: row.stopped_at,
  }));
}
