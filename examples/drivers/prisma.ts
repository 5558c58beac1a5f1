/**
 * pg-once with Prisma 7 and its node-postgres driver adapter: the claim, the order (written by
 * Prisma's own model API) and its event commit in one interactive transaction. The client is
 * the one generated from test/fixtures/prisma/schema.prisma (`npm run prisma:generate`).
 * Run: DATABASE_URL=<an application login> node examples/drivers/prisma.ts
 */
import { PrismaPg } from '@prisma/adapter-pg';
import { enqueue, runIdempotent, withTenant } from '../../src/drivers/prisma.ts';
import { PrismaClient } from '../../test/fixtures/prisma/generated/client.ts';
import { runExample } from './run-example.ts';

export function placeOrder(prisma: PrismaClient, tenantId: string, key: string) {
  return withTenant(prisma, tenantId, (tx) =>
    runIdempotent(tx, key, async (tx) => {
      await tx.order.create({ data: { key, amount: 4200 } });
      await enqueue(tx, { topic: 'orders.created', payload: { key, amount: 4200 } });
      return { orderId: key };
    }),
  );
}

await runExample(
  import.meta.url,
  (url) => new PrismaClient({ adapter: new PrismaPg({ connectionString: url }) }),
  placeOrder,
  (prisma) => prisma.$disconnect(),
);
