/**
 * enqueue against real Postgres, as the non-bypass application role: what is stored, the dedupe
 * ids (random outside an idempotent call, derived inside it), rollback, and coded errors for bad
 * events that leave the caller's transaction usable.
 */
import fc from 'fast-check';
import { sql, type Transaction } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enqueue, InvalidOptionsError, MAX_PAYLOAD_BYTES, NotInTransactionError, runIdempotent, TenantMissingError, withTenant } from '../src/index.ts';
import { dedupeIdProblem, deriveDedupeId } from '../src/outbox/dedupe-id.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { errorOf } from './support/error-of.ts';

let fx: AppFixture;
beforeAll(async () => {
  fx = await createAppFixture();
});
afterAll(async () => {
  await fx?.close();
});

interface OutboxRow {
  tenant_id: string;
  id: string;
  dedupe_id: string;
  topic: string;
  ordering_key: string | null;
  payload: unknown;
  headers: Record<string, string>;
  status: string;
  attempts: number;
}

let unique = 0;
/** A name (key, topic, tenant) no other test uses. */
const fresh = (label: string) => `${label}-${++unique}-${Date.now()}`;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Outbox rows of one topic, in insertion order. */
const eventsOf = (topic: string) => fx.rows<OutboxRow>('outbox_events', `topic = '${topic}'`).then((rows) => rows.sort((a, b) => Number(a.id) - Number(b.id)));

describe('enqueue outside runIdempotent', () => {
  it('stores the event for the tenant and returns its id with a random UUID dedupe id', async () => {
    const topic = fresh('orders.created');
    const tenant = fresh('tenant');
    const event = {
      topic,
      payload: { orderId: 'ord_1', amount: 100, lines: [{ sku: 'A', qty: 2 }], at: new Date('2026-01-02T03:04:05.678Z') },
      orderingKey: 'customer-7',
      headers: { 'content-type': 'application/json', traceparent: '00-abc-def-01' },
    };
    const [first, second] = await withTenant(fx.app, tenant, async (tx) => [await enqueue(tx, event), await enqueue(tx, event)]);
    expect(first!.dedupeId).toMatch(UUID);
    expect(second!.dedupeId).toMatch(UUID);
    expect(second!.dedupeId).not.toBe(first!.dedupeId);
    expect(first!.id).toMatch(/^\d+$/);

    const rows = await eventsOf(topic);
    expect(rows).toHaveLength(2);
    expect(rows[0]).toMatchObject({
      tenant_id: tenant,
      id: first!.id,
      dedupe_id: first!.dedupeId,
      topic,
      ordering_key: 'customer-7',
      payload: { orderId: 'ord_1', amount: 100, lines: [{ sku: 'A', qty: 2 }], at: '2026-01-02T03:04:05.678Z' },
      headers: { 'content-type': 'application/json', traceparent: '00-abc-def-01' },
      status: 'pending',
      attempts: 0,
    });
    expect(rows[1]).toMatchObject({ id: second!.id, dedupe_id: second!.dedupeId });
  });

  it('defaults ordering key to null and headers to {}, and stores any JSON payload including null', async () => {
    const topic = fresh('defaults');
    const payloads: unknown[] = [null, 0, 'text', [1, 'two'], { nested: { ok: true } }, false];
    await withTenant(fx.app, 'tenant-a', async (tx) => {
      for (const payload of payloads) await enqueue(tx, { topic, payload });
    });
    const rows = await eventsOf(topic);
    expect(rows.map((row) => row.payload)).toEqual(payloads);
    for (const row of rows) expect(row).toMatchObject({ ordering_key: null, headers: {}, status: 'pending', attempts: 0 });
  });

  it('keeps an explicit dedupeId, inside runIdempotent too', async () => {
    const topic = fresh('explicit');
    const outside = await withTenant(fx.app, 'tenant-a', (tx) => enqueue(tx, { topic, payload: 1, dedupeId: 'my-own-id-1' }));
    expect(outside.dedupeId).toBe('my-own-id-1');
    const inside = await withTenant(fx.app, 'tenant-a', (tx) =>
      runIdempotent(tx, fresh('explicit-key'), () => enqueue(tx, { topic, payload: 2, dedupeId: 'my-own-id-2' })),
    );
    expect(inside.dedupeId).toBe('my-own-id-2');
    expect((await eventsOf(topic)).map((row) => row.dedupe_id)).toEqual(['my-own-id-1', 'my-own-id-2']);
  });

  it('stores nothing when the transaction rolls back', async () => {
    const topic = fresh('rolled-back');
    const error = await errorOf(
      withTenant(fx.app, 'tenant-a', async (tx) => {
        await enqueue(tx, { topic, payload: { n: 1 } });
        await enqueue(tx, { topic, payload: { n: 2 } });
        throw new Error('business write failed');
      }),
    );
    expect(error.message).toBe('business write failed');
    expect(await eventsOf(topic)).toEqual([]);

    // The same through runIdempotent: fn's events vanish with the call.
    const key = fresh('rollback-key');
    await expect(
      withTenant(fx.app, 'tenant-a', (tx) =>
        runIdempotent(tx, key, async (t) => {
          await enqueue(t, { topic, payload: { n: 3 } });
          throw new Error('handler failed');
        }),
      ),
    ).rejects.toThrow('handler failed');
    expect(await eventsOf(topic)).toEqual([]);
    expect(await fx.rows('idempotency_keys', `key = '${key}'`)).toEqual([]);
  });

  it("keeps each tenant's events to itself under row-level security", async () => {
    const topic = fresh('isolated');
    await withTenant(fx.app, 'tenant-a', (tx) => enqueue(tx, { topic, payload: 'a' }));
    await withTenant(fx.app, 'tenant-b', (tx) => enqueue(tx, { topic, payload: 'b' }));
    const seen = await withTenant(fx.app, 'tenant-b', async (tx) => {
      const { rows } = await sql<{ tenant_id: string; payload: unknown }>`
        SELECT tenant_id, payload FROM once.outbox_events WHERE topic = ${topic}`.execute(tx);
      return rows;
    });
    expect(seen).toEqual([{ tenant_id: 'tenant-b', payload: 'b' }]);
    expect((await eventsOf(topic)).map((row) => row.tenant_id).sort()).toEqual(['tenant-a', 'tenant-b']);
  });
});

