/**
 * The relay's row in once.relays (sql/0008): written at start, seen_at renewed while it runs,
 * stopped_at set on a graceful stop. Operators (`pg-once doctor`, `status`) read it to tell which
 * relays run; an idle relay leaves no other trace. Failures here never stop delivery: the caller
 * only logs them.
 */
import type { RelayDatabase } from '../relay-pool.ts';

/** How often a running relay renews its seen_at, in milliseconds. */
export const RELAY_SEEN_INTERVAL_MILLISECONDS = 30 * 1_000;

const REGISTER = `
INSERT INTO once.relays (relay_id, host, pid) VALUES ($1, $2, $3)
ON CONFLICT (relay_id) DO UPDATE SET seen_at = now(), stopped_at = NULL`;

const SEEN = `UPDATE once.relays SET seen_at = now() WHERE relay_id = $1`;

const STOPPED = `UPDATE once.relays SET seen_at = now(), stopped_at = now() WHERE relay_id = $1`;

export async function registerRelay(db: RelayDatabase, relayId: string, host: string, pid: number): Promise<void> {
  await db.query({ name: 'once_relay_register', text: REGISTER, values: [relayId, host, pid] });
}

export async function relaySeen(db: RelayDatabase, relayId: string): Promise<void> {
  await db.query({ name: 'once_relay_seen', text: SEEN, values: [relayId] });
}

export async function relayStopped(db: RelayDatabase, relayId: string): Promise<void> {
  await db.query({ name: 'once_relay_stopped', text: STOPPED, values: [relayId] });
}
