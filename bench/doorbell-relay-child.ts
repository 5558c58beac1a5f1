/**
 * A relay process of its own (as in production: writers and relay do not share a process or its
 * CPU), with a no-op sink, for the doorbell bench's writer throughput: the doorbell on when
 * WAKEUP=logical. Prints "READY" once started; stops gracefully on SIGTERM.
 */
import { startRelay } from '../src/index.ts';

await startRelay({
  connectionString: process.env.DATABASE_URL!,
  sinks: { '>': async () => {} },
  sweep: false,
  handleSignals: true,
  logger: { warn: () => {}, error: (message: string) => console.error(message) },
  ...(process.env.WAKEUP === 'logical' ? { wakeup: { logicalReplication: {} } } : {}),
});
process.stdout.write('READY\n');
