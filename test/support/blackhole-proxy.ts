/**
 * A TCP proxy to Postgres that can turn into a black hole: it stops forwarding bytes, in both
 * directions, without closing anything, the way a network that drops packets (or a half-open
 * connection after a peer vanished) looks to a client. Optionally new connections are swallowed
 * too; otherwise they are forwarded as before.
 */
import { createServer, type Socket } from 'node:net';

export interface BlackholeProxy {
  /** A connection string like `url`, through the proxy. */
  url(url: string): string;
  /** Stops forwarding on every open connection; `newConnections: true` swallows new ones too. */
  blackhole(options?: { newConnections?: boolean }): void;
  close(): Promise<void>;
}

export async function startBlackholeProxy(target: { host: string; port: number }): Promise<BlackholeProxy> {
  const pairs = new Set<{ client: Socket; upstream: Socket; dark: boolean }>();
  let swallowNew = false;
  const server = createServer((client) => {
    client.on('error', () => {});
    if (swallowNew) {
      client.pause(); // accepted, never answered
      pairs.add({ client, upstream: client, dark: true });
      return;
    }
    const upstream = new (client.constructor as typeof Socket)();
    upstream.on('error', () => client.destroy());
    const pair = { client, upstream, dark: false };
    pairs.add(pair);
    upstream.connect(target.port, target.host);
    client.on('data', (chunk) => pair.dark || upstream.write(chunk));
    upstream.on('data', (chunk) => pair.dark || client.write(chunk));
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => pair.dark || client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    url(url) {
      const parsed = new URL(url);
      parsed.hostname = '127.0.0.1';
      parsed.port = String(port);
      return parsed.toString();
    },
    blackhole(options = {}) {
      for (const pair of pairs) pair.dark = true;
      swallowNew = options.newConnections ?? false;
    },
    async close() {
      for (const { client, upstream } of pairs) {
        client.destroy();
        upstream.destroy();
      }
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
