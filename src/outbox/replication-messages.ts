/**
 * The few messages of PostgreSQL's streaming replication protocol the doorbell needs, carried in
 * CopyData: the server's XLogData ('w') and primary keepalive ('k'), and our standby status
 * update ('r'). pg passes CopyData through untouched, so speaking these is all it takes to
 * follow a logical slot with the driver we already ship (no replication library to install).
 * https://www.postgresql.org/docs/current/protocol-replication.html
 */

/** Microseconds between the Unix epoch and Postgres's (2000-01-01), for the status update clock. */
const POSTGRES_EPOCH_MICROSECONDS = 946_684_800_000_000n;

export type ReplicationMessage =
  /** XLogData: `walEnd` is the server's end of WAL; `kind` is the pgoutput message type ('B', 'I', 'C', ...). */
  | { type: 'xlog'; walEnd: bigint; kind: string }
  /** Primary keepalive: the server wants an answer now if `replyRequested`. */
  | { type: 'keepalive'; walEnd: bigint; replyRequested: boolean }
  | { type: 'other' };

export function parseReplicationMessage(chunk: Buffer): ReplicationMessage {
  const tag = chunk[0];
  // 'w', Int64 start of the data, Int64 end of WAL, Int64 send time, then the plugin's bytes.
  if (tag === 0x77 && chunk.length >= 25) {
    return { type: 'xlog', walEnd: chunk.readBigUInt64BE(9), kind: chunk.length > 25 ? String.fromCharCode(chunk[25]!) : '' };
  }
  // 'k', Int64 end of WAL, Int64 send time, Byte1 reply requested.
  if (tag === 0x6b && chunk.length >= 18) {
    return { type: 'keepalive', walEnd: chunk.readBigUInt64BE(1), replyRequested: chunk[17] === 1 };
  }
  return { type: 'other' };
}

/**
 * 'r': written, flushed and applied up to `lsn`. The doorbell keeps nothing, so everything it
 * has seen is as good as applied: the slot's confirmed position follows the server's end of WAL,
 * and the slot retains no WAL for us beyond what decoding in progress needs. `replyRequested`
 * asks the server to answer at once: a ping, to find a connection that went silent.
 */
export function standbyStatusUpdate(lsn: bigint, replyRequested: boolean, now = Date.now()): Buffer {
  const message = Buffer.alloc(34);
  message[0] = 0x72;
  message.writeBigUInt64BE(lsn, 1);
  message.writeBigUInt64BE(lsn, 9);
  message.writeBigUInt64BE(lsn, 17);
  message.writeBigInt64BE(BigInt(now) * 1_000n - POSTGRES_EPOCH_MICROSECONDS, 25);
  message[33] = replyRequested ? 1 : 0;
  return message;
}

/** '0/16B3748' for the log. */
export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffff_ffffn).toString(16).toUpperCase()}`;
}
