/**
 * Key namespaces against real Postgres: a key in a namespace pg-once writes itself (`inbox:`,
 * `mcp:`, `lg:`, `once:`) is refused from every caller but pg-once's own, before anything is
 * written, so a prompt-injected model cannot pre-empt a webhook's receiveOnce. The pure
 * properties (no user or model key equals an internal key) are in keys.test.ts; the adapters'
 * cases in test/integrations/.
 */
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InvalidKeyError, keys, receiveOnce, runIdempotent, runIdempotentExternal, withTenant } from '../src/index.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { errorOf } from './support/error-of.ts';

let fx: AppFixture;
beforeAll(async () => {
  fx = await createAppFixture();
});
afterAll(async () => {
  await fx?.close();
});

const recordsOf = (tenant: string) => fx.rows<{ key: string }>('idempotency_keys', `tenant_id = '${tenant}'`);

describe('reserved key namespaces', () => {
  it("a model's key naming a future webhook cannot pre-empt it: refused, nothing written, and the webhook's handler runs", async () => {
    const tenant = `tenant-${randomUUID()}`;
    const messageId = `msg_${randomUUID()}`;
    let toolRan = 0;
    let handlerRan = 0;

    // The attack: a tool that trusts a model-written key, with the model told to use `inbox:<id>`.
    const modelKey = `inbox:${messageId}`;
    const viaFromModel = await keys.fromModel(modelKey, { fallback: 'run_1:3:charge_card', logger: () => {} });
    expect(viaFromModel).toBe('run_1:3:charge_card');
    const error = await errorOf(
      withTenant(fx.app, tenant, (tx) =>
        runIdempotent(tx, modelKey, async () => {
          toolRan += 1;
          return 'pre-empted';
        }),
      ),
    );
    expect(error).toBeInstanceOf(InvalidKeyError);
    expect(error.code).toBe('INVALID_KEY');
    expect(toolRan).toBe(0);
    expect(await recordsOf(tenant)).toEqual([]);

    const result = await receiveOnce(fx.app, { messageId, tenant }, async (tx) => {
      handlerRan += 1;
      await sql`INSERT INTO orders (key, amount) VALUES (${messageId}, 1)`.execute(tx);
      return 'handled';
    });
    expect(result).toBe('handled');
    expect(handlerRan).toBe(1);
    expect((await recordsOf(tenant)).map((row) => row.key)).toEqual([`inbox:${messageId}`]);
  });

  it('refuses every reserved prefix in runIdempotent and runIdempotentExternal before any statement', async () => {
    const tenant = `tenant-${randomUUID()}`;
    for (const key of ['inbox:m1', 'mcp:k1', 'mcp:content:quote:00', 'lg:thread-1:call_1', 'once:anything']) {
      const inTransaction = await errorOf(withTenant(fx.app, tenant, (tx) => runIdempotent(tx, key, async () => 1)));
      expect(inTransaction, key).toBeInstanceOf(InvalidKeyError);
      const external = await errorOf(runIdempotentExternal(fx.app, tenant, key, async () => 1));
      expect(external, key).toBeInstanceOf(InvalidKeyError);
    }
    expect(await recordsOf(tenant)).toEqual([]);
    // Escaped by keys.*, the same words are ordinary keys.
    const key = keys.content('inbox', { a: 1 });
    expect(await withTenant(fx.app, tenant, (tx) => runIdempotent(tx, key, async () => 'ok'))).toBe('ok');
    expect((await recordsOf(tenant)).map((row) => row.key)).toEqual([key]);
  });

  it("a receiveOnce handler's own runIdempotent is held to the user rules: it cannot claim another message", async () => {
    const tenant = `tenant-${randomUUID()}`;
    const [first, second] = [`msg_${randomUUID()}`, `msg_${randomUUID()}`];

    const error = await errorOf(receiveOnce(fx.app, { messageId: first, tenant }, (tx) => runIdempotent(tx, `inbox:${second}`, async () => 'stolen')));

    expect(error).toBeInstanceOf(InvalidKeyError);
    expect(await recordsOf(tenant)).toEqual([]);
    expect(await receiveOnce(fx.app, { messageId: second, tenant }, async () => 'mine')).toBe('mine');
  });

  it('concurrent inbox messages each run under their own key', async () => {
    const tenant = `tenant-${randomUUID()}`;
    const ids = Array.from({ length: 8 }, () => `msg_${randomUUID()}`);
    const results = await Promise.all(ids.map((messageId) => receiveOnce(fx.app, { messageId, tenant }, async () => messageId)));
    expect(results).toEqual(ids);
    expect((await recordsOf(tenant)).map((row) => row.key).sort()).toEqual(ids.map((id) => `inbox:${id}`).sort());
  });
});
