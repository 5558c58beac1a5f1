/** The demo's command line: `npm run demo -- --tenants 20 --runs 50 --seed 1 [--database-url URL] [--keep]`. */
import { parseArgs } from 'node:util';

export interface DemoOptions {
  /** Tenants, each with its own rows under row-level security. (Default: 20) */
  tenants: number;
  /** Agent runs per tenant. (Default: 50) */
  runs: number;
  /** Seeds every random choice: the runs, their arguments and which duplicates hit them. (Default: 1) */
  seed: number;
  /** An existing server to use (a scratch database is created on it); else an embedded Postgres. */
  databaseUrl: string | undefined;
  /** Keep the embedded data directory, or the scratch database and its roles. (Default: false) */
  keep: boolean;
}

export const USAGE = `Usage: npm run demo -- [options]

  --tenants N          tenants (default 20)
  --runs N             agent runs per tenant (default 50)
  --seed N             seed for every random choice; the same seed, the same runs (default 1)
  --database-url URL   use this server: a scratch database and roles are created there and
                       dropped after (default: $DATABASE_URL; if unset, a throwaway Postgres:
                       testcontainers when Docker answers, else embedded in a temp directory)
  --keep               keep the scratch database and roles / the embedded data directory
  --help`;

export function parseDemoOptions(argv: string[]): DemoOptions | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      tenants: { type: 'string', default: '20' },
      runs: { type: 'string', default: '50' },
      seed: { type: 'string', default: '1' },
      'database-url': { type: 'string' },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) return 'help';
  return {
    tenants: integer('--tenants', values.tenants, 1, 500),
    runs: integer('--runs', values.runs, 1, 10_000),
    seed: integer('--seed', values.seed, 0, 2 ** 32 - 1),
    databaseUrl: values['database-url'] ?? (process.env.DATABASE_URL || undefined),
    keep: values.keep,
  };
}

function integer(flag: string, text: string, min: number, max: number): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new Error(`${flag} must be an integer from ${min} to ${max} (got ${JSON.stringify(text)}).`);
  }
  return value;
}
