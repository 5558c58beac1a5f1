/**
 * The first-cycle stall in isolation (docs/performance.md, "The first-cycle stall"): the relay's
 * named claim statement prepared on a near-empty outbox, then run while 40,000 events are claimed
 * and delivered through it, with no VACUUM or ANALYZE in between. Prints the claim's time as the
 * table grows and the cached plan's EXPLAIN (ANALYZE, BUFFERS) at the end.
 *
 *   ./node_modules/.bin/node bench/cached-claim-plan.ts [auto|force_custom_plan|relay-pool]
 *
 * `auto`: a plain connection (what the relay's sessions did before relay-pool.ts planned afresh on
 * a young outbox): on Postgres 18 the cached plan reads the whole table, dead tuples included.
 * `force_custom_plan`: planned for the table as it is, every time. `relay-pool`: the relay's own
 * pool (createRelayPool). DATABASE_URL, else an embedded Postgres. Not part of `npm run bench`.
 */
import pg from 'pg';
import { CLAIM_EVENTS_TEXT } from '../src/outbox/sql/claim-events.ts';
import { createRelayPool } from '../src/outbox/relay-pool.ts';
import { startPostgres } from '../support/throwaway-postgres.ts';
import { createBenchDatabase } from './setup.ts';

const mode = process.argv[2] ?? 'auto';
if (!['auto', 'force_custom_plan', 'relay-pool'].includes(mode)) throw new Error('mode: auto, force_custom_plan or relay-pool');
const server = await startPostgres({ databaseUrl: process.env.DATABASE_URL });
const bench = await createBenchDatabase(server.connectionString);
const admin = new pg.Client({ connectionString: bench.adminUrl });
await admin.connect();
// Statements one after another: a pool reuses its one idle connection, so every run of the named
// statement meets the same cached plan.
const relay =
  mode === 'relay-pool'
    ? createRelayPool(bench.adminUrl, 10_000)
    : new pg.Pool({ connectionString: bench.adminUrl, max: 1, options: `-c jit=off -c plan_cache_mode=${mode}` });
relay.on('error', () => {});

const claim = (limit: number) => relay.query({ name: 'once_claim_events', text: CLAIM_EVENTS_TEXT, values: [limit, 10_000, 'r1', 25, '', 63] });
const settle = () =>
  relay.query(`UPDATE once.outbox_events SET status = 'delivered', delivered_at = now(), locked_by = NULL WHERE locked_by = 'r1' AND status = 'pending'`);
let seq = 0;
/** `n` events over 8 tenants, half with one of 16 ordering keys per tenant, as in bench/soak.ts. */
const insert = async (n: number) => {
  await admin.query(
    `INSERT INTO once.outbox_events (tenant_id, dedupe_id, topic, ordering_key, payload)
     SELECT 'tenant-' || (g % 8), 'd' || g, 'orders.created', CASE WHEN g % 2 = 0 THEN 'order-' || ((g / 8) % 16) END, jsonb_build_object('seq', g)
       FROM generate_series($1::int, $1::int + $2::int - 1) g`,
    [seq, n],
  );
  seq += n;
};
const plans = async () => {
  const { rows } = await relay.query(`SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE name = 'once_claim_events'`);
  return `generic plans ${rows[0]?.generic_plans}, custom plans ${rows[0]?.custom_plans}`;
};

try {
  // The relay starting on a new outbox: a few small claims, enough for Postgres to cache a plan.
  for (let round = 0; round < 8; round += 1) {
    await insert(50);
    await claim(64);
    await settle();
  }
  console.log(`${mode}: after 8 claims on a near-empty table: ${await plans()}`);
  for (let batch = 1; batch <= 400; batch += 1) {
    await insert(100);
    const started = performance.now();
    const { rowCount } = await claim(128);
    const ms = performance.now() - started;
    await settle();
    if (batch % 50 === 0) console.log(`  ${batch * 100} events delivered: claim of ${rowCount} in ${ms.toFixed(1)} ms (${await plans()})`);
  }
  await insert(200);
  const { rows } = await relay.query(`EXPLAIN (ANALYZE, BUFFERS) EXECUTE once_claim_events(64, 10000, 'r1', 25, '', 63)`);
  console.log(rows.map((row) => row['QUERY PLAN']).join('\n'));
} finally {
  await relay.end();
  await admin.end();
  await bench.drop();
  await server.stop();
}
