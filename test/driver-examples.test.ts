/**
 * examples/drivers/ run as a user runs them (`node examples/drivers/<library>.ts` with
 * DATABASE_URL set to an application login), so they never rot: each places one order twice and
 * gets the same result back, with one order stored.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';

const run = promisify(execFile);
const EXAMPLES = join(import.meta.dirname, '..', 'examples', 'drivers');

let fx: AppFixture;
beforeAll(async () => {
  fx = await createAppFixture(1);
});
afterAll(async () => {
  await fx?.close();
});

describe.each(['kysely', 'pg', 'postgres', 'drizzle', 'prisma', 'knex'])('examples/drivers/%s.ts', (library) => {
  it('places an order once, and replays it', async () => {
    const { stdout } = await run(process.execPath, [join(EXAMPLES, `${library}.ts`)], { env: { ...process.env, DATABASE_URL: fx.appUrl } });
    const [first, second] = stdout.trim().split('\n');
    const orderId = /orderId: '([^']+)'/.exec(first!)?.[1];
    expect(orderId).toMatch(/^order-/);
    expect(second).toBe(`${first} (replayed)`);
    expect((await fx.orders('tenant-example')).filter((row) => row.key === orderId)).toHaveLength(1);
  });
});
