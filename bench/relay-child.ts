/**
 * A relay process with a no-op sink, for measuring its memory while draining: prints "DRAINED"
 * when the outbox has no pending events left.
 */
import pg from 'pg';
import { startRelay } from '../src/index.ts';

const relay = await startRelay({
  connectionString: process.env.DATABASE_URL!,
  sinks: { '>': async () => {} },
  handleSignals: false,
  ...(process.env.MAX_HELD_BYTES ? { maxHeldBytes: Number(process.env.MAX_HELD_BYTES) } : {}),
});
const probe = new pg.Client({ connectionString: process.env.DATABASE_URL! });
await probe.connect();
for (;;) {
  const { rows } = await probe.query<{ n: number }>("SELECT count(*)::int AS n FROM once.outbox_events WHERE status = 'pending'");
  if (rows[0]!.n === 0) break;
  await new Promise((resolve) => setTimeout(resolve, 100));
}
await probe.end();
await relay.stop();
process.stdout.write('DRAINED\n');
