/**
 * The dashboard in a real browser (Debian's Chromium, driven by playwright-core): every page loads
 * and is saved as a screenshot under test-results/dashboard/ (kept by CI); an event the relay gave
 * up on is requeued through the UI and then delivered by the running relay; a hostile payload
 * runs no script; a form posted from another origin, or without logging in, changes nothing.
 * Without /usr/bin/chromium the test is skipped, unless CI or ONCE_REQUIRE_SERVICES is set: then
 * it fails, so CI cannot go green without a browser (.ci/run installs Debian's chromium).
 */
import { createServer, type Server } from 'node:http';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DeliveryEvent, enqueue, type Relay, runIdempotent, startRelay, withTenant } from '../src/index.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { type DashboardServer, serveDashboard } from './support/dashboard-server.ts';
import { QUIET_RELAY } from './support/relay-fixture.ts';

const CHROMIUM = '/usr/bin/chromium';
const chromiumRequired = Boolean(process.env.CI || process.env.ONCE_REQUIRE_SERVICES);
const chromiumAvailable = existsSync(CHROMIUM);
const SCREENSHOTS = new URL('../test-results/dashboard/', import.meta.url);
const TOKEN = 'browser-test-token-0123456789abcdef';
const XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">';

/** The other origin's server of the forged post, closed after the test. */
let attacker: Server | undefined;

