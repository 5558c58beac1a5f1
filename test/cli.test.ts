/**
 * The operator's commands end to end: `pg-once relay` delivering to a real receiver until SIGTERM,
 * `pg-once outbox dead|requeue`, `pg-once sweep`, `pg-once limits`.
 */
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enqueue, withTenant } from '../src/index.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { fillOutbox, waitForOutbox } from './support/outbox-helpers.ts';
import { startWebhookReceiver, type WebhookReceiver } from './support/webhook-receiver.ts';

const run = promisify(execFile);
const cli = (args: string[], env: Record<string, string> = {}) => run(process.execPath, ['src/cli.ts', ...args], { env: { ...process.env, ...env } });

let fx: AppFixture;
let relayUrl: string;
let receiver: WebhookReceiver;
beforeAll(async () => {
  fx = await createAppFixture(4);
  relayUrl = await fx.database.createLoginRole('relay');
  receiver = await startWebhookReceiver();
});
afterAll(async () => {
  await receiver?.close();
  await fx?.close();
});

describe('pg-once relay', () => {
  it('delivers with flags until SIGTERM, then stops gracefully', async () => {
    const refs = await fillOutbox(fx.app, { count: 30, tenants: 2 });
    const child = spawn(process.execPath, ['src/cli.ts', 'relay', '--http', receiver.url, '--webhook-secret', receiver.secret], {
      env: { ...process.env, DATABASE_URL: relayUrl },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
    expect(line).toMatch(/^\S+Z INFO {2}pg-once: relay started relayId=\S+ /);
    await waitForOutbox(fx.database.admin, (c) => c.delivered === 30);
    child.kill('SIGTERM');
    const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
    expect(code === 0 || signal === 'SIGTERM').toBe(true);
    expect(new Set(receiver.accepted.map((d) => d.webhookId))).toEqual(new Set(refs.map((r) => r.dedupeId)));
    const { rows } = await fx.database.admin.query('SELECT count(*)::int AS n FROM once.outbox_events WHERE locked_by IS NOT NULL');
    expect(rows[0].n).toBe(0);
  });

  it('reads a JSON config with declarative sinks', async () => {
    await fx.database.admin.query('DELETE FROM once.outbox_events');
    receiver.accepted.length = 0;
    await withTenant(fx.app, 'cfg', (tx) => enqueue(tx, { topic: 'orders.created', payload: { n: 1 } }));
    const config = join(tmpdir(), `pg-once-relay-${process.pid}.json`);
    await writeFile(config, JSON.stringify({ sinks: { 'orders.*': { http: { url: receiver.url, secret: receiver.secret } } }, concurrency: 4 }));
    const child = spawn(process.execPath, ['src/cli.ts', 'relay', '--config', config, '--database-url', relayUrl], { stdio: ['ignore', 'pipe', 'inherit'] });
    await once(createInterface({ input: child.stdout! }), 'line');
    await waitForOutbox(fx.database.admin, (c) => c.delivered === 1);
    child.kill('SIGINT');
    await once(child, 'exit');
    expect(receiver.accepted.map((d) => d.body.type)).toEqual(['orders.created']);
  });

  it("--log-format json: one JSON object per line in pino's shape, from the start line to the stop line", async () => {
    await fx.database.admin.query('DELETE FROM once.outbox_events');
    receiver.accepted.length = 0;
    await fillOutbox(fx.app, { count: 10, tenants: 2 });
    const child = spawn(process.execPath, ['src/cli.ts', 'relay', '--http', receiver.url, '--log-format', 'json', '--concurrency', '4'], {
      env: { ...process.env, DATABASE_URL: relayUrl, ONCE_WEBHOOK_SECRET: receiver.secret },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const lines: string[] = [];
    const reader = createInterface({ input: child.stdout! });
    reader.on('line', (line) => lines.push(line));
    const closed = once(reader, 'close');
    await once(reader, 'line');
    await waitForOutbox(fx.database.admin, (c) => c.delivered === 10);
    child.kill('SIGTERM');
    await Promise.all([once(child, 'exit'), closed]);

    const records = lines.map((line) => JSON.parse(line) as Record<string, any>);
    for (const record of records) {
      expect(record).toMatchObject({ time: expect.any(Number), pid: child.pid, hostname: expect.any(String), name: 'pg-once', msg: expect.any(String) });
      expect(pino.levels.labels[record.level]).toBeDefined();
    }
    expect(records[0]).toMatchObject({ level: pino.levels.values.info, msg: 'relay started', concurrency: 4, topics: ['>'], relayId: expect.any(String) });
    expect(lines.join('\n')).not.toContain(receiver.secret);
    expect(records.map((record) => record.msg)).toContain('relay stopping');
    expect(records.at(-1)).toMatchObject({ msg: 'relay stopped', delivered: 10, dead: 0, released: 0, relayId: records[0]!.relayId });
  });

  it('refuses an unknown --log-format, with a usage error', async () => {
    const error = (await cli(['relay', '--http', 'http://127.0.0.1:9/', '--log-format', 'yaml'], {
      DATABASE_URL: relayUrl,
      ONCE_WEBHOOK_SECRET: receiver.secret,
    }).catch((e: unknown) => e)) as { code: number; stderr: string };
    expect(error.code).toBe(2);
    expect(error.stderr).toContain('--log-format expects json or text');
  });

  it('refuses to start without a sink, with a usage error', async () => {
    const error = (await cli(['relay'], { DATABASE_URL: relayUrl }).catch((e: unknown) => e)) as { code: number; stderr: string };
    expect(error.code).toBe(2);
    expect(error.stderr).toContain('no sink');
  });
});

describe('pg-once outbox, sweep, limits', () => {
  it('lists dead events and requeues them', async () => {
    await fx.database.admin.query('DELETE FROM once.outbox_events');
    const [ref] = await fillOutbox(fx.app, { count: 1, tenants: 1 });
    await fx.database.admin.query("UPDATE once.outbox_events SET status = 'dead', attempts = 25, last_error = 'HTTP 410 Gone'");
    const listed = JSON.parse((await cli(['outbox', 'dead', '--json', '--database-url', relayUrl])).stdout);
    expect(listed).toEqual([expect.objectContaining({ id: ref!.id, attempts: 25, lastError: 'HTTP 410 Gone' })]);
    expect((await cli(['outbox', 'dead', '--database-url', relayUrl])).stdout).toContain('HTTP 410 Gone');
    expect((await cli(['outbox', 'requeue', ref!.id, '--database-url', relayUrl])).stdout).toContain('Requeued 1 event(s).');
    const { rows } = await fx.database.admin.query('SELECT status, attempts FROM once.outbox_events');
    expect(rows).toEqual([{ status: 'pending', attempts: 0 }]);
    const missing = (await cli(['outbox', 'requeue', '424242', '--database-url', relayUrl]).catch((e: unknown) => e)) as { code: number; stderr: string };
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('EVENT_NOT_FOUND');
  });

  it('sweeps and reports counts as JSON', async () => {
    await fx.database.admin.query("DELETE FROM once.outbox_events; UPDATE once.idempotency_keys SET expires_at = now() - interval '1 second'");
    const { rows } = await fx.database.admin.query('SELECT count(*)::int AS n FROM once.idempotency_keys');
    const result = JSON.parse((await cli(['sweep', '--json', '--database-url', relayUrl])).stdout);
    expect(result).toMatchObject({ idempotencyKeys: rows[0].n, outboxEvents: 0, truncated: false });
  });

  it('sets, lists and removes rate limits', async () => {
    await cli(['limits', 'set', 'tenant_42', '--per-second', '5', '--burst', '20', '--database-url', fx.database.adminUrl]);
    await cli(['limits', 'set', '--default', '--per-second', '10', '--burst', '50', '--database-url', fx.database.adminUrl]);
    const listed = JSON.parse((await cli(['limits', 'list', '--json', '--database-url', fx.database.adminUrl])).stdout);
    expect(listed.map((l: { tenant: string; perSecond: number; burst: number }) => [l.tenant, l.perSecond, l.burst])).toEqual([
      ['*', 10, 50],
      ['tenant_42', 5, 20],
    ]);
    expect((await cli(['limits', 'remove', '--default', '--database-url', fx.database.adminUrl])).stdout).toContain('removed');
    const bad = (await cli(['limits', 'set', 'x', '--per-second', '0', '--burst', '1', '--database-url', fx.database.adminUrl]).catch((e: unknown) => e)) as {
      code: number;
      stderr: string;
    };
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('INVALID_OPTIONS');
  });
});
