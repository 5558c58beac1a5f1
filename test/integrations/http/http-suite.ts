/**
 * One suite for the three HTTP adapters: each test file runs it against its framework, with real
 * servers on loopback, a real HTTP client (fetch) and a real Postgres reached as the application
 * role (neither superuser nor BYPASSRLS).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setRateLimit } from '../../../src/index.ts';
import { createAppFixture, type AppFixture } from '../../support/app-fixture.ts';
import { startHttpApp, type AppHooks, type AppOptions, type Framework, type RunningApp } from '../../support/http-apps.ts';

interface Reply {
  status: number;
  headers: Headers;
  bytes: Buffer;
  json(): any;
}

async function post(url: string, key: string | undefined, body: unknown, headers: Record<string, string> = {}, method = 'POST'): Promise<Reply> {
  const response = await fetch(url, {
    method,
    headers: { 'content-type': 'application/json', ...(key === undefined ? {} : { 'idempotency-key': key }), ...headers },
    body: JSON.stringify(body),
  });
  const bytes = Buffer.from(await response.arrayBuffer());
  return { status: response.status, headers: response.headers, bytes, json: () => JSON.parse(bytes.toString()) };
}

/** Resolves once `key` reaches the gate; the gate opens with `open(key)`. */
function gates() {
  const waiting = new Map<string, { reached: PromiseWithResolvers<void>; opened: PromiseWithResolvers<void> }>();
  const entry = (key: string) => {
    let found = waiting.get(key);
    if (!found) {
      found = { reached: Promise.withResolvers(), opened: Promise.withResolvers() };
      waiting.set(key, found);
    }
    return found;
  };
  return {
    gate: async (key: string) => {
      if (!key.startsWith('gated-')) return;
      entry(key).reached.resolve();
      await entry(key).opened.promise;
    },
    reached: (key: string) => entry(key).reached.promise,
    open: (key: string) => entry(key).opened.resolve(),
  };
}