describe('enqueue inside runIdempotent: derived dedupe ids', () => {
  /** A handler that enqueues three events in order and returns their dedupe ids. */
  const threeEvents = (topic: string) => async (tx: Transaction<any>) => {
    const ids: string[] = [];
    for (const step of ['reserve', 'charge', 'notify']) ids.push((await enqueue(tx, { topic, payload: { step } })).dedupeId);
    return ids;
  };

  it('derives the ids from tenant, key, version and position 0, 1, 2 in call order', async () => {
    const topic = fresh('derived');
    const key = fresh('derived-key');
    const ids = await withTenant(fx.app, 'tenant-a', (tx) => runIdempotent(tx, key, threeEvents(topic), { version: 'v1' }));
    expect(ids).toEqual([0, 1, 2].map((position) => deriveDedupeId('tenant-a', key, 'v1', position)));
    expect(ids[0]).toMatch(/^once_[0-9a-f]{32}$/);
    const rows = await eventsOf(topic);
    expect(rows.map((row) => [row.dedupe_id, (row.payload as { step: string }).step])).toEqual([
      [ids[0], 'reserve'],
      [ids[1], 'charge'],
      [ids[2], 'notify'],
    ]);
  });

  it('takes positions in call order even when the enqueues run concurrently', async () => {
    const topic = fresh('concurrent');
    const key = fresh('concurrent-key');
    const results = await withTenant(fx.app, 'tenant-a', (tx) =>
      runIdempotent(tx, key, () => Promise.all([0, 1, 2].map((n) => enqueue(tx, { topic, payload: { n } })))),
    );
    expect(results.map((r) => r.dedupeId)).toEqual([0, 1, 2].map((position) => deriveDedupeId('tenant-a', key, '', position)));
    const byPayload = new Map((await eventsOf(topic)).map((row) => [(row.payload as { n: number }).n, row.dedupe_id]));
    expect([0, 1, 2].map((n) => byPayload.get(n))).toEqual(results.map((r) => r.dedupeId));
  });

  it('gives each idempotent call in one transaction its own positions', async () => {
    const topic = fresh('two-calls');
    const [k1, k2] = [fresh('first-call'), fresh('second-call')];
    const [a, b] = await withTenant(fx.app, 'tenant-a', async (tx) => [
      await runIdempotent(tx, k1, threeEvents(topic)),
      await runIdempotent(tx, k2, threeEvents(topic)),
    ]);
    expect(a).toEqual([0, 1, 2].map((p) => deriveDedupeId('tenant-a', k1, '', p)));
    expect(b).toEqual([0, 1, 2].map((p) => deriveDedupeId('tenant-a', k2, '', p)));
  });

  it('repeats the same ids when the key runs again after its ttl expired', async () => {
    const topic = fresh('expired');
    const key = fresh('expiring-key');
    let runs = 0;
    const handler = threeEvents(topic);
    const counted = async (tx: Transaction<any>) => {
      runs += 1;
      return handler(tx);
    };
    const first = await withTenant(fx.app, 'tenant-a', (tx) => runIdempotent.detailed(tx, key, counted, { ttl: '150ms' }));
    // Within the ttl: a replay, no new events.
    const replay = await withTenant(fx.app, 'tenant-a', (tx) => runIdempotent.detailed(tx, key, counted, { ttl: '150ms' }));
    expect(replay.outcome).toBe('replayed');
    expect(await eventsOf(topic)).toHaveLength(3);

    await sleep(250);
    const again = await withTenant(fx.app, 'tenant-a', (tx) => runIdempotent.detailed(tx, key, counted, { ttl: '150ms' }));
    expect(first.outcome).toBe('executed');
    expect(again.outcome).toBe('executed');
    expect(runs).toBe(2);
    expect(again.value).toEqual(first.value);

    // Six rows now (dedupe_id is deliberately not unique); receivers drop the second three.
    const rows = await eventsOf(topic);
    expect(rows).toHaveLength(6);
    expect(rows.slice(3).map((row) => row.dedupe_id)).toEqual(rows.slice(0, 3).map((row) => row.dedupe_id));
    expect(rows.slice(0, 3).map((row) => row.dedupe_id)).toEqual(first.value);
  });

  it('derives different ids for another tenant or another version of the same key', async () => {
    const topic = fresh('spaces');
    const key = fresh('shared-key');
    const run = (tenant: string, version: string) => withTenant(fx.app, tenant, (tx) => runIdempotent(tx, key, threeEvents(topic), { version }));
    const base = await run('tenant-a', '');
    const otherTenant = await run('tenant-b', '');
    const otherVersion = await run('tenant-a', 'v2');
    expect(otherTenant).toEqual([0, 1, 2].map((p) => deriveDedupeId('tenant-b', key, '', p)));
    expect(otherVersion).toEqual([0, 1, 2].map((p) => deriveDedupeId('tenant-a', key, 'v2', p)));
    const all = [...base, ...otherTenant, ...otherVersion];
    expect(new Set(all).size).toBe(9);
    expect((await eventsOf(topic)).map((row) => row.dedupe_id).sort()).toEqual([...all].sort());
  });

  it("uses a random id for an event written on another transaction than the call's", async () => {
    const topic = fresh('other-tx');
    const key = fresh('other-tx-key');
    const id = await withTenant(fx.app, 'tenant-a', (tx) =>
      runIdempotent(tx, key, () => withTenant(fx.app, 'tenant-a', (other) => enqueue(other, { topic, payload: 1 }))),
    );
    expect(id.dedupeId).toMatch(UUID);
  });
});

