/**
 * What will happen, decided up front from the seed: the tenants' agent runs, the arguments their
 * model writes, how long each tool works, and which duplicate sources of the background guide hit
 * which call. Only timing (who wins a race, whether a retry waits or replays) is left to chance.
 */
import { seededRandom } from './random.ts';
import type { LineItem } from './tools.ts';

/** Index of a run's intents: 0 create_order, 1 charge_card, 2 receipt email, 3 shipping email. */
export type Intent = 0 | 1 | 2 | 3;

export interface RunPlan {
  tenantId: string;
  runId: string;
  customer: string;
  items: LineItem[];
  cardToken: string;
  /** Whether the run also sends a shipping notice (a fourth intent). */
  shipping: boolean;
  /** How long each intent's tool works, in milliseconds, while it holds its claim. */
  workMs: number[];
  /** A call re-sent after the client timed out: the first attempt was slow, or its answer was lost. */
  networkRetry?: { intent: Intent; kind: 'slow' | 'lost'; slowMs: number };
  /** The model calls `intent` again in a later step, having forgotten it already did. */
  reinvocation?: { intent: Intent; after: Intent };
  /** The queue delivers the message of `intent` twice, to two consumers at once. */
  redelivery?: { intent: Intent };
  /** The run goes to a worker process that is killed with SIGKILL inside this intent's call. */
  crash?: { intent: Intent };
}

export interface DemoPlan {
  tenants: string[];
  /** Runs in the order they start: round-robin over tenants, so all tenants progress together. */
  runs: RunPlan[];
  /** Distinct tool calls the runs mean to make: what must happen exactly once each. */
  intents: { total: number; orders: number; charges: number; emails: number };
  injected: { networkRetries: number; reinvocations: number; redeliveries: number; crashes: number };
}

const CATALOG = [
  { sku: 'sku-espresso-beans', priceCents: 1_450 },
  { sku: 'sku-grinder', priceCents: 8_900 },
  { sku: 'sku-kettle', priceCents: 4_200 },
  { sku: 'sku-filters-100', priceCents: 690 },
  { sku: 'sku-mug', priceCents: 1_200 },
  { sku: 'sku-scale', priceCents: 3_300 },
] as const;

export function planDemo(options: { tenants: number; runs: number; seed: number }): DemoPlan {
  const random = seededRandom(options.seed);
  const width = String(options.tenants).length;
  const tenants = Array.from({ length: options.tenants }, (_, i) => `tenant-${String(i + 1).padStart(width, '0')}`);
  const runs: RunPlan[] = [];
  for (let r = 0; r < options.runs; r++) {
    for (const tenantId of tenants) {
      const items = Array.from({ length: random.int(1, 3) }, () => ({ ...random.pick(CATALOG), quantity: random.int(1, 3) }));
      const shipping = random.chance(0.4);
      const last = (shipping ? 3 : 2) as Intent;
      const intent = () => random.int(0, last) as Intent;
      const run: RunPlan = {
        tenantId,
        runId: `${tenantId.replace('tenant-', 't')}-run-${String(r + 1).padStart(4, '0')}`,
        customer: `customer${random.int(1, 999)}@example.com`,
        items,
        cardToken: `tok_${random.int(100_000, 999_999)}`,
        shipping,
        workMs: [random.int(1, 6), random.int(3, 20), random.int(1, 4), random.int(1, 4)].slice(0, last + 1),
      };
      if (random.chance(0.25)) run.networkRetry = { intent: intent(), kind: random.chance(0.5) ? 'slow' : 'lost', slowMs: random.int(120, 400) };
      if (random.chance(0.2)) {
        const after = random.int(1, last) as Intent;
        run.reinvocation = { intent: random.int(0, after - 1) as Intent, after };
      }
      if (random.chance(0.2)) run.redelivery = { intent: intent() };
      runs.push(run);
    }
  }
  // A few runs (about one in 500, at least one) go to a worker process that gets killed. Each
  // costs two process starts, so there are few; they carry no other duplicate source.
  const crashes = Math.min(runs.length, Math.max(1, Math.round(runs.length / 500)));
  for (let i = 0; i < crashes; i++) {
    const run = runs[Math.floor(((i + random.next()) * runs.length) / crashes)]!;
    delete run.networkRetry;
    delete run.reinvocation;
    delete run.redelivery;
    run.crash = { intent: random.int(1, run.shipping ? 3 : 2) as Intent };
  }
  const orders = runs.length;
  const emails = runs.reduce((sum, run) => sum + (run.shipping ? 2 : 1), 0);
  return {
    tenants,
    runs,
    intents: { total: orders * 2 + emails, orders, charges: orders, emails },
    injected: {
      networkRetries: runs.filter((run) => run.networkRetry).length,
      reinvocations: runs.filter((run) => run.reinvocation).length,
      redeliveries: runs.filter((run) => run.redelivery).length,
      crashes,
    },
  };
}