export function httpSuite(framework: Framework): void {
  let fx: AppFixture;
  let app: RunningApp;
  const started: RunningApp[] = [];
  const executions = new Map<string, number>();
  const gate = gates();
  const tenant = (name: string) => `${framework}-${name}`;
  const start = async (options: AppOptions = {}, hooks: AppHooks = {}) => {
    const running = await startHttpApp(framework, fx.app, options, { executions, gate: gate.gate, ...hooks });
    started.push(running);
    return running;
  };
  const ordersOf = async (tenantId: string, key?: string) => (await fx.orders(tenantId)).filter((row) => key === undefined || row.key === key);

  beforeAll(async () => {
    fx = await createAppFixture(12);
    app = await start();
  });
  afterAll(async () => {
    await Promise.all(started.map((running) => running.close()));
    await fx?.close();
  });

  describe(`${framework}: Idempotency-Key`, () => {
    it('200 concurrent requests over 50 keys: one execution per key, byte-identical replays, 409s with Retry-After, 422s for changed bodies', async () => {
      const t = tenant('load');
      const headers = { 'x-tenant': t };
      const requests: { key: string; amount: number }[] = [];
      for (let k = 0; k < 50; k += 1) {
        for (let copy = 0; copy < 4; copy += 1) requests.push({ key: `load-${k}`, amount: k % 5 === 0 && copy === 3 ? 999 : k });
      }
      const replies: Reply[][] = requests.map(() => []);
      let pending = requests.map((_, index) => index);
      const spurious: string[] = [];
      while (pending.length > 0) {
        const round = await Promise.all(pending.map((index) => post(`${app.url}/orders`, requests[index]!.key, { amount: requests[index]!.amount }, headers)));
        for (const [i, reply] of round.entries()) replies[pending[i]!]!.push(reply);
        // A 409 means another request of the same key was in flight, and every request of a round
        // is answered before the next round starts: so a key refused in a round must have been
        // executed in that same round (a 201 that is not a replay). A 409 without one was a
        // brand-new or settled key refused for nothing.
        const executedInRound = new Set(
          round.flatMap((reply, i) => (reply.status === 201 && reply.headers.get('idempotent-replayed') === null ? [requests[pending[i]!]!.key] : [])),
        );
        spurious.push(
          ...round.flatMap((reply, i) => (reply.status === 409 && !executedInRound.has(requests[pending[i]!]!.key) ? [requests[pending[i]!]!.key] : [])),
        );
        const busy = round.filter((reply) => reply.status === 409);
        for (const reply of busy) {
          expect(reply.headers.get('retry-after')).toMatch(/^[1-9]\d*$/);
          expect(reply.headers.get('content-type')).toContain('application/problem+json');
          expect(reply.json()).toMatchObject({ status: 409, code: 'IDEMPOTENCY_IN_PROGRESS', retryable: true });
        }
        pending = pending.filter((_, i) => round[i]!.status === 409);
        if (pending.length > 0) await new Promise((resolve) => setTimeout(resolve, 1_000 * Number(busy[0]!.headers.get('retry-after'))));
      }

      expect(spurious).toEqual([]);
      const rows = await ordersOf(t);
      expect(rows).toHaveLength(50);
      expect(new Set(rows.map((row) => row.key)).size).toBe(50);
      expect(await fx.rows('outbox_events', `tenant_id = '${t}'`)).toHaveLength(50);
      let changedRefused = 0;
      for (let k = 0; k < 50; k += 1) {
        const key = `load-${k}`;
        const row = rows.find((r) => r.key === key)!;
        const finals = requests.flatMap((request, index) => (request.key === key ? [{ request, reply: replies[index]!.at(-1)! }] : []));
        const created = finals.filter(({ reply }) => reply.status === 201);
        // Every 201 of the key is the first answer, byte for byte; only one was not a replay.
        expect(new Set(created.map(({ reply }) => reply.bytes.toString('base64'))).size).toBe(1);
        expect(created.filter(({ reply }) => reply.headers.get('idempotent-replayed') !== 'true')).toHaveLength(1);
        expect(new Set(created.map(({ reply }) => reply.headers.get('location'))).size).toBe(1);
        expect(created[0]!.reply.json()).toMatchObject({ key, amount: row.amount });
        for (const { request, reply } of finals) {
          if (request.amount === row.amount) expect(reply.status).toBe(201);
          else {
            expect(reply.status).toBe(422);
            expect(reply.json()).toMatchObject({ status: 422, code: 'IDEMPOTENCY_KEY_REUSED', retryable: false });
            changedRefused += 1;
          }
        }
      }
      expect(changedRefused).toBeGreaterThanOrEqual(10);
    });

    it('a duplicate of a request in flight gets 409 with Retry-After at once, then the first answer with Idempotent-Replayed', async () => {
      const headers = { 'x-tenant': tenant('inflight') };
      const first = post(`${app.url}/orders`, 'gated-1', { amount: 5 }, headers);
      await gate.reached('gated-1');
      const duplicate = await post(`${app.url}/orders`, 'gated-1', { amount: 5 }, headers);
      expect(duplicate.status).toBe(409);
      expect(duplicate.headers.get('retry-after')).toMatch(/^[1-9]\d*$/);
      expect(duplicate.json()).toMatchObject({ type: expect.stringContaining('#idempotency_in_progress'), title: 'Conflict', code: 'IDEMPOTENCY_IN_PROGRESS' });
      gate.open('gated-1');
      const answered = await first;
      expect(answered.status).toBe(201);
      expect(answered.headers.get('idempotent-replayed')).toBeNull();
      expect(answered.headers.get('x-trace')).not.toBeNull();
      const replay = await post(`${app.url}/orders`, 'gated-1', { amount: 5 }, headers);
      expect(replay.status).toBe(201);
      expect(replay.bytes.equals(answered.bytes)).toBe(true);
      expect(replay.headers.get('idempotent-replayed')).toBe('true');
      expect(replay.headers.get('location')).toBe(answered.headers.get('location'));
      expect(replay.headers.get('content-type')).toBe(answered.headers.get('content-type'));
      expect(replay.headers.get('x-trace')).toBeNull(); // not on the allow-list
    });

    it('with waitMs, a duplicate waits for the request in flight and replays its answer', async () => {
      const waiting = await start({ waitMs: 30_000 });
      const headers = { 'x-tenant': tenant('wait') };
      const first = post(`${waiting.url}/orders`, 'gated-2', { amount: 6 }, headers);
      await gate.reached('gated-2');
      const duplicate = post(`${waiting.url}/orders`, 'gated-2', { amount: 6 }, headers);
      setTimeout(() => gate.open('gated-2'), 200);
      const [a, b] = await Promise.all([first, duplicate]);
      expect([a.status, b.status]).toEqual([201, 201]);
      expect(b.bytes.equals(a.bytes)).toBe(true);
      expect(b.headers.get('idempotent-replayed')).toBe('true');
      expect(await ordersOf(tenant('wait'))).toHaveLength(1);
    });

    it('POST without a key is 400 problem+json and nothing runs; a malformed key too', async () => {
      const before = executions.get('orders') ?? 0;
      const missing = await post(`${app.url}/orders`, undefined, { amount: 1 }, { 'x-tenant': tenant('nokey') });
      expect(missing.status).toBe(400);
      expect(missing.headers.get('content-type')).toContain('application/problem+json');
      expect(missing.json()).toMatchObject({ status: 400, code: 'INVALID_KEY', title: 'Bad Request' });
      const long = await post(`${app.url}/orders`, 'x'.repeat(500), { amount: 1 }, { 'x-tenant': tenant('nokey') });
      expect(long.json()).toMatchObject({ status: 400, code: 'INVALID_KEY' });
      expect(executions.get('orders') ?? 0).toBe(before);
      expect(await ordersOf(tenant('nokey'))).toEqual([]);
    });

    it('PATCH without a key is 400 as well; with one, its retry is a replay', async () => {
      const headers = { 'x-tenant': tenant('patch') };
      const missing = await post(`${app.url}/orders`, undefined, { amount: 4 }, headers, 'PATCH');
      expect(missing.status).toBe(400);
      expect(missing.json()).toMatchObject({ code: 'INVALID_KEY' });
      const first = await post(`${app.url}/orders`, 'patch-1', { amount: 4 }, headers, 'PATCH');
      const retry = await post(`${app.url}/orders`, 'patch-1', { amount: 4 }, headers, 'PATCH');
      expect([first.status, retry.status]).toEqual([201, 201]);
      expect(retry.headers.get('idempotent-replayed')).toBe('true');
      expect(retry.bytes.equals(first.bytes)).toBe(true);
      // The method is fingerprinted: the same key with POST is another request.
      expect((await post(`${app.url}/orders`, 'patch-1', { amount: 4 }, headers)).status).toBe(422);
      expect(await ordersOf(tenant('patch'))).toHaveLength(1);
    });

    it('optional keys (required: false): a POST without one runs unkeyed, each time; with one it is still deduplicated', async () => {
      const optional = await start({ required: false });
      const t = tenant('optional');
      const before = executions.get('orders') ?? 0;
      const a = await post(`${optional.url}/orders`, undefined, { amount: 8 }, { 'x-tenant': t });
      const b = await post(`${optional.url}/orders`, undefined, { amount: 8 }, { 'x-tenant': t });
      expect([a.status, b.status]).toEqual([201, 201]);
      expect(b.headers.get('idempotent-replayed')).toBeNull();
      expect(b.bytes.equals(a.bytes)).toBe(false);
      const keyed = await post(`${optional.url}/orders`, 'optional-1', { amount: 8 }, { 'x-tenant': t });
      const replay = await post(`${optional.url}/orders`, 'optional-1', { amount: 8 }, { 'x-tenant': t });
      expect(replay.bytes.equals(keyed.bytes)).toBe(true);
      expect(executions.get('orders')! - before).toBe(3);
      expect(await ordersOf(t)).toHaveLength(3);
      expect(await fx.rows('outbox_events', `tenant_id = '${t}'`)).toHaveLength(3); // unkeyed writes commit with their events too
    });

    it('header, fingerprintHeaders, replayHeaders and store are options', async () => {
      const custom = await start({
        header: 'X-Request-Id',
        fingerprintHeaders: ['Accept-Language'],
        replayHeaders: ['x-trace'],
        store: (status) => status < 400,
      });
      const t = tenant('options');
      const send = (path: string, key: string, language: string) =>
        post(`${custom.url}${path}`, undefined, { amount: 9 }, { 'x-tenant': t, 'x-request-id': key, 'accept-language': language });
      // The key comes from X-Request-Id: Idempotency-Key alone is a missing key.
      expect((await post(`${custom.url}/orders`, 'options-0', { amount: 9 }, { 'x-tenant': t })).status).toBe(400);
      const first = await send('/orders', 'options-1', 'de');
      const replay = await send('/orders', 'options-1', 'de');
      expect(replay.headers.get('idempotent-replayed')).toBe('true');
      expect(replay.headers.get('x-trace')).toBe(first.headers.get('x-trace')); // allow-listed here
      // A fingerprinted header that changed makes it another request.
      const otherLanguage = await send('/orders', 'options-1', 'fr');
      expect(otherLanguage.status).toBe(422);
      // store: only < 400 here, so a 404 is not stored: its writes roll back and a retry runs again.
      const before = executions.get('reject') ?? 0;
      const rejected = await send('/orders/reject', 'options-2', 'de');
      const again = await send('/orders/reject', 'options-2', 'de');
      expect([rejected.status, again.status]).toEqual([404, 404]);
      expect(again.headers.get('idempotent-replayed')).toBeNull();
      expect(executions.get('reject')! - before).toBe(2);
      expect(await ordersOf(t)).toHaveLength(1);
    });

    it("a fresh key is not refused 409 while its claim's write waits on a lock no duplicate holds", async () => {
      // The claim's INSERT waits behind a SHARE lock (CREATE INDEX takes one), as it did behind
      // relation extension locks under the 200 concurrent requests: with waitMs 0 that used to
      // answer 409 IDEMPOTENCY_IN_PROGRESS for a key nobody else had sent.
      const t = tenant('locked');
      const locker = await fx.database.admin.connect();
      try {
        await locker.query('BEGIN');
        await locker.query('LOCK TABLE once.idempotency_keys IN SHARE MODE');
        const reply = post(`${app.url}/orders`, 'locked-1', { amount: 3 }, { 'x-tenant': t });
        await new Promise((resolve) => setTimeout(resolve, 300));
        await locker.query('COMMIT');
        expect((await reply).status).toBe(201);
      } finally {
        locker.release();
      }
      expect(await ordersOf(t)).toHaveLength(1);
    });

    it('a request without a tenant is 400 INVALID_TENANT', async () => {
      const reply = await post(`${app.url}/orders`, 'no-tenant', { amount: 1 });
      expect(reply.status).toBe(400);
      expect(reply.json()).toMatchObject({ code: 'INVALID_TENANT' });
    });

    it('a quoted key (IETF Structured Field string) is the same key as the bare one', async () => {
      const headers = { 'x-tenant': tenant('quoted') };
      const bare = await post(`${app.url}/orders`, 'quoted-1', { amount: 2 }, headers);
      const quoted = await post(`${app.url}/orders`, '"quoted-1"', { amount: 2 }, headers);
      expect(quoted.headers.get('idempotent-replayed')).toBe('true');
      expect(quoted.bytes.equals(bare.bytes)).toBe(true);
    });

    it('keys are scoped by principal: two users of a tenant with the same key both execute', async () => {
      const t = tenant('principals');
      const a = await post(`${app.url}/orders`, 'shared', { amount: 3 }, { 'x-tenant': t, 'x-user': 'alice' });
      const b = await post(`${app.url}/orders`, 'shared', { amount: 3 }, { 'x-tenant': t, 'x-user': 'bob' });
      expect([a.status, b.status]).toEqual([201, 201]);
      expect(b.headers.get('idempotent-replayed')).toBeNull();
      expect(await ordersOf(t)).toHaveLength(2);
    });

    it('5xx answers are not stored: the writes roll back and a retry executes again', async () => {
      const t = tenant('fail');
      const before = executions.get('fail') ?? 0;
      const first = await post(`${app.url}/orders/fail`, 'fail-1', {}, { 'x-tenant': t });
      const retry = await post(`${app.url}/orders/fail`, 'fail-1', {}, { 'x-tenant': t });
      expect([first.status, retry.status]).toEqual([503, 503]);
      expect(retry.headers.get('idempotent-replayed')).toBeNull();
      expect(retry.bytes.equals(first.bytes)).toBe(false); // executed again: a new token
      expect(executions.get('fail')! - before).toBe(2);
      expect(await ordersOf(t)).toEqual([]);
      expect(await fx.rows('outbox_events', `tenant_id = '${t}'`)).toEqual([]);
    });

    it('a thrown error is not stored: its writes roll back and a retry executes again', async () => {
      const t = tenant('throw');
      const before = executions.get('throw') ?? 0;
      const first = await post(`${app.url}/orders/throw`, 'throw-1', {}, { 'x-tenant': t });
      const retry = await post(`${app.url}/orders/throw`, 'throw-1', {}, { 'x-tenant': t });
      expect([first.status, retry.status]).toEqual([500, 500]);
      expect(executions.get('throw')! - before).toBe(2);
      expect(await ordersOf(t)).toEqual([]);
    });

    it('4xx answers are stored and replayed byte for byte, their writes committed', async () => {
      const t = tenant('reject');
      const before = executions.get('reject') ?? 0;
      const first = await post(`${app.url}/orders/reject`, 'reject-1', {}, { 'x-tenant': t });
      const replay = await post(`${app.url}/orders/reject`, 'reject-1', {}, { 'x-tenant': t });
      expect([first.status, replay.status]).toEqual([404, 404]);
      expect(replay.bytes.equals(first.bytes)).toBe(true);
      expect(replay.headers.get('idempotent-replayed')).toBe('true');
      expect(executions.get('reject')! - before).toBe(1);
      expect(await ordersOf(t)).toHaveLength(1);
    });

    it('a binary answer replays the same bytes', async () => {
      const headers = { 'x-tenant': tenant('bytes') };
      const first = await post(`${app.url}/bytes`, 'bytes-1', {}, headers);
      const replay = await post(`${app.url}/bytes`, 'bytes-1', {}, headers);
      expect(first.bytes).toHaveLength(64);
      expect(replay.bytes.equals(first.bytes)).toBe(true);
      expect(replay.headers.get('content-type')).toBe('application/octet-stream');
    });

    it('the same key on another route is 422', async () => {
      const headers = { 'x-tenant': tenant('routes') };
      expect((await post(`${app.url}/orders`, 'route-1', {}, headers)).status).toBe(201);
      const other = await post(`${app.url}/orders/reject`, 'route-1', {}, headers);
      expect(other.status).toBe(422);
      expect(other.json()).toMatchObject({ code: 'IDEMPOTENCY_KEY_REUSED' });
    });

    it('a tenant over its rate limit gets 429 with Retry-After; replays are not limited', async () => {
      const t = tenant('limited');
      await setRateLimit(fx.database.adminUrl, { tenant: t, perSecond: 0.01, burst: 1 });
      const first = await post(`${app.url}/orders`, 'limited-1', { amount: 1 }, { 'x-tenant': t });
      expect(first.status).toBe(201);
      const limited = await post(`${app.url}/orders`, 'limited-2', { amount: 1 }, { 'x-tenant': t });
      expect(limited.status).toBe(429);
      expect(limited.headers.get('retry-after')).toMatch(/^[1-9]\d*$/);
      expect(limited.json()).toMatchObject({ status: 429, code: 'RATE_LIMITED', title: 'Too Many Requests' });
      expect((await post(`${app.url}/orders`, 'limited-1', { amount: 1 }, { 'x-tenant': t })).headers.get('idempotent-replayed')).toBe('true');
      expect(await ordersOf(t)).toHaveLength(1);
    });

    it('a request without a key on a method that does not need one runs in the tenant transaction', async () => {
      const t = tenant('count');
      await post(`${app.url}/orders`, 'count-1', {}, { 'x-tenant': t });
      const response = await fetch(`${app.url}/orders/count`, { headers: { 'x-tenant': t } });
      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({ orders: 1 }); // RLS: only this tenant's rows
      expect((await fetch(`${app.url}/orders/count`, { method: 'HEAD', headers: { 'x-tenant': t } })).status).toBe(200);
    });

    it("a server SIGKILLed mid-request leaves nothing; the client's retry executes exactly once", async () => {
      const t = tenant('killed');
      const key = 'killed-1';
      const child = spawn(process.execPath, ['test/fixtures/http-server.ts'], {
        env: { ...process.env, DATABASE_URL: fx.appUrl, FRAMEWORK: framework, HOLD_FOREVER: key },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
      const listening = String((await lines.next()).value);
      expect(listening).toMatch(/^LISTENING http:/);
      const url = listening.slice('LISTENING '.length);
      const attempt = post(`${url}/orders`, key, { amount: 7 }, { 'x-tenant': t }).catch((error: unknown) => error);
      expect((await lines.next()).value).toBe('IN_HANDLER');
      child.kill('SIGKILL');
      await once(child, 'exit');
      expect(await attempt).toBeInstanceOf(Error); // the connection died without an answer
      expect(await ordersOf(t)).toEqual([]);

      // Postgres ends the dead server's transaction once it reads the closed socket: until then the
      // key is in flight, and the client does what a 409 says (Retry-After), as a real one would.
      let retry = await post(`${app.url}/orders`, key, { amount: 7 }, { 'x-tenant': t });
      while (retry.status === 409) {
        await new Promise((resolve) => setTimeout(resolve, 1_000 * Number(retry.headers.get('retry-after'))));
        retry = await post(`${app.url}/orders`, key, { amount: 7 }, { 'x-tenant': t });
      }
      expect(retry.status).toBe(201);
      expect(retry.headers.get('idempotent-replayed')).toBeNull();
      const again = await post(`${app.url}/orders`, key, { amount: 7 }, { 'x-tenant': t });
      expect(again.bytes.equals(retry.bytes)).toBe(true);
      expect(await ordersOf(t, key)).toHaveLength(1);
    });
  });
}
