/**
 * Secrets and the command line: `pg-once webhook-secret` makes one; `pg-once relay` takes the
 * webhook secret from a file or ONCE_WEBHOOK_SECRET, and warns when a secret is passed as a flag
 * (other users of the host can read the command line). The CLI is spawned, as an operator runs it.
 */
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpSink, verifyWebhook } from '../src/index.ts';
import { createAppFixture, type AppFixture } from './support/app-fixture.ts';
import { fillOutbox, waitForOutbox } from './support/outbox-helpers.ts';
import { startWebhookReceiver, type WebhookReceiver } from './support/webhook-receiver.ts';

const run = promisify(execFile);
const cli = (args: string[], env: Record<string, string> = {}) => run(process.execPath, ['src/cli.ts', ...args], { env: { ...process.env, ...env } });
const cliError = async (args: string[], env: Record<string, string> = {}) =>
  (await cli(args, env).then(
    () => expect.fail('expected the command to fail'),
    (error: unknown) => error,
  )) as { code: number; stderr: string };

const WARNING = /warning: --[a-z-]+ puts a secret on the command line/;
const secretOf = (bytes: number) => `whsec_${randomBytes(bytes).toString('base64')}`;

let fx: AppFixture;
let relayUrl: string;
let receiver: WebhookReceiver;
let directory: string;
beforeAll(async () => {
  fx = await createAppFixture(4);
  relayUrl = await fx.database.createLoginRole('relay');
  receiver = await startWebhookReceiver();
  directory = await mkdtemp(join(tmpdir(), 'pg-once-secrets-'));
});
afterAll(async () => {
  await receiver?.close();
  await fx?.close();
  if (directory) await rm(directory, { recursive: true, force: true });
});

