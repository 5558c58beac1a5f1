/**
 * WAL a replication slot holds back: from its restart_lsn to the server's current end of WAL.
 * The doorbell's guard runs this every few seconds on the relay's pool (the replication
 * connection, streaming, can run no SQL). pg_replication_slots and pg_current_wal_lsn() need no
 * privilege. Null when the slot does not exist (yet, or any more).
 */
import type { RelayDatabase } from '../relay-pool.ts';

export async function slotRetainedWalBytes(db: RelayDatabase, slot: string): Promise<number | null> {
  const { rows } = await db.query<{ retained: number | null }>({
    name: 'once_doorbell_slot',
    text: `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::float8 AS retained
             FROM pg_catalog.pg_replication_slots WHERE slot_name = $1`,
    values: [slot],
  });
  return rows[0]?.retained ?? null;
}
