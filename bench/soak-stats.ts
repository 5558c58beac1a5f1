/** Size and vacuum figures of one table, for the soak bench (bench/soak.ts). */
import type pg from 'pg';

export interface TableStats {
  /** pg_relation_size: the heap (main fork). */
  tableBytes: number;
  /** pg_indexes_size: all its indexes. */
  indexBytes: number;
  /** pg_total_relation_size: heap, indexes and TOAST. */
  totalBytes: number;
  /** count(*): the rows there are. */
  rows: number;
  /** n_live_tup, n_dead_tup: the statistics' estimates. */
  liveTuples: number;
  deadTuples: number;
  autovacuumCount: number;
  autoanalyzeCount: number;
}

export async function tableStats(admin: pg.Pool, table: string): Promise<TableStats> {
  // The cumulative statistics are flushed by backends at most once a second: wait that long, and
  // read them from a fresh snapshot.
  await new Promise((resolve) => setTimeout(resolve, 1_100));
  const client = await admin.connect();
  try {
    await client.query('SELECT pg_stat_clear_snapshot()');
    const { rows } = await client.query<Record<string, string>>(
      // `table` is one of the bench's own names, never input.
      `SELECT pg_relation_size(c.oid) AS table_bytes, pg_indexes_size(c.oid) AS index_bytes, pg_total_relation_size(c.oid) AS total_bytes,
              (SELECT count(*) FROM ${table}) AS rows, s.n_live_tup, s.n_dead_tup, s.autovacuum_count, s.autoanalyze_count
         FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
        WHERE c.oid = $1::regclass`,
      [table],
    );
    const row = rows[0]!;
    return {
      tableBytes: Number(row.table_bytes),
      indexBytes: Number(row.index_bytes),
      totalBytes: Number(row.total_bytes),
      rows: Number(row.rows),
      liveTuples: Number(row.n_live_tup),
      deadTuples: Number(row.n_dead_tup),
      autovacuumCount: Number(row.autovacuum_count),
      autoanalyzeCount: Number(row.autoanalyze_count),
    };
  } finally {
    client.release();
  }
}
