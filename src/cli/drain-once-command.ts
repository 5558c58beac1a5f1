/**
 * `pg-once relay --once`: one drainOnce with the relay's configuration, for a cron. Prints the
 * counts and exits 0 whatever happened to the events (failures are the outbox's business, retried
 * by the next run); a database or configuration failure throws, and cli.ts exits non-zero.
 */
import { InvalidOptionsError } from '../errors.ts';
import type { RelayOptions } from '../outbox/relay-options.ts';
import { drainOnce } from '../outbox/drain-once.ts';
import type { DrainOnceOptions } from '../outbox/drain-options.ts';

/** What of a relay configuration a drain uses; the rest (sweeps, polling, signals, shutdown) is the long-running relay's. */
const DRAIN_KEYS = [
  'connectionString',
  'pool',
  'sinks',
  'concurrency',
  'maxHeldBytes',
  'maxAttempts',
  'backoff',
  'leaseMs',
  'deliveryTimeoutMs',
  'statementTimeoutMs',
  'pooler',
  'logger',
] as const;

export interface DrainFlags {
  deadline?: string | undefined;
  max?: string | undefined;
  json?: boolean | undefined;
}

function integerFlag(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const number = Number(value);
  if (!Number.isInteger(number)) throw new InvalidOptionsError('command line', [{ path: [], message: `--${name} expects an integer`, code: 'invalid_flag' }]);
  return number;
}

export async function drainOnceCommand(config: Partial<RelayOptions>, flags: DrainFlags): Promise<number> {
  const options: Record<string, unknown> = {};
  for (const key of DRAIN_KEYS) if (config[key] !== undefined) options[key] = config[key];
  const deadlineMs = integerFlag('deadline', flags.deadline);
  const max = integerFlag('max', flags.max);
  const result = await drainOnce({
    ...(options as unknown as DrainOnceOptions),
    ...(deadlineMs === undefined ? {} : { deadlineMs }),
    ...(max === undefined ? {} : { max }),
  });
  if (flags.json) console.log(JSON.stringify(result));
  else
    console.log(
      `pg-once relay --once: ${result.delivered} delivered, ${result.failed} failed (retried later), ${result.dead} dead, ${result.released} released (${result.reason})`,
    );
  return 0;
}
