/**
 * The offset between this host's clock and the database's. pg-once's leases, TTLs and retry times
 * run on the database's clock; webhook signatures (Standard Webhooks timestamps, which receivers
 * reject when too far off) and the sweep schedule computed here run on this host's.
 */
import type { Session } from '../../internal/session.ts';
import { type DoctorFinding, finding } from './finding.ts';

/** Past this offset the finding warns. */
export const CLOCK_OFFSET_WARN_MILLISECONDS = 1_000;
/** The sample with the shortest round trip is kept: its midpoint is the tightest estimate. */
const CLOCK_SAMPLES = 3;

export interface ClockSample {
  /** Database time minus this host's time, in milliseconds: positive when the database is ahead. */
  offsetMs: number;
  roundTripMs: number;
}

/**
 * offset = db_time - (t_send + t_recv) / 2: the database read its clock somewhere within the round
 * trip, so the error is at most half of it. clock_timestamp(), not now(): now() is the start of
 * the transaction, which on a pooled connection may be long past.
 */
export async function measureClock(session: Session): Promise<ClockSample> {
  let best: ClockSample | undefined;
  for (let i = 0; i < CLOCK_SAMPLES; i += 1) {
    const sentAt = performance.timeOrigin + performance.now();
    const { rows } = await session.query<{ ms: number }>('SELECT (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS ms');
    const receivedAt = performance.timeOrigin + performance.now();
    const sample = { offsetMs: rows[0]!.ms - (sentAt + receivedAt) / 2, roundTripMs: receivedAt - sentAt };
    if (!best || sample.roundTripMs < best.roundTripMs) best = sample;
  }
  return best!;
}

export function clockFinding({ offsetMs, roundTripMs }: ClockSample): DoctorFinding {
  const precision = `±${Math.ceil(roundTripMs / 2)} ms`;
  if (Math.abs(offsetMs) <= CLOCK_OFFSET_WARN_MILLISECONDS) {
    return finding('clock', 'ok', `this host's clock and the database's agree within ${Math.round(Math.abs(offsetMs))} ms (${precision})`);
  }
  const ahead = offsetMs > 0 ? 'the database is' : 'this host is';
  return finding(
    'clock',
    'warn',
    `${ahead} ${(Math.abs(offsetMs) / 1_000).toFixed(1)} s ahead (${precision}): leases and expiry run on the database's clock, ` +
      "webhook signature timestamps on the relay host's (run doctor there to check that one)",
    'synchronise both clocks with NTP (e.g. timedatectl set-ntp true; on a managed database, fix the host side)',
  );
}
