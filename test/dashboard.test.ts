/**
 * The dashboard over real HTTP, as the relay's login: who may see what, which posts are refused
 * (no token, no CSRF token, another site's form, read-only), that hostile payloads are escaped,
 * and that each requeue or discard leaves an audit row naming who did it.
 */
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { dashboardHandler } from '../src/dashboard.ts';
import { enqueue, runIdempotent, withTenant } from '../src/index.ts';
import { quoteIdentifier } from './support/database-url.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { dashboardClient, type DashboardServer, serveDashboard } from './support/dashboard-server.ts';

const TOKEN = 'test-dashboard-token-0123456789';
const XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">';
const SECRET_TENANT = 'tenant-with-a-secret-name';

let fx: AppFixture;
let relayUrl: string;
let dashboard: DashboardServer;
beforeAll(async () => {
  fx = await createAppFixture(4);
  relayUrl = await fx.database.createLoginRole('relay');
  dashboard = await serveDashboard({ database: relayUrl, tokens: [TOKEN] });
});
afterAll(async () => {
  await dashboard?.close();
  await fx?.close();
});
beforeEach(async () => {
  await fx.database.admin.query('DELETE FROM once.outbox_events');
});

/** Enqueues events as the application, then marks them dead as the relay would have. */
async function deadEvents(tenant: string, count: number, payload: unknown = { n: 1 }, lastError = 'HTTP 500 from receiver'): Promise<string[]> {
  const ids = await withTenant(fx.app, tenant, async (tx) => {
    const out: string[] = [];
    for (let i = 0; i < count; i += 1) out.push((await enqueue(tx, { topic: 'orders.created', payload, headers: { 'x-trace': XSS } })).id);
    return out;
  });
  await fx.database.admin.query(`UPDATE once.outbox_events SET status = 'dead', attempts = 25, last_error = $2 WHERE id = ANY($1::bigint[])`, [ids, lastError]);
  return ids;
}

const statusOf = async (id: string) =>
  (await fx.database.admin.query<{ status: string }>('SELECT status FROM once.outbox_events WHERE id = $1', [id])).rows[0]?.status;

async function loggedIn() {
  const client = dashboardClient(dashboard.url);
  const login = await client.post('/login', [['token', TOKEN]]);
  expect(login.status).toBe(303);
  expect(login.headers.get('set-cookie')).toMatch(/HttpOnly; SameSite=Strict/);
  return client;
}

