/**
 * dashboardHandler mounted as docs/operations.md shows it, in real Express 5, Fastify 5 and Hono 4 (on
 * @hono/node-server) servers under /ops/once: logging in, pages, and a requeue through a form
 * post with its CSRF token, each through the framework's own routing and body handling.
 */
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import express from 'express';
import Fastify from 'fastify';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dashboardHandler, type DashboardHandler } from '../src/dashboard.ts';
import { enqueue, withTenant } from '../src/index.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { dashboardClient } from './support/dashboard-server.ts';

const TOKEN = 'framework-dashboard-token-0123456789';
const BASE = '/ops/once';

let fx: AppFixture;
let relayUrl: string;
beforeAll(async () => {
  fx = await createAppFixture(4);
  relayUrl = await fx.database.createLoginRole('relay');
});
afterAll(async () => {
  await fx?.close();
});

interface Mounted {
  url: string;
  close(): Promise<void>;
}

type Mount = (handler: DashboardHandler) => Promise<Mounted>;

const frameworks: Record<string, Mount> = {
  async express(handler) {
    const app = express();
    // A body parser that ran first is fine: the handler reads req.body then.
    app.use(express.urlencoded({ extended: false }));
    app.use(BASE, handler);
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    return {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      close: () =>
        new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        }),
    };
  },
  async fastify(handler) {
    const app = Fastify();
    // As docs/operations.md shows: in a scope of its own, whose form bodies Fastify leaves unread (the
    // dashboard parses them itself), so the application's other routes keep their parsers.
    await app.register(async (scope) => {
      scope.removeAllContentTypeParsers();
      scope.addContentTypeParser('*', (_request, _payload, done) => done(null));
      scope.all(`${BASE}/*`, (request, reply) => {
        reply.hijack();
        void handler(request.raw, reply.raw);
      });
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    return { url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`, close: () => app.close() };
  },
  async hono(handler) {
    const app = new Hono<{ Bindings: { incoming: Parameters<DashboardHandler>[0]; outgoing: Parameters<DashboardHandler>[1] } }>();
    app.all(`${BASE}/*`, async (c) => {
      await handler(c.env.incoming, c.env.outgoing);
      return RESPONSE_ALREADY_SENT;
    });
    const server = await new Promise<ReturnType<typeof serve>>((resolve) => {
      const started = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(started));
    });
    return {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      close: () => new Promise<void>((resolve) => server.close(() => resolve())),
    };
  },
};

describe.each(Object.entries(frameworks))('the dashboard mounted in %s', (_name, mount) => {
  it('logs in, serves its pages under the base path, and requeues a dead event through a confirmed form post', async () => {
    const ids = await withTenant(fx.app, 'tenant-fw', async (tx) => [(await enqueue(tx, { topic: 'fw.test', payload: { n: 1 } })).id]);
    await fx.database.admin.query(`UPDATE once.outbox_events SET status = 'dead', attempts = 25, last_error = 'HTTP 500' WHERE id = $1`, [ids[0]]);
    const handler = dashboardHandler({ database: relayUrl, tokens: [TOKEN], basePath: BASE });
    const mounted = await mount(handler);
    try {
      const client = dashboardClient(mounted.url);
      expect((await client.get(`${BASE}/dead`)).status).toBe(401);
      const login = await client.post(`${BASE}/login`, [['token', TOKEN]]);
      expect(login.status).toBe(303);
      expect(login.headers.get('location')).toBe(`${BASE}/`);
      for (const path of ['/', '/backlog', '/dead', '/idempotency']) {
        const page = await client.get(BASE + path);
        expect(page.status, path).toBe(200);
        expect(page.body).toContain(`href="${BASE}/assets/dashboard.css"`);
      }
      const css = await client.get(`${BASE}/assets/dashboard.css`);
      expect(css.status).toBe(200);

      const dead = await client.get(`${BASE}/dead`);
      expect(dead.body).toContain('tenant-fw');
      // The confirmation page (a GET changes nothing), then the post with its CSRF token.
      const confirm = await client.get(`${BASE}/dead/confirm?action=requeue&id=${ids[0]}`);
      expect(confirm.status).toBe(200);
      const csrf = /name="csrf" value="([^"]+)"/.exec(confirm.body)![1]!;
      expect((await client.post(`${BASE}/dead/requeue`, [['id', ids[0]!]])).status).toBe(403);
      const done = await client.post(`${BASE}/dead/requeue`, [
        ['id', ids[0]!],
        ['csrf', csrf],
      ]);
      expect(done.status).toBe(303);
      expect(done.headers.get('location')).toBe(`${BASE}/dead?done=requeue&count=1`);
      const { rows } = await fx.database.admin.query<{ status: string }>('SELECT status FROM once.outbox_events WHERE id = $1', [ids[0]]);
      expect(rows[0]!.status).toBe('pending');
    } finally {
      await mounted.close();
      await handler.close();
    }
  });
});
