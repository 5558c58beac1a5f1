/**
 * Where a core call's server time goes: runs one variant of bench/core.ts in a loop on one
 * connection and prints that connection's backend pid first, so that a profiler can be attached
 * to it (`perf record -g -p <pid>`), or its CPU read from /proc, while the loop runs.
 *
 *   node bench/core-profile.ts <floor|once|onceEvent|onceReplay> [seconds] [callers]   (DATABASE_URL: the server)
 *
 * With more than one caller (each on a connection of its own), the pid printed is the first one's.
 */
import { sql } from 'kysely';
import { enqueue, runIdempotent, withTenant } from '../src/index.ts';
import { createBenchDatabase } from './setup.ts';

const [variant = 'onceReplay', secondsText = '10', callersText = '1'] = process.argv.slice(2);
const seconds = Number(secondsText);
const callers = Number(callersText);
const bench = await createBenchDatabase(process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres');
const db = bench.kysely(callers);
const tenant = 'tenant-1';
const options = (key: string) => ({ tool: 'create_order', request: { key, amount: 100 } });
const insertOrder = async (tx: Parameters<Parameters<typeof withTenant>[2]>[0], key: string) => {
  await sql`INSERT INTO orders (key, amount) VALUES (${key}, 100)`.execute(tx);
  return { orderId: key, amount: 100, currency: 'EUR' };
};

const calls: Record<string, (i: number) => Promise<unknown>> = {
  floor: (i) =>
    db
      .transaction()
      .setIsolationLevel('read committed')
      .execute(async (tx) => {
        await sql`SELECT set_config('once.tenant_id', ${tenant}, true)`.execute(tx);
        return insertOrder(tx, `floor-${i}`);
      }),
  once: (i) => withTenant(db, tenant, (tx) => runIdempotent(tx, `once-${i}`, (t) => insertOrder(t, `once-${i}`), options(`once-${i}`))),
  onceEvent: (i) =>
    withTenant(db, tenant, (tx) =>
      runIdempotent(
        tx,
        `event-${i}`,
        async (t) => {
          const result = await insertOrder(t, `event-${i}`);
          await enqueue(t, { topic: 'orders.created', payload: result });
          return result;
        },
        options(`event-${i}`),
      ),
    ),
  onceReplay: (i) =>
    withTenant(db, tenant, (tx) => runIdempotent(tx, `replay-${i % 200}`, (t) => insertOrder(t, `replay-${i % 200}`), options(`replay-${i % 200}`))),
};
const call = calls[variant];
if (!call) throw new Error(`unknown variant ${variant} (known: ${Object.keys(calls).join(', ')})`);

try {
  for (let i = 0; i < 200; i += 1) await calls.onceReplay!(i);
  const { rows } = await sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`.execute(db);
  console.log(`pid ${rows[0]!.pid}`);
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  const deadline = performance.now() + seconds * 1_000;
  const started = process.cpuUsage();
  let count = 0;
  await Promise.all(
    Array.from({ length: callers }, async () => {
      while (performance.now() < deadline) {
        count += 1;
        await call(count + 1_000);
      }
    }),
  );
  const cpu = process.cpuUsage(started);
  console.log(`${variant}: ${count} calls, ${Math.round(count / seconds)}/s, client CPU ${Math.round((cpu.user + cpu.system) / count)} us per call`);
} finally {
  await bench.drop();
}