describe('authentication', () => {
  it('shows nothing of any tenant without the token, only a login form', async () => {
    const [id] = await deadEvents(SECRET_TENANT, 1);
    const anonymous = dashboardClient(dashboard.url);
    for (const path of [
      '/',
      '/backlog',
      '/dead',
      `/event?tenant=${SECRET_TENANT}&id=${id}`,
      '/idempotency',
      `/idempotency/key?tenant=${SECRET_TENANT}&key=k`,
    ]) {
      const page = await anonymous.get(path);
      expect(page.status, path).toBe(401);
      expect(page.body).toContain('name="token"');
      expect(page.body).not.toContain(SECRET_TENANT);
    }
    const wrong = await anonymous.post('/login', [['token', 'not-the-token-at-all-0000']]);
    expect(wrong.status).toBe(401);
    expect(wrong.headers.get('set-cookie')).toBeNull();
    // A forged session cookie is no session.
    const forged = dashboardClient(dashboard.url, 'pg_once_dashboard=eyJhIjoieCIsImUiOjk5OTk5OTk5OTk5OTl9.AAAA');
    expect((await forged.get('/dead')).status).toBe(401);
  });

  it('accepts the token as a bearer header, for scripts', async () => {
    const page = await fetch(`${dashboard.url}/dead`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(page.status).toBe(200);
    expect(page.headers.get('content-security-policy')).toContain("script-src 'self'");
  });

  it('refuses options that would serve every tenant to anyone', () => {
    expect(() => dashboardHandler({ database: relayUrl })).toThrow(expect.objectContaining({ code: 'INVALID_OPTIONS' }));
    expect(() => dashboardHandler({ database: relayUrl, tokens: ['short'] })).toThrow(expect.objectContaining({ code: 'INVALID_OPTIONS' }));
    expect(() => dashboardHandler({ database: relayUrl, tokens: [TOKEN], basePath: 'no-slash' })).toThrow(expect.objectContaining({ code: 'INVALID_OPTIONS' }));
    expect(() => dashboardHandler({ database: relayUrl, tokens: [TOKEN], sweepSchedule: 'every tuesday' })).toThrow(
      expect.objectContaining({ code: 'INVALID_OPTIONS' }),
    );
  });

  it('without a token, answers loopback clients only', async () => {
    const external = Object.values(networkInterfaces())
      .flat()
      .find((address) => address && address.family === 'IPv4' && !address.internal)?.address;
    if (external === undefined) return; // a host with no other interface has no other client to refuse
    const open = await serveDashboard({ database: relayUrl, allowUnauthenticatedLoopback: true }, '0.0.0.0');
    try {
      const port = new URL(open.url).port;
      expect((await fetch(`http://127.0.0.1:${port}/dead`)).status).toBe(200);
      const refused = await fetch(`http://${external}:${port}/dead`);
      expect(refused.status).toBe(403);
    } finally {
      await open.close();
    }
  });

  it("takes the host application's authentication through authorize()", async () => {
    const hosted = await serveDashboard({ database: relayUrl, authorize: (request) => (request.headers['x-user'] === 'ada' ? 'ada' : undefined) });
    try {
      expect((await fetch(`${hosted.url}/dead`)).status).toBe(401);
      const [id] = await deadEvents('t-authorize', 1);
      const ada = dashboardClient(hosted.url);
      const page = await fetch(`${hosted.url}/dead`, { headers: { 'x-user': 'ada' } });
      const csrf = /<meta name="csrf-token" content="([^"]+)">/.exec(await page.text())![1]!;
      const done = await ada.post(
        '/dead/requeue',
        [
          ['id', id!],
          ['csrf', csrf],
        ],
        { 'x-user': 'ada' },
      );
      expect(done.status).toBe(303);
      const { rows } = await fx.database.admin.query('SELECT actor FROM once.operator_actions WHERE event_id = $1', [id]);
      expect(rows).toEqual([{ actor: 'ada' }]);
    } finally {
      await hosted.close();
    }
  });

  it('mounts under a base path, whether or not the framework strips it from the URL', async () => {
    const mounted = await serveDashboard({ database: relayUrl, tokens: [TOKEN], basePath: '/ops/once' });
    try {
      const client = dashboardClient(mounted.url);
      const login = await client.post('/ops/once/login', [['token', TOKEN]]);
      expect(login.headers.get('location')).toBe('/ops/once/');
      expect(login.headers.get('set-cookie')).toContain('Path=/ops/once;');
      const page = await client.get('/ops/once/dead'); // node:http: the path still has it
      expect(page.status).toBe(200);
      expect(page.body).toContain('href="/ops/once/assets/dashboard.css"');
      expect(page.body).toContain('action="/ops/once/dead"');
      expect((await fetch(`${mounted.url}/dead`, { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(200); // Express: stripped
    } finally {
      await mounted.close();
    }
  });

  it('refuses a login that does not hold the relay role', async () => {
    const wrong = await serveDashboard({ database: fx.appUrl, tokens: [TOKEN] });
    try {
      const page = await fetch(`${wrong.url}/dead`, { headers: { authorization: `Bearer ${TOKEN}` } });
      expect(page.status).toBe(500);
      expect(await page.text()).toContain('WRONG_ROLE');
    } finally {
      await wrong.close();
    }
  });
});

describe('actions', () => {
  it('requeues and discards after confirmation, with an audit row naming who did it', async () => {
    const client = await loggedIn();
    const ids = await deadEvents('t-actions', 3);
    const confirm = await client.get(`/dead/confirm?action=requeue&id=${ids[0]}&id=${ids[1]}`);
    expect(confirm.status).toBe(200);
    expect(confirm.body).toContain('Requeue 2 event(s)');
    expect(await statusOf(ids[0]!)).toBe('dead'); // showing the confirmation changed nothing
    const csrf = /name="csrf" value="([^"]+)"/.exec(confirm.body)![1]!;

    const requeued = await client.post('/dead/requeue', [
      ['id', ids[0]!],
      ['id', ids[1]!],
      ['csrf', csrf],
    ]);
    expect(requeued.status).toBe(303);
    expect(requeued.headers.get('location')).toBe('/dead?done=requeue&count=2');
    expect(await statusOf(ids[0]!)).toBe('pending');
    expect(await statusOf(ids[1]!)).toBe('pending');

    const discarded = await client.post('/dead/discard', [
      ['id', ids[2]!],
      ['csrf', csrf],
    ]);
    expect(discarded.status).toBe(303);
    expect(await statusOf(ids[2]!)).toBeUndefined();

    const { rows } = await fx.database.admin.query<{
      action: string;
      actor: string;
      db_role: string;
      tenant_id: string;
      event_id: string;
      detail: Record<string, unknown>;
    }>('SELECT action, actor, db_role, tenant_id, event_id, detail FROM once.operator_actions WHERE tenant_id = $1 ORDER BY id', ['t-actions']);
    // One statement inserts a requeue's rows, in no promised order.
    expect(rows.map((row) => `${row.action} ${row.event_id}`).sort()).toEqual([`discard ${ids[2]}`, `requeue ${ids[0]}`, `requeue ${ids[1]}`].sort());
    expect(rows[0]!.actor).toMatch(/^token:[0-9a-f]{12}$/);
    expect(rows[0]!.db_role).toBe(new URL(relayUrl).username);
    expect(rows[2]!.detail).toMatchObject({ topic: 'orders.created', attempts: 25, last_error: 'HTTP 500 from receiver', via: 'dashboard' });

    // The event's page shows its history.
    const page = await client.get(`/event?tenant=t-actions&id=${ids[0]}`);
    expect(page.body).toContain('Operator actions');
    expect(page.body).toContain(rows[0]!.actor);
  });

  it('refuses posts without the CSRF token, from another site, or when read-only', async () => {
    const client = await loggedIn();
    const [id] = await deadEvents('t-csrf', 1);
    const csrf = await client.csrf();
    expect((await client.post('/dead/discard', [['id', id!]])).status).toBe(403);
    expect(
      (
        await client.post('/dead/discard', [
          ['id', id!],
          ['csrf', 'x'.repeat(43)],
        ])
      ).status,
    ).toBe(403);
    expect(
      (
        await client.post(
          '/dead/discard',
          [
            ['id', id!],
            ['csrf', csrf],
          ],
          { origin: 'https://evil.example' },
        )
      ).status,
    ).toBe(403);
    expect(
      (
        await client.post(
          '/dead/discard',
          [
            ['id', id!],
            ['csrf', csrf],
          ],
          { 'sec-fetch-site': 'cross-site' },
        )
      ).status,
    ).toBe(403);
    // No session at all: the login form, nothing done.
    expect(
      (
        await dashboardClient(dashboard.url).post('/dead/discard', [
          ['id', id!],
          ['csrf', csrf],
        ])
      ).status,
    ).toBe(401);
    expect(await statusOf(id!)).toBe('dead');

    const readOnly = await serveDashboard({ database: relayUrl, tokens: [TOKEN], readOnly: true });
    try {
      const viewer = dashboardClient(readOnly.url);
      await viewer.post('/login', [['token', TOKEN]]);
      const list = await viewer.get('/dead');
      expect(list.body).toContain(`>${id}</a>`);
      expect(list.body).not.toContain('Requeue selected');
      const token = await viewer.csrf();
      expect(
        (
          await viewer.post('/dead/requeue', [
            ['id', id!],
            ['csrf', token],
          ])
        ).status,
      ).toBe(403);
      expect((await viewer.get(`/dead/confirm?action=requeue&id=${id}`)).status).toBe(403);
    } finally {
      await readOnly.close();
    }
    expect(await statusOf(id!)).toBe('dead');
    const { rows } = await fx.database.admin.query('SELECT 1 FROM once.operator_actions WHERE event_id = $1', [id]);
    expect(rows).toHaveLength(0);
  });

  it('rejects ids that are not event ids', async () => {
    const client = await loggedIn();
    const csrf = await client.csrf();
    expect(
      (
        await client.post('/dead/requeue', [
          ['id', '1); DROP TABLE x; --'],
          ['csrf', csrf],
        ])
      ).status,
    ).toBe(400);
    expect((await client.post('/dead/requeue', [['csrf', csrf]])).status).toBe(400);
  });
});

describe('pages', () => {
  it('escapes hostile payloads, headers, errors, topics and tenants', async () => {
    const client = await loggedIn();
    const tenant = `t"><svg onload=alert(1)>`;
    const ids = await withTenant(fx.app, tenant, async (tx) => [
      (await enqueue(tx, { topic: `topic<img src=x onerror=alert(2)>`, payload: { html: XSS }, headers: { 'x-evil': XSS } })).id,
    ]);
    await fx.database.admin.query(`UPDATE once.outbox_events SET status = 'dead', last_error = $2 WHERE id = $1`, [ids[0], `</pre>${XSS}`]);
    for (const path of ['/dead', `/event?tenant=${encodeURIComponent(tenant)}&id=${ids[0]}`, '/backlog', `/dead/confirm?action=discard&id=${ids[0]}`]) {
      const { body, status } = await client.get(path);
      expect(status, path).toBe(200);
      expect(body, path).not.toMatch(/<script>window|<img src=x|<svg onload/);
    }
    const { body } = await client.get(`/event?tenant=${encodeURIComponent(tenant)}&id=${ids[0]}`);
    expect(body).toContain('&lt;script&gt;window.__xss = 1&lt;/script&gt;');
  });

  it('pages through dead events newest first, filtered by tenant, topic and error', async () => {
    const paged = await serveDashboard({ database: relayUrl, tokens: [TOKEN], pageSize: 2 });
    try {
      const client = dashboardClient(paged.url);
      await client.post('/login', [['token', TOKEN]]);
      const a = await deadEvents('t-page-a', 3, {}, 'timeout after 10 s');
      const b = await deadEvents('t-page-b', 1, {}, 'HTTP 410 Gone');
      const ids = (body: string) => [...body.matchAll(/name="id" value="(\d+)"/g)].map((m) => m[1]);
      const first = await client.get('/dead');
      expect(ids(first.body)).toEqual([b[0], a[2]]);
      const older = /rel="next" href="([^"]+)"/.exec(first.body)![1]!.replaceAll('&amp;', '&');
      expect(ids((await client.get(older)).body)).toEqual([a[1], a[0]]);
      expect(ids((await client.get('/dead?tenant=t-page-b')).body)).toEqual(b);
      expect(ids((await client.get('/dead?error=GONE')).body)).toEqual(b);
      expect(ids((await client.get('/dead?topic=nope')).body)).toEqual([]);
    } finally {
      await paged.close();
    }
  });

  it('shows the backlog by tenant (by size and by name, paged) and by topic', async () => {
    const paged = await serveDashboard({ database: relayUrl, tokens: [TOKEN], pageSize: 2 });
    try {
      const client = dashboardClient(paged.url);
      await client.post('/login', [['token', TOKEN]]);
      for (const [tenant, count] of [
        ['bk-a', 1],
        ['bk-b', 3],
        ['bk-c', 2],
      ] as const) {
        await withTenant(fx.app, tenant, async (tx) => {
          for (let i = 0; i < count; i += 1) await enqueue(tx, { topic: `topic-${i % 2}`, payload: {}, ...(i === 2 ? { orderingKey: 'k' } : {}) });
        });
      }
      const tenants = (body: string) => [...body.matchAll(/<tr><td>(bk-[a-z])<\/td><td class="n">(\d+)</g)].map((m) => `${m[1]}=${m[2]}`);
      const bySize = await client.get('/backlog');
      expect(tenants(bySize.body)).toEqual(['bk-b=3', 'bk-c=2']);
      expect(bySize.body).toMatch(/<td>topic-0<\/td><td class="n">4<\/td><td class="n">3<\/td>/);
      const next = /rel="next" href="([^"]+)"/.exec(bySize.body)![1]!.replaceAll('&amp;', '&');
      expect(tenants((await client.get(next)).body)).toEqual(['bk-a=1']);
      const byName = await client.get('/backlog?order=name');
      expect(tenants(byName.body)).toEqual(['bk-a=1', 'bk-b=3']);
      const nextByName = /rel="next" href="([^"]+)"/.exec(byName.body)![1]!.replaceAll('&amp;', '&');
      expect(tenants((await client.get(nextByName)).body)).toEqual(['bk-c=2']);
      const overview = await client.get('/');
      expect(overview.body).toMatch(/id="pending">6</);
    } finally {
      await paged.close();
    }
  });

  it('looks up a key: state, lease, audit trail; results only for a login that holds the application role', async () => {
    const client = await loggedIn();
    const call = () =>
      withTenant(fx.app, 't-keys', (tx) => runIdempotent(tx, 'order-42', async () => ({ secret: 'result-of-tenant' }), { tool: 'charge_card' }));
    await call();
    await call();
    const page = await client.get('/idempotency/key?tenant=t-keys&key=order-42');
    expect(page.body).toContain('completed');
    expect(page.body).toContain('charge_card');
    expect(page.body).toMatch(/<td>replay<\/td>/);
    expect(page.body).not.toContain('result-of-tenant');
    expect(page.body).toContain('Results are not shown');

    const chart = await client.get('/idempotency?tenant=t-keys');
    expect(chart.body).toContain('<svg');
    expect(chart.body).toMatch(/<td>charge_card<\/td><td class="n">1<\/td><td class="n">1<\/td>/);

    // A login granted both roles previews results, read under row-level security for that tenant.
    const both = await fx.database.createLoginRole('relay');
    await fx.database.admin.query(`GRANT ${quoteIdentifier((await fx.database.roles())!.app)} TO ${quoteIdentifier(new URL(both).username)}`);
    const full = await serveDashboard({ database: both, tokens: [TOKEN] });
    try {
      const viewer = dashboardClient(full.url);
      await viewer.post('/login', [['token', TOKEN]]);
      const preview = await viewer.get('/idempotency/key?tenant=t-keys&key=order-42');
      expect(preview.body).toContain('result-of-tenant');
    } finally {
      await full.close();
    }
  });
});

