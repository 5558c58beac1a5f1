import { instruments } from '../telemetry.ts';
import type { RelayLog } from './relay-log.ts';
import type { ClaimedEvent } from './sql/claim-events.ts';

/** Events a claim found out of attempts and declared dead (claim-events.ts): logged and counted. */
export function reportExhausted(logger: RelayLog, events: readonly ClaimedEvent[]): void {
  for (const event of events) {
    logger.exhausted(event);
    instruments().deliveries.add(1, { 'once.outcome': 'dead', 'once.topic': event.topic });
  }
}
