/**
 * `pg-once/knex`: Knex on PostgreSQL. withTenant opens `knex.transaction(...)` READ COMMITTED,
 * or joins a trx the caller opened (pg-once sets the tenant in it and leaves the commit to the
 * caller, who checks isRecordedFailure before letting an error roll it back); `fn` gets the trx,
 * and pg-once's statements run through `trx.raw`.
 */
import type { Knex } from 'knex';
import type { Driver } from '../internal/driver.ts';
import { driverApi } from './driver-api.ts';

/**
 * knex.raw binds `?`, not `$n`: each statement's placeholders are rewritten once, remembering
 * which value goes where (`$4` may appear twice). pg-once's statements hold no `?` of their own.
 */
const rewritten = new Map<string, { text: string; order: number[] }>();
function knexStatement(text: string): { text: string; order: number[] } {
  // Statements without values (a savepoint of its own name per call) are not worth remembering.
  if (!text.includes('$')) return { text, order: [] };
  let statement = rewritten.get(text);
  if (!statement) {
    const order: number[] = [];
    statement = { text: text.replace(/\$(\d+)/g, (_, n: string) => (order.push(Number(n) - 1), '?')), order };
    rewritten.set(text, statement);
  }
  return statement;
}

const driver: Driver<Knex, Knex.Transaction> = {
  transaction: (knex, fn) => (knex.isTransaction === true ? fn(knex as Knex.Transaction) : knex.transaction(fn, { isolationLevel: 'read committed' })),
  client(trx) {
    if (trx.isTransaction !== true) return undefined;
    return {
      owner: trx,
      async query(text, values) {
        const statement = knexStatement(text);
        return (await trx.raw(statement.text, statement.order.map((index) => values[index]) as Knex.RawBinding[])).rows;
      },
    };
  },
};

export const { withTenant, runIdempotent, enqueue, receiveOnce, runIdempotentExternal } = driverApi(driver);
