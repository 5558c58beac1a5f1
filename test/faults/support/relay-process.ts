/** Starts test/faults/fixtures/relay-child.ts and keeps its log lines. */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

export interface RelayProcess {
  child: ChildProcess;
  name: string;
  /** `LOG <level> <message>` lines the relay printed. */
  logs: string[];
  exited: Promise<[number | null, NodeJS.Signals | null]>;
}

export async function startRelayProcess(options: {
  name: string;
  databaseUrl: string;
  receiverUrl: string;
  secret: string;
  env?: Record<string, string>;
}): Promise<RelayProcess> {
  const child = spawn(process.execPath, ['test/faults/fixtures/relay-child.ts'], {
    env: {
      ...process.env,
      NODE_COMPILE_CACHE: join(tmpdir(), 'pg-once-fault-compile-cache'),
      DATABASE_URL: options.databaseUrl,
      RECEIVER_URL: options.receiverUrl,
      WEBHOOK_SECRET: options.secret,
      RELAY_NAME: options.name,
      ...options.env,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  const relay: RelayProcess = { child, name: options.name, logs: [], exited };
  const lines = createInterface({ input: child.stdout! });
  await new Promise<void>((resolve, reject) => {
    lines.on('line', (line) => {
      if (line === 'STARTED') resolve();
      else if (line.startsWith('LOG ')) relay.logs.push(line.slice(4));
    });
    void exited.then(([code, signal]) => reject(new Error(`relay ${options.name} exited before starting (code ${code}, signal ${signal})`)));
  });
  return relay;
}
