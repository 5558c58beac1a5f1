/**
 * A TCP proxy in front of Postgres that counts, over all the connections it proxies, the
 * client's round trips (each time a client sends after the server last answered it: pipelined
 * statements share one) and reads the frontend protocol for the statements sent (a Query's
 * text, a Parse's text, `(prepared)` for one executed again): how many trips each library
 * spends on the same call is then counted, not guessed.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';

export interface WireCount {
  roundTrips: number;
  statements: string[];
}

export async function startWireCounter(target: {
  host: string;
  port: number;
}): Promise<{ port: number; count: WireCount; reset(): void; close(): Promise<void> }> {
  const count: WireCount = { roundTrips: 0, statements: [] };
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(target.port, target.host);
    sockets.add(client).add(upstream);
    let buffer = Buffer.alloc(0);
    let started = false;
    let pendingParse: string | undefined;
    let answered = true;
    client.on('data', (chunk) => {
      upstream.write(chunk);
      if (answered) count.roundTrips += 1;
      answered = false;
      buffer = Buffer.concat([buffer, chunk]);
      for (;;) {
        if (!started) {
          // Startup (and SSLRequest) messages have no type byte.
          if (buffer.length < 4) return;
          const length = buffer.readInt32BE(0);
          if (buffer.length < length) return;
          const code = buffer.readInt32BE(4);
          buffer = buffer.subarray(length);
          if (code !== 80877103) started = true;
          continue;
        }
        if (buffer.length < 5) return;
        const type = String.fromCharCode(buffer[0]!);
        const length = buffer.readInt32BE(1);
        if (buffer.length < length + 1) return;
        const body = buffer.subarray(5, length + 1);
        buffer = buffer.subarray(length + 1);
        if (type === 'Q') {
          count.statements.push(body.toString('utf8', 0, body.length - 1));
        } else if (type === 'P') {
          const nameEnd = body.indexOf(0);
          pendingParse = body.toString('utf8', nameEnd + 1, body.indexOf(0, nameEnd + 1));
        } else if (type === 'E') {
          count.statements.push(pendingParse ?? '(prepared)');
          pendingParse = undefined;
        }
      }
    });
    upstream.on('data', (chunk) => {
      answered = true;
      client.write(chunk);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    count,
    reset() {
      count.roundTrips = 0;
      count.statements = [];
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