describe('enqueue inside runIdempotent', () => {
  it("writes at once: fn's own later statements see the event it enqueued", async () => {
    const topic = fresh('visible');
    const seen = await withTenant(fx.app, 'tenant-a', (tx) =>
      runIdempotent(tx, fresh('visible-key'), async (t) => {
        const { id } = await enqueue(t, { topic, payload: { n: 0 } });
        const { rows } = await sql<{ id: string }>`SELECT id::text AS id FROM once.outbox_events WHERE topic = ${topic}`.execute(t);
        return { id, rows: rows.map((row) => row.id) };
      }),
    );
    expect(seen.rows).toEqual([seen.id]);
  });

  it('answers with the id and dedupe id of the row the call commits, and later events follow it in id order', async () => {
    const topic = fresh('held');
    const key = fresh('held-key');
    const answers = await withTenant(fx.app, 'tenant-a', (tx) =>
      runIdempotent(tx, key, async (t) => {
        const first = await enqueue(t, { topic, payload: { n: 0 }, headers: { h: 'v' } });
        const second = await enqueue(t, { topic, payload: { n: 1 } });
        const ordered = await enqueue(t, { topic, payload: { n: 2 }, orderingKey: 'k' });
        return [first, second, ordered];
      }),
    );
    const rows = await eventsOf(topic);
    expect(rows.map((row) => [row.id, row.dedupe_id, row.payload, row.tenant_id])).toEqual(
      answers.map((answer, n) => [answer.id, answer.dedupeId, { n }, 'tenant-a']),
    );
    expect(rows[0]!.headers).toEqual({ h: 'v' });
    expect(rows[2]!.ordering_key).toBe('k');
  });

  it('writes the event exactly as enqueue outside a call would (payload bytes, headers, status)', async () => {
    const topic = fresh('held-bytes');
    const payload = { b: 1, a: [1.5, 'x'] };
    await withTenant(fx.app, 'tenant-a', (tx) => runIdempotent(tx, fresh('held-bytes-key'), (t) => enqueue(t, { topic, payload })));
    await withTenant(fx.app, 'tenant-a', (tx) => enqueue(tx, { topic, payload }));
    const { rows } = await fx.database.admin.query<{ payload_text: string; headers: unknown; status: string; attempts: number }>(
      `SELECT payload_text, headers, status, attempts FROM once.outbox_events WHERE topic = $1 ORDER BY id`,
      [topic],
    );
    expect(rows).toHaveLength(2);
    expect(rows[0]).toEqual(rows[1]);
  });

  it('is not written when fn throws, nor when its error is stored as the result', async () => {
    const topic = fresh('held-failed');
    const thrown = await errorOf(
      withTenant(fx.app, 'tenant-a', (tx) =>
        runIdempotent(tx, fresh('held-throws'), async (t) => {
          await enqueue(t, { topic, payload: 1 });
          throw new Error('boom');
        }),
      ),
    );
    expect(thrown.message).toBe('boom');
    const stored = await errorOf(
      withTenant(fx.app, 'tenant-a', (tx) =>
        runIdempotent(
          tx,
          fresh('held-stored'),
          async (t) => {
            await enqueue(t, { topic, payload: 2 });
            throw new Error('permanent');
          },
          { storeError: () => true },
        ),
      ),
    );
    expect(stored.message).toContain('permanent');
    expect(await eventsOf(topic)).toEqual([]);
  });

  it("writes an event enqueued after fn returned (not awaited by fn) on its own, in the call's transaction", async () => {
    const topic = fresh('held-late');
    let late: Promise<unknown> | undefined;
    await withTenant(fx.app, 'tenant-a', async (tx) => {
      await runIdempotent(tx, fresh('held-late-key'), async (t) => {
        late = sleep(20).then(() => enqueue(t, { topic, payload: 'late' }));
        return 1;
      });
      await late;
    });
    expect((await eventsOf(topic)).map((row) => row.payload)).toEqual(['late']);
  });
});

