/**
 * The pipelined query's guards (src/drivers/pipelined-query.ts), on a stand-in for node-postgres's
 * connection that records what would be written: a query node-postgres cannot send is refused
 * with an Error and writes nothing (a throw would leave the client waiting forever; messages
 * without their Sync would run with whatever comes next). Sending for real is tested on Postgres
 * in test/write-path.test.ts, test/deferred-store.test.ts and test/named-statements.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { awaitableQuery } from '../src/drivers/pipelined-query.ts';

function standIn(parsed: Record<string, string>, options: { withoutSubmitted?: boolean } = {}) {
  const written: Buffer[] = [];
  const connection = {
    stream: { write: (chunk: Buffer) => written.push(chunk) > 0 },
    parsedStatements: parsed,
    ...(options.withoutSubmitted ? {} : { submittedNamedStatements: {} as Record<string, string> }),
    parse: () => connection.stream.write(Buffer.from('P')),
    bind: () => connection.stream.write(Buffer.from('B')),
    describe: () => connection.stream.write(Buffer.from('D')),
    execute: () => connection.stream.write(Buffer.from('E')),
    sync: () => connection.stream.write(Buffer.from('S')),
    flush: () => connection.stream.write(Buffer.from('H')),
    query: () => connection.stream.write(Buffer.from('Q')),
  };
  return { connection, written };
}

const begin = { name: 'once_0', text: 'begin', values: [] };
const tenant = { name: 'once_1', text: 'SELECT set_config($1, $2, true)', values: ['once.tenant_id', 't'] };

describe('a pipelined query', () => {
  it('writes the statements in front and the last one as one buffer', () => {
    const { connection, written } = standIn({ once_0: 'begin', once_1: tenant.text });
    expect(awaitableQuery([begin, tenant], { name: 'once_2', text: 'SELECT 1' }).submit(connection)).toBeNull();
    expect(written.map(String)).toEqual(['BEBEPBDES']);
  });

  it('is refused, writing nothing, when a statement in front is not parsed on the connection', () => {
    const { connection, written } = standIn({ once_0: 'begin' });
    const refused = awaitableQuery([begin, tenant], { name: 'once_2', text: 'SELECT 1' }).submit(connection);
    expect(refused).toBeInstanceOf(Error);
    expect(String(refused)).toContain('once_1');
    expect(written).toEqual([]);
  });

  it('is refused, never thrown, when the connection lacks what this node-postgres reads (an older one)', () => {
    const { connection, written } = standIn({}, { withoutSubmitted: true });
    const refused = awaitableQuery([], { text: 'SELECT 1' }).submit(connection);
    expect(refused).toBeInstanceOf(Error);
    expect(written).toEqual([]);
  });

  it('is refused, writing nothing, when a value in front cannot be sent', () => {
    const { connection, written } = standIn({ once_0: 'begin', once_1: tenant.text });
    const bad = { ...tenant, values: [{ not: 'text' }] };
    expect(awaitableQuery([begin, bad], { name: 'once_2', text: 'SELECT 1' }).submit(connection)).toBeInstanceOf(Error);
    expect(written).toEqual([]);
  });

  it('prints as the texts of its statements', () => {
    expect(String(awaitableQuery([begin, tenant], { name: 'once_2', text: 'SELECT 1' }))).toBe(`begin; ${tenant.text}; SELECT 1`);
  });
});
