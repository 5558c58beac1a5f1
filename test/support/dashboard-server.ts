/**
 * A dashboard served by a real node:http server on loopback, and a small client for it that keeps
 * the session cookie and reads the CSRF token out of the pages, as a browser would.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dashboardHandler, type DashboardHandler, type DashboardOptions } from '../../src/dashboard.ts';

export interface DashboardServer {
  url: string;
  handler: DashboardHandler;
  close(): Promise<void>;
}

export async function serveDashboard(options: DashboardOptions, host = '127.0.0.1'): Promise<DashboardServer> {
  const handler = dashboardHandler(options);
  const server: Server = createServer((request, response) => void handler(request, response));
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${host}:${port}`,
    handler,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await handler.close();
    },
  };
}

export interface DashboardClient {
  get(path: string): Promise<{ status: number; body: string; headers: Headers }>;
  post(path: string, fields: [string, string][], headers?: Record<string, string>): Promise<{ status: number; body: string; headers: Headers }>;
  /** The CSRF token a page of the dashboard carries. */
  csrf(): Promise<string>;
}

export function dashboardClient(baseUrl: string, cookie = ''): DashboardClient {
  let session = cookie;
  const request = async (path: string, init: RequestInit = {}) => {
    const response = await fetch(baseUrl + path, {
      redirect: 'manual',
      ...init,
      headers: { ...(session ? { cookie: session } : {}), ...(init.headers as Record<string, string> | undefined) },
    });
    const setCookie = response.headers.get('set-cookie');
    if (setCookie) session = setCookie.split(';')[0]!;
    return { status: response.status, body: await response.text(), headers: response.headers };
  };
  const client: DashboardClient = {
    get: (path) => request(path),
    post: (path, fields, headers = {}) =>
      request(path, {
        method: 'POST',
        body: new URLSearchParams(fields).toString(),
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
      }),
    async csrf() {
      const { body } = await client.get('/dead');
      const token = /<meta name="csrf-token" content="([^"]+)">/.exec(body)?.[1];
      if (!token) throw new Error('no CSRF token on the page');
      return token;
    },
  };
  return client;
}
