/**
 * The RabbitMQ the AMQP tests use (RABBITMQ_URL, default the machine's 127.0.0.1:5672, guest),
 * whether it answers, and a virtual host of each test file's own, made with rabbitmqctl: queues
 * and exchanges of parallel files never meet, and `closeConnections` drops only this file's
 * connections (what a broker restart or a network cut does to a client).
 *
 * Without a broker (or rabbitmqctl) the suites are skipped, unless CI or ONCE_REQUIRE_SERVICES is
 * set: then they fail, so a CI run cannot go green by silently testing nothing.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { Connection } from 'rabbitmq-client';

const run = promisify(execFile);

export const RABBITMQ_URL = process.env.RABBITMQ_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
export const rabbitRequired = Boolean(process.env.CI || process.env.ONCE_REQUIRE_SERVICES);

async function brokerAnswers(): Promise<boolean> {
  const connection = new Connection({ url: RABBITMQ_URL, connectionTimeout: 2_000, retryLow: 100, retryHigh: 200 });
  connection.on('error', () => {});
  try {
    await connection.onConnect(2_000);
    return true;
  } catch {
    return false;
  } finally {
    await connection.close();
  }
}

export const rabbitAvailable =
  (await brokerAnswers()) &&
  (await rabbitmqctl('status').then(
    () => true,
    () => false,
  ));

export function rabbitmqctl(...args: string[]): Promise<{ stdout: string }> {
  return run('rabbitmqctl', ['--quiet', ...args], { timeout: 60_000 });
}

export interface TestVhost {
  name: string;
  /** RABBITMQ_URL on this virtual host. */
  url: string;
  /** Closes every client connection to this virtual host, as a broker restart would. */
  closeConnections(): Promise<void>;
  delete(): Promise<void>;
}

export async function createVhost(): Promise<TestVhost> {
  const name = `once_test_${randomBytes(4).toString('hex')}`;
  const user = decodeURIComponent(new URL(RABBITMQ_URL).username || 'guest');
  await rabbitmqctl('add_vhost', name);
  await rabbitmqctl('set_permissions', '-p', name, user, '.*', '.*', '.*');
  return {
    name,
    url: `${RABBITMQ_URL.replace(/\/+$/u, '')}/${encodeURIComponent(name)}`,
    closeConnections: async () => {
      await rabbitmqctl('close_all_connections', '--vhost', name, 'pg-once test: connection closed on purpose');
    },
    delete: async () => {
      await rabbitmqctl('delete_vhost', name);
    },
  };
}

export function requireRabbit(): void {
  if (!rabbitAvailable) {
    throw new Error(
      `RabbitMQ is not reachable at ${RABBITMQ_URL} (or rabbitmqctl does not work), and CI/ONCE_REQUIRE_SERVICES ` +
        'requires it: start it with `rabbitmq-server -detached`, or set RABBITMQ_URL.',
    );
  }
}