/** Runs `pg-once relay` until `count` more events are delivered, then SIGTERM; returns its stderr. */
async function relayDelivering(args: string[], env: Record<string, string>, count: number): Promise<string> {
  await fx.database.admin.query('DELETE FROM once.outbox_events');
  receiver.accepted.length = 0;
  const refs = await fillOutbox(fx.app, { count, tenants: 2 });
  const child = spawn(process.execPath, ['src/cli.ts', 'relay', ...args], {
    env: { ...process.env, DATABASE_URL: relayUrl, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  try {
    const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
    expect(line).toMatch(/^\S+Z INFO {2}pg-once: relay started relayId=\S+ /);
    await waitForOutbox(fx.database.admin, (c) => c.delivered === count);
  } finally {
    child.kill('SIGTERM');
    await once(child, 'exit');
  }
  expect(new Set(receiver.accepted.map((d) => d.webhookId))).toEqual(new Set(refs.map((r) => r.dedupeId)));
  expect(receiver.unverified).toBe(0);
  return stderr;
}

describe('pg-once webhook-secret', () => {
  it('prints a new whsec_ secret of 32 random bytes, which signers and verifiers accept', async () => {
    const [first, second] = await Promise.all([cli(['webhook-secret']), cli(['webhook-secret'])]);
    const secret = first.stdout.trim();
    expect(secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(Buffer.from(secret.slice('whsec_'.length), 'base64')).toHaveLength(32);
    expect(second.stdout.trim()).not.toBe(secret);
    expect(first.stderr).toBe('');
    expect(typeof httpSink({ url: 'https://hooks.example.com/', secret })).toBe('function');
    expect(() => verifyWebhook({}, '{}', secret)).toThrow(expect.objectContaining({ reason: 'missing_headers' }));
  });

  it('is listed in the usage, and its --help shows how to keep the secret off the command line', async () => {
    expect((await cli(['--help'])).stdout).toMatch(/webhook-secret\s+print a new webhook signing secret/);
    expect((await cli(['webhook-secret', '--help'])).stdout).toContain('--webhook-secret-file');
  });
});

describe('pg-once relay: the webhook secret', () => {
  it('--help names the file flag, ONCE_WEBHOOK_SECRET, DATABASE_URL and the generator', async () => {
    const { stdout } = await cli(['relay', '--help']);
    for (const text of ['--webhook-secret-file', 'ONCE_WEBHOOK_SECRET', 'DATABASE_URL', 'pg-once webhook-secret']) expect(stdout).toContain(text);
  });

  it('reads it from --webhook-secret-file (trailing newline and all), without a warning', async () => {
    const file = join(directory, 'secret.txt');
    await writeFile(file, `${receiver.secret}\n`, { mode: 0o600 });
    const stderr = await relayDelivering(['--http', receiver.url, '--webhook-secret-file', file], {}, 6);
    expect(stderr).not.toMatch(WARNING);
  });

  it('signs with every secret of a rotation listed in the file: a receiver holding one verifies', async () => {
    const file = join(directory, 'rotation.txt');
    await writeFile(file, `${secretOf(32)}\n${receiver.secret}\n`, { mode: 0o600 });
    await relayDelivering(['--http', receiver.url, '--webhook-secret-file', file], {}, 4);
    expect(receiver.accepted[0]!.headers['webhook-signature']).toMatch(/^v1,\S+ v1,\S+$/);
  });

  it('reads ONCE_WEBHOOK_SECRET, without a warning', async () => {
    const stderr = await relayDelivering(['--http', receiver.url], { ONCE_WEBHOOK_SECRET: receiver.secret }, 4);
    expect(stderr).not.toMatch(WARNING);
  });

  it('still takes --webhook-secret, but warns on stderr that other users can read it', async () => {
    const stderr = await relayDelivering(['--http', receiver.url, '--webhook-secret', receiver.secret], {}, 2);
    expect(stderr).toMatch(WARNING);
    expect(stderr).toContain('--webhook-secret-file');
    expect(stderr).not.toContain(receiver.secret);
  });

  it('refuses, with a usage error that never shows the secret, a short secret, an unreadable or empty file, and no secret at all', async () => {
    const short = secretOf(15);
    const shortFile = join(directory, 'short.txt');
    const emptyFile = join(directory, 'empty.txt');
    await writeFile(shortFile, short);
    await writeFile(emptyFile, '\n');
    const cases: Array<[string[], Record<string, string>, RegExp]> = [
      [['--webhook-secret-file', shortFile], {}, /at least 16 bytes/],
      [[], { ONCE_WEBHOOK_SECRET: short }, /at least 16 bytes/],
      [['--webhook-secret-file', join(directory, 'missing.txt')], {}, /cannot read .*ENOENT/],
      [['--webhook-secret-file', emptyFile], {}, /is empty/],
      [[], { ONCE_WEBHOOK_SECRET: '' }, /--webhook-secret-file <path> or ONCE_WEBHOOK_SECRET/],
      [['--webhook-secret-file', shortFile, '--webhook-secret', short], {}, /not both/],
    ];
    for (const [args, env, message] of cases) {
      const error = await cliError(['relay', '--http', receiver.url, ...args], { DATABASE_URL: relayUrl, ...env });
      expect(error.code, args.join(' ')).toBe(2);
      expect(error.stderr).toMatch(message);
      expect(error.stderr).not.toContain(short.slice('whsec_'.length));
    }
    const stray = await cliError(['relay', '--webhook-secret-file', shortFile], { DATABASE_URL: relayUrl });
    expect(stray.stderr).toContain('go with --http');
  });
});

describe('the database URL', () => {
  it('warns when --database-url carries a password, and not when it comes from DATABASE_URL', async () => {
    // Nothing listens on port 1: the command fails after the warning, which is all this checks.
    const withPassword = 'postgres://someone:hunter2@127.0.0.1:1/none';
    const flagged = await cliError(['status', '--database-url', withPassword]);
    expect(flagged.stderr).toMatch(WARNING);
    expect(flagged.stderr).toContain('DATABASE_URL');
    const fromEnvironment = await cliError(['status'], { DATABASE_URL: withPassword });
    expect(fromEnvironment.stderr).not.toMatch(WARNING);
    const withoutPassword = await cliError(['status', '--database-url', 'postgres://someone@127.0.0.1:1/none']);
    expect(withoutPassword.stderr).not.toMatch(WARNING);
  });
});
