/**
 * graphile-worker's `runMigrations` wants a `pg.Pool`. When the caller handed `migrate` a Kysely
 * instance there is no pool or connection string to give it, so this presents the session we
 * already hold as a one-connection pool: just the surface graphile-worker touches (connect,
 * query, release, and the error/connect listeners it checks for).
 */
import { EventEmitter } from 'node:events';
import type pg from 'pg';
import type { Session } from '../../internal/session.ts';

type QueryConfig = { text: string; values?: readonly unknown[] };

export function poolFromSession(session: Session): pg.Pool {
  const pool = new EventEmitter();
  // graphile-worker warns about pools without these listeners; errors surface through the
  // session's own promise instead.
  pool.on('error', () => {});
  pool.on('connect', () => {});
  const client = Object.assign(new EventEmitter(), {
    query(textOrConfig: string | QueryConfig, values?: readonly unknown[]) {
      const config = typeof textOrConfig === 'string' ? { text: textOrConfig, values } : textOrConfig;
      return session.query(config.text, config.values ?? []);
    },
    release() {},
  });
  return Object.assign(pool, { connect: async () => client }) as unknown as pg.Pool;
}