describe('enqueue: bad events', () => {
  it('refuses something that is not a transaction', async () => {
    const topic = fresh('no-tx');
    const error = await errorOf(enqueue(fx.app as never, { topic, payload: 1 }));
    expect(error).toBeInstanceOf(NotInTransactionError);
    expect(error).toMatchObject({ code: 'NOT_IN_TRANSACTION', retryable: false });
    expect(await eventsOf(topic)).toEqual([]);
  });

  it('refuses invalid events with InvalidOptionsError naming the field, and the transaction stays usable', async () => {
    const topic = fresh('bad-events');
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    const bad: Array<[label: string, event: unknown, field: string]> = [
      ['empty topic', { topic: '', payload: 1 }, 'topic'],
      ['topic with a newline', { topic: 'line\nbreak', payload: 1 }, 'topic'],
      ['topic with U+0000', { topic: 'nul\u0000', payload: 1 }, 'topic'],
      ['topic over 255 characters', { topic: 't'.repeat(256), payload: 1 }, 'topic'],
      ['numeric topic', { topic: 42, payload: 1 }, 'topic'],
      ['no topic', { payload: 1 }, 'topic'],
      ['payload undefined', { topic, payload: undefined }, 'payload'],
      ['no payload', { topic }, 'payload'],
      ['BigInt in payload', { topic, payload: { amount: 10n } }, 'payload'],
      ['cyclic payload', { topic, payload: cyclic }, 'payload'],
      ['function in payload', { topic, payload: { callback: () => 1 } }, 'payload'],
      ['Map payload', { topic, payload: new Map([[1, 2]]) }, 'payload'],
      ['U+0000 in payload', { topic, payload: { text: 'a\u0000b' } }, 'payload'],
      ['numeric header', { topic, payload: 1, headers: { retries: 3 } }, 'headers'],
      ['boolean header', { topic, payload: 1, headers: { flag: true } }, 'headers'],
      ['headers as a string', { topic, payload: 1, headers: 'x-a: b' }, 'headers'],
      ['empty orderingKey', { topic, payload: 1, orderingKey: '' }, 'orderingKey'],
      ['orderingKey with U+0000', { topic, payload: 1, orderingKey: 'a\u0000b' }, 'orderingKey'],
      ['orderingKey with a newline', { topic, payload: 1, orderingKey: 'a\nb' }, 'orderingKey'],
      ['dedupeId with U+0000', { topic, payload: 1, dedupeId: 'a\u0000b' }, 'dedupeId'],
      ['header value with U+0000', { topic, payload: 1, headers: { a: 'x\u0000' } }, 'headers'],
      ['header name with U+0000', { topic, payload: 1, headers: { 'a\u0000': 'x' } }, 'headers'],
      ['header value with a lone surrogate', { topic, payload: 1, headers: { a: '\ud800' } }, 'headers'],
      ['topic with a lone surrogate', { topic: 'x\ud800', payload: 1 }, 'topic'],
      ['empty dedupeId', { topic, payload: 1, dedupeId: '' }, 'dedupeId'],
      ['dedupeId over 255 characters', { topic, payload: 1, dedupeId: 'd'.repeat(256) }, 'dedupeId'],
      ['non-ASCII dedupeId', { topic, payload: 1, dedupeId: 'msg-日本' }, 'dedupeId'],
      ['Latin-1 dedupeId', { topic, payload: 1, dedupeId: 'café-1' }, 'dedupeId'],
      ['dedupeId with a space', { topic, payload: 1, dedupeId: 'msg 1' }, 'dedupeId'],
      ['dedupeId with a leading space', { topic, payload: 1, dedupeId: ' msg-1' }, 'dedupeId'],
      ['dedupeId with a comma', { topic, payload: 1, dedupeId: 'a,b' }, 'dedupeId'],
      ['dedupeId with an emoji', { topic, payload: 1, dedupeId: 'msg-😀' }, 'dedupeId'],
    ];
    const stored = await withTenant(fx.app, 'tenant-a', async (tx) => {
      for (const [label, event, field] of bad) {
        const error = await errorOf(enqueue(tx, event as never));
        expect(error, label).toBeInstanceOf(InvalidOptionsError);
        expect(error.code, label).toBe('INVALID_OPTIONS');
        expect(error.issues.length, label).toBeGreaterThan(0);
        expect(error.issues[0].path[0], label).toBe(field);
      }
      // Validation ran before any SQL: the transaction is not aborted and can still commit work.
      return enqueue(tx, { topic, payload: 'the good one' });
    });
    expect((await eventsOf(topic)).map((row) => [row.dedupe_id, row.payload])).toEqual([[stored.dedupeId, 'the good one']]);
  });

  it('accepts a dedupe id of 1..255 characters of A-Z a-z 0-9 - . _ ~ : / + = @, and nothing else (property)', async () => {
    const safe = fc.stringMatching(/^[A-Za-z0-9._~:/+=@-]{1,255}$/);
    fc.assert(fc.property(safe, (id) => dedupeIdProblem(id) === undefined));
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 300 }), (id) => {
        const valid = /^[A-Za-z0-9._~:/+=@-]{1,255}$/.test(id);
        return (dedupeIdProblem(id) === undefined) === valid;
      }),
    );
    // Derived ids (sha256 hex) and the random default (a UUID) are always valid.
    fc.assert(
      fc.property(
        fc.string(),
        fc.string(),
        fc.string(),
        fc.nat(),
        (tenant, key, version, position) => dedupeIdProblem(deriveDedupeId(tenant, key, version, position)) === undefined,
      ),
    );
    const topic = fresh('safe-ids');
    const ids = ['msg_2KWPBgLlAfxdpx2AI54pPJ85f4W', 'urn:uuid:5f0c/1+2=3@x~y', 'x'.repeat(255)];
    await withTenant(fx.app, 'tenant-a', async (tx) => {
      for (const dedupeId of ids) expect((await enqueue(tx, { topic, payload: 1, dedupeId })).dedupeId).toBe(dedupeId);
    });
    expect((await eventsOf(topic)).map((row) => row.dedupe_id)).toEqual(ids);
  });

  it('writes nothing for an event whose dedupe id a header cannot carry', async () => {
    const topic = fresh('unsafe-id');
    const error = await errorOf(withTenant(fx.app, 'tenant-a', (tx) => enqueue(tx, { topic, payload: 1, dedupeId: 'msg-日本' })));
    expect(error).toBeInstanceOf(InvalidOptionsError);
    expect(error.code).toBe('INVALID_OPTIONS');
    expect(error.issues).toEqual([expect.objectContaining({ path: ['dedupeId'], code: 'invalid_format' })]);
    expect(await eventsOf(topic)).toEqual([]);
  });

  it('refuses unknown properties, naming them in the issue', async () => {
    const topic = fresh('unknown-prop');
    const error = await errorOf(withTenant(fx.app, 'tenant-a', (tx) => enqueue(tx, { topic, payload: 1, priority: 5 } as never)));
    expect(error).toBeInstanceOf(InvalidOptionsError);
    expect(error.code).toBe('INVALID_OPTIONS');
    // One issue per unknown key, naming it in the path: no need to read the message.
    expect(error.issues).toEqual([expect.objectContaining({ code: 'unrecognized_keys', path: ['priority'] })]);
    expect(await eventsOf(topic)).toEqual([]);
  });

  it(`refuses a payload over ${MAX_PAYLOAD_BYTES} bytes of JSON, counting bytes, not characters`, async () => {
    const topic = fresh('big');
    expect(MAX_PAYLOAD_BYTES).toBe(1_048_576);
    const tooBig = [
      'x'.repeat(MAX_PAYLOAD_BYTES - 1), // + 2 quotes = one byte over
      'é'.repeat(600_000), // 600 000 characters, 1 200 002 bytes
      { list: Array.from({ length: 200_000 }, (_, i) => i) },
    ];
    await withTenant(fx.app, 'tenant-a', async (tx) => {
      for (const payload of tooBig) {
        const error = await errorOf(enqueue(tx, { topic, payload }));
        expect(error).toBeInstanceOf(InvalidOptionsError);
        expect(error.issues[0]).toMatchObject({ path: ['payload'], code: 'too_big' });
      }
      // Exactly at the limit is fine.
      await enqueue(tx, { topic, payload: 'x'.repeat(MAX_PAYLOAD_BYTES - 2) });
    });
    const rows = await eventsOf(topic);
    expect(rows).toHaveLength(1);
    expect((rows[0]!.payload as string).length).toBe(MAX_PAYLOAD_BYTES - 2);
  });

  it('fails with TenantMissingError in a transaction without a tenant, writing nothing', async () => {
    const topic = fresh('no-tenant');
    const error = await errorOf(fx.app.transaction().execute((tx) => enqueue(tx, { topic, payload: 1 })));
    expect(error).toBeInstanceOf(TenantMissingError);
    expect(error).toMatchObject({ code: 'TENANT_MISSING', retryable: false });
    expect(error.cause).toMatchObject({ code: 'ONC01' });
    expect(await eventsOf(topic)).toEqual([]);
  });
});
