/**
 * What every example in this folder does when run as a script: opens its library on
 * DATABASE_URL, places the same order twice (the second call replays the first's result without
 * inserting again), prints both results, and closes. Imported (by test/driver-examples.test.ts),
 * an example only exports its placeOrder.
 */
import { fileURLToPath } from 'node:url';

export async function runExample<Db>(
  moduleUrl: string,
  open: (url: string) => Db,
  placeOrder: (db: Db, tenantId: string, key: string) => Promise<unknown>,
  close: (db: Db) => Promise<unknown>,
): Promise<void> {
  if (process.argv[1] !== fileURLToPath(moduleUrl)) return;
  const url = process.env.DATABASE_URL;
  if (!url) throw new Error('set DATABASE_URL to an application login of a migrated database');
  const db = open(url);
  try {
    const key = `order-${Date.now()}`;
    console.log(await placeOrder(db, 'tenant-example', key));
    console.log(await placeOrder(db, 'tenant-example', key), '(replayed)');
  } finally {
    await close(db);
  }
}
