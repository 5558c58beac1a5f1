/**
 * What the database's backends are doing while relays run: pg_stat_activity sampled every
 * `intervalMs` on a connection of its own, each active backend counted under the statement it
 * runs (the relay's claim, its settle, another statement of the relay, or a backend of another
 * login: the bench's own) and what it waits for ('CPU' when it waits
 * for nothing: running, or runnable and waiting for a core). Lock waits show up as
 * 'Lock:transactionid', 'Lock:tuple', 'LWLock:...'.
 */
import pg from 'pg';

const SAMPLE = `
SELECT usename = $1 AS relay, state = 'active' AS active,
       coalesce(wait_event_type || ':' || wait_event, 'CPU') AS wait,
       CASE WHEN usename <> $1 THEN 'not the relay'
            WHEN query LIKE '%WITH RECURSIVE tenants%' THEN 'claim'
            WHEN query LIKE '%SET status = ''delivered''%' THEN 'settle'
            ELSE 'other relay statement' END AS statement
  FROM pg_stat_activity
 WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`;

export interface ActivitySummary {
  samples: number;
  /** Mean number of active backends of the database per sample (the sampler not counted). */
  activeBackends: number;
  /** Most connections of the relay login seen at once. */
  relayConnectionsMax: number;
  /** Share of all active-backend samples, by "statement / wait", largest first. */
  shares: { what: string; share: number }[];
}

export function sampleActivity(connectionString: string, relayUser: string, intervalMs = 25): { stop(): Promise<ActivitySummary> } {
  const client = new pg.Client({ connectionString });
  client.on('error', () => {});
  const counts = new Map<string, number>();
  let samples = 0;
  let active = 0;
  let relayConnectionsMax = 0;
  let running = true;
  const loop = (async () => {
    await client.connect();
    while (running) {
      const { rows } = await client.query<{ relay: boolean; active: boolean; wait: string; statement: string }>(SAMPLE, [relayUser]);
      samples += 1;
      relayConnectionsMax = Math.max(relayConnectionsMax, rows.filter((row) => row.relay).length);
      for (const row of rows) {
        if (!row.active) continue;
        active += 1;
        const what = `${row.statement} / ${row.wait}`;
        counts.set(what, (counts.get(what) ?? 0) + 1);
      }
      await new Promise((resolve) => setTimeout(resolve, intervalMs));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      await client.end();
      const shares = [...counts].map(([what, count]) => ({ what, share: count / Math.max(1, active) })).sort((a, b) => b.share - a.share);
      return {
        samples,
        activeBackends: active / Math.max(1, samples),
        relayConnectionsMax,
        shares,
      };
    },
  };
}
