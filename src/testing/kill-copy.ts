/**
 * Killing a copy mid-call, inside its transaction and before its commit. Two ways, because they
 * exercise different code: throwing makes the handler's own stack unwind and its client roll the
 * transaction back; terminating the backend from another connection is what a crash looks like
 * from the database (the server aborts the transaction when its connection dies, and nothing of
 * the client's cleanup runs).
 */
import { InvalidOptionsError } from '../errors.ts';
import { kyselyClient } from '../drivers/kysely-driver.ts';
import { isTransaction } from '../internal/is-transaction.ts';
import { withSession } from '../internal/session.ts';
import { sleep } from '../internal/sleep.ts';
import type { StormTerminate } from './duplicate-storm-options.ts';

/** Thrown by `copy.inside()` where the storm kills the copy: the call dies at that point. */
export class CopyKilledError extends Error {
  override readonly name = 'CopyKilledError';
}

/** How long a terminated backend may take to go; it is normally a few milliseconds. */
const TERMINATION_WAIT_MILLISECONDS = 10_000;

/** Terminates the backend the transaction `tx` runs on, and waits until it is gone. */
export async function terminateBackendOf(tx: unknown, kill: StormTerminate): Promise<void> {
  const pid = await backendPid(tx, kill);
  await withSession(kill.terminate, async (session) => {
    let terminated: boolean;
    try {
      terminated = (await session.query<{ terminated: boolean }>('SELECT pg_terminate_backend($1) AS terminated', [pid])).rows[0]!.terminated;
    } catch (error) {
      throw refused(`it may not terminate backend ${pid}: ${(error as Error).message}`, error);
    }
    if (!terminated) throw refused(`backend ${pid} was not terminated (not found, or this login may not signal it)`);
    // pg_terminate_backend only signals; the transaction is aborted when the process exits.
    const deadline = Date.now() + TERMINATION_WAIT_MILLISECONDS;
    while ((await session.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid])).rows.length > 0) {
      if (Date.now() > deadline) throw refused(`backend ${pid} was still running ${TERMINATION_WAIT_MILLISECONDS} ms after it was terminated`);
      await sleep(10);
    }
  });
}

async function backendPid(tx: unknown, kill: StormTerminate): Promise<number> {
  if (kill.backendPid) return Number(await kill.backendPid(tx));
  const statement = 'SELECT pg_backend_pid() AS pid';
  if (isTransaction(tx)) {
    const [row] = await kyselyClient(tx)!.query<{ pid: number }>(statement, []);
    return row!.pid;
  }
  // A node-postgres client (pg-once/pg hands fn the PoolClient holding the transaction).
  if (typeof tx === 'object' && tx !== null && typeof (tx as { query?: unknown }).query === 'function') {
    const result = await (tx as { query(text: string): Promise<{ rows: { pid: number }[] }> }).query(statement);
    return result.rows[0]!.pid;
  }
  throw new InvalidOptionsError('duplicateStorm options', [
    {
      path: ['kill', 'backendPid'],
      message:
        'a kill by terminate needs the backend of the copy: pass the transaction to copy.inside(tx) (a Kysely Transaction or a ' +
        'node-postgres client), or give kill.backendPid for another library',
      code: 'custom',
    },
  ]);
}

function refused(message: string, cause?: unknown): InvalidOptionsError {
  return new InvalidOptionsError(
    'duplicateStorm options',
    [{ path: ['kill', 'terminate'], message: `the terminating connection failed: ${message}`, code: 'custom' }],
    cause === undefined ? undefined : { cause },
  );
}