describe.skipIf(!chromiumAvailable && !chromiumRequired)('the dashboard in Chromium', () => {
  let fx: AppFixture;
  let dashboard: DashboardServer;
  let browser: Browser;
  let relay: Relay;
  const delivered: DeliveryEvent[] = [];
  /** While true, the orders receiver refuses: with one attempt allowed, orders go dead. */
  let receiverDown = true;
  const dialogs: string[] = [];

  beforeAll(async () => {
    fx = await createAppFixture(4);
    const relayUrl = await fx.database.createLoginRole('relay');
    dashboard = await serveDashboard({ database: relayUrl, tokens: [TOKEN] });
    relay = await startRelay({
      ...QUIET_RELAY,
      connectionString: relayUrl,
      maxAttempts: 1,
      sinks: {
        '>': async (event) => {
          if (receiverDown && event.topic === 'orders.created') throw new Error(`receiver down: HTTP 503 <b>${XSS}</b>`);
          delivered.push(event);
        },
      },
    });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
    await mkdir(SCREENSHOTS, { recursive: true });
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await relay?.stop();
    attacker?.closeAllConnections();
    attacker?.close();
    await dashboard?.close();
    await fx?.close();
  });

  async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = await probe();
      if (value !== undefined) return value;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  const statusOf = async (id: string) =>
    (await fx.database.admin.query<{ status: string }>('SELECT status FROM once.outbox_events WHERE id = $1', [id])).rows[0]?.status;

  async function screenshot(page: Page, name: string) {
    await page.screenshot({ path: new URL(`${name}.png`, SCREENSHOTS).pathname, fullPage: true });
  }

  it('shows every page, requeues a dead event that the relay then delivers, and refuses forged actions', async () => {
    // Deliveries for the overview's charts.
    await withTenant(fx.app, 'acme', async (tx) => {
      for (let i = 0; i < 3; i += 1) await enqueue(tx, { topic: 'emails.sent', payload: { i } });
    });
    await until('three deliveries', async () => (delivered.length >= 3 ? true : undefined));
    // An order the receiver refused (dead after its one attempt), a backlog the relay has not reached
    // (due tomorrow), and idempotent calls: something on every page.
    const [deadId] = await withTenant(fx.app, 'acme', async (tx) => [(await enqueue(tx, { topic: 'orders.created', payload: { order: 42, note: XSS } })).id]);
    await until('the event to go dead', async () => ((await statusOf(deadId!)) === 'dead' ? true : undefined));
    // Written past the application (as superuser) so that the running relay never sees them due.
    await fx.database.admin.query(
      `INSERT INTO once.outbox_events (tenant_id, dedupe_id, topic, payload, payload_text, next_attempt_at)
       SELECT 'globex', 'invoice-' || i, 'invoices.sent', jsonb_build_object('i', i), jsonb_build_object('i', i)::text, now() + interval '1 day'
         FROM generate_series(1, 5) i`,
    );
    for (const key of ['k1', 'k2', 'k1', 'k1']) {
      await withTenant(fx.app, 'acme', (tx) => runIdempotent(tx, key, async () => ({ charged: key }), { tool: 'charge_card' }));
    }

    const context = await browser.newContext();
    const page = await context.newPage();
    page.on('dialog', (dialog) => {
      dialogs.push(dialog.message());
      void dialog.dismiss();
    });

    // Not logged in: the login form, nothing else.
    const first = await page.goto(`${dashboard.url}/dead`);
    expect(first!.status()).toBe(401);
    expect(await page.content()).not.toContain('acme');
    await screenshot(page, '01-login');
    await page.fill('input[name="token"]', TOKEN);
    await page.click('button:has-text("Log in")');
    await page.waitForURL(`${dashboard.url}/`);

    expect(await page.textContent('#dead')).toBe('1');
    expect(await page.textContent('#pending')).toBe('5');
    expect(await page.locator('svg[role="img"]').count()).toBe(2);
    await screenshot(page, '02-overview');

    await page.click('header a:has-text("Backlog")');
    expect(await page.locator('td', { hasText: 'globex' }).count()).toBe(1);
    await screenshot(page, '03-backlog');

    await page.click('header a:has-text("Idempotency")');
    expect(await page.locator('td:has-text("charge_card")').count()).toBeGreaterThan(0);
    await screenshot(page, '04-idempotency');
    await page.fill('form[action$="/idempotency/key"] input[name="tenant"]', 'acme');
    await page.fill('form[action$="/idempotency/key"] input[name="key"]', 'k1');
    await page.click('button:has-text("Look up")');
    expect(await page.locator('td', { hasText: /^completed$/ }).count()).toBe(1);
    expect(await page.locator('td', { hasText: /^replay$/ }).count()).toBe(2);
    await screenshot(page, '05-key');

    // The dead event's page shows the hostile payload and error as text; no script ran.
    await page.click('header a:has-text("Dead events")');
    await screenshot(page, '06-dead-events');
    await page.click(`a:text-is("${deadId}")`);
    expect(await page.textContent('#payload')).toContain('<script>window.__xss = 1</script>');
    expect(await page.textContent('#last-error')).toContain('receiver down: HTTP 503');
    expect(await page.evaluate(() => (globalThis as { __xss?: number }).__xss)).toBeUndefined();
    await screenshot(page, '07-event');

    // Another origin's page posting to the dashboard, with the operator's session cookie: refused.
    const [attackerUrl, attackerHits] = await serveAttacker(`${dashboard.url}/dead/discard`, deadId!);
    const forged = page.waitForResponse((response) => response.url().endsWith('/dead/discard'));
    await page.goto(attackerUrl);
    expect((await forged).status()).toBe(403);
    expect(attackerHits()).toBe(1);
    expect(await statusOf(deadId!)).toBe('dead');

    // Without logging in, the confirmation page and the action are refused.
    const stranger = await browser.newContext();
    const strangerPage = await stranger.newPage();
    expect((await strangerPage.goto(`${dashboard.url}/dead/confirm?action=requeue&id=${deadId}`))!.status()).toBe(401);
    const post = await strangerPage.request.post(`${dashboard.url}/dead/requeue`, { form: { id: deadId! } });
    expect(post.status()).toBe(401);
    await stranger.close();
    expect(await statusOf(deadId!)).toBe('dead');

    // The receiver is back: requeue through the UI, confirm, and the relay delivers it.
    receiverDown = false;
    await page.goto(`${dashboard.url}/dead?tenant=acme`);
    await page.check(`input[name="id"][value="${deadId}"]`);
    await page.click('button:has-text("Requeue selected")');
    expect(await page.textContent('#confirm')).toBe('Requeue 1 event(s)');
    await screenshot(page, '08-confirm');
    await page.click('#confirm');
    expect(await page.textContent('[role="status"]')).toBe('Requeued 1 event(s).');
    const event = await until('the relay to deliver the requeued event', async () => delivered.find((e) => e.id === deadId));
    expect(event.payload).toEqual({ order: 42, note: XSS });
    expect(await statusOf(deadId!)).toBe('delivered');
    const { rows } = await fx.database.admin.query('SELECT action, actor FROM once.operator_actions WHERE event_id = $1', [deadId]);
    expect(rows).toEqual([{ action: 'requeue', actor: expect.stringMatching(/^token:/) }]);

    await page.goto(`${dashboard.url}/`);
    expect(await page.textContent('#dead')).toBe('0');
    await screenshot(page, '09-overview-after');
    expect(dialogs).toEqual([]);
    await context.close();
  }, 120_000);
});

/** A page on another origin that posts a discard form to the dashboard as soon as it loads. */
async function serveAttacker(action: string, id: string): Promise<[string, () => number]> {
  let hits = 0;
  const server = createServer((_request, response) => {
    hits += 1;
    response.writeHead(200, { 'content-type': 'text/html' });
    response.end(`<form method="post" action="${action}"><input name="id" value="${id}"><input name="csrf" value="guess"></form>
<script>document.forms[0].submit()</script>`);
  });
  attacker = server;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return [`http://127.0.0.1:${(server.address() as AddressInfo).port}/`, () => hits];
}