describe('pg-once dashboard', () => {
  const run = promisify(execFile);

  it('refuses to listen beyond loopback without a token', async () => {
    const failure = await run(process.execPath, ['src/cli.ts', 'dashboard', '--host', '0.0.0.0', '--port', '0', '--database-url', relayUrl], {
      env: { ...process.env, ONCE_DASHBOARD_TOKEN: '' },
    }).catch((error: { code: number; stderr: string }) => error);
    expect(failure).toMatchObject({ code: 2 });
    expect((failure as { stderr: string }).stderr).toMatch(/without a token.*\[INVALID_OPTIONS\]/);
  });

  it('serves with a token file, and stops on SIGTERM', async () => {
    const directory = await mkdtemp(join(tmpdir(), 'pg-once-dashboard-'));
    await writeFile(join(directory, 'token'), `${TOKEN}\n`);
    const child = spawn(
      process.execPath,
      ['src/cli.ts', 'dashboard', '--host', '0.0.0.0', '--port', '0', '--token-file', join(directory, 'token'), '--database-url', relayUrl],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    try {
      const [line] = (await once(child.stdout, 'data')) as [Buffer];
      const port = /:(\d+)\/ \(token required\)/.exec(line.toString())![1];
      expect((await fetch(`http://127.0.0.1:${port}/dead`)).status).toBe(401);
      expect((await fetch(`http://127.0.0.1:${port}/dead`, { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(200);
    } finally {
      child.kill('SIGTERM');
    }
    const [code] = await once(child, 'exit');
    expect(code).toBe(0);
  });
});
