/**
 * Tenant isolation by row-level security, exercised as login roles that are neither superuser nor
 * BYPASSRLS (granted the database's app or relay role), exactly as a deployed application would connect.
 */
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SQLSTATE_TENANT_MISSING } from '../src/index.ts';
import { createTestDatabase, testPool, type TestDatabase } from './support/test-database.ts';

const TABLES = ['idempotency_keys', 'outbox_events', 'dedupe_audit'] as const;
type Table = (typeof TABLES)[number];

let db: TestDatabase;
let app: pg.Pool;
let relay: pg.Pool;

/** Runs `fn` in a transaction with `once.tenant_id` set the way withTenant sets it. */
async function asTenant<T>(tenant: string, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await app.connect();
  try {
    await client.query('BEGIN');
    await client.query("SELECT set_config('once.tenant_id', $1, true)", [tenant]);
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK');
    throw error;
  } finally {
    client.release();
  }
}

/** One row of `table` for the current tenant, relying on the tenant_id default. */
async function insertRow(client: pg.ClientBase, table: Table, marker: string) {
  const statements: Record<Table, string> = {
    idempotency_keys: "INSERT INTO once.idempotency_keys (key, expires_at) VALUES ($1, now() + interval '1 day')",
    outbox_events: "INSERT INTO once.outbox_events (dedupe_id, topic, payload) VALUES ($1, 'test.topic', '{}')",
    dedupe_audit: "INSERT INTO once.dedupe_audit (key, kind) VALUES ($1, 'replay')",
  };
  await client.query(statements[table], [marker]);
}

const MARKER_COLUMN: Record<Table, string> = { idempotency_keys: 'key', outbox_events: 'dedupe_id', dedupe_audit: 'key' };

async function storedTenants(table: Table, marker: string): Promise<string[]> {
  const { rows } = await db.admin.query<{ tenant_id: string }>(`SELECT tenant_id FROM once.${table} WHERE ${MARKER_COLUMN[table]} = $1 ORDER BY tenant_id`, [
    marker,
  ]);
  return rows.map((row) => row.tenant_id);
}

async function errorOf(promise: Promise<unknown>): Promise<{ code?: string } | undefined> {
  try {
    await promise;
    return undefined;
  } catch (error) {
    return error as { code?: string };
  }
}

beforeAll(async () => {
  db = await createTestDatabase();
  app = testPool({ connectionString: await db.createLoginRole('app'), max: 4 });
  relay = testPool({ connectionString: await db.createLoginRole('relay'), max: 2 });
  for (const tenant of ['A', 'B']) {
    await asTenant(tenant, async (client) => {
      for (const table of TABLES) await insertRow(client, table, `${tenant}-row`);
    });
  }
});

afterAll(async () => {
  await app?.end();
  await relay?.end();
  await db?.drop();
});

describe('the application role', () => {
  it('connects as a role that cannot bypass RLS', async () => {
    const { rows } = await app.query<{ rolsuper: boolean; rolbypassrls: boolean }>('SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user');
    expect(rows[0]).toEqual({ rolsuper: false, rolbypassrls: false });
  });

  describe.each(TABLES)('on once.%s', (table) => {
    it('inserts land in the current tenant', async () => {
      expect(await storedTenants(table, 'A-row')).toEqual(['A']);
      expect(await storedTenants(table, 'B-row')).toEqual(['B']);
    });

    it("sees only its own tenant's rows", async () => {
      const seen = await asTenant('A', async (client) => {
        const { rows } = await client.query<{ tenant_id: string }>(`SELECT tenant_id FROM once.${table}`);
        return rows.map((row) => row.tenant_id);
      });
      expect(seen.length).toBeGreaterThan(0);
      expect(new Set(seen)).toEqual(new Set(['A']));
      const explicit = await asTenant('A', (client) => client.query(`SELECT * FROM once.${table} WHERE tenant_id = 'B'`));
      expect(explicit.rows).toEqual([]);
    });

    it("cannot update or delete another tenant's rows", async () => {
      const column = MARKER_COLUMN[table];
      for (const statement of [`UPDATE once.${table} SET ${column} = 'hijacked' WHERE tenant_id = 'B'`, `DELETE FROM once.${table} WHERE tenant_id = 'B'`]) {
        // Either RLS filters B's rows out (0 rows), or the role lacks the privilege altogether
        // (outbox events and audit rows are append-only for the application).
        const outcome = await asTenant('A', (client) => client.query(statement)).then(
          (result) => ({ rowCount: result.rowCount }),
          (error: { code?: string }) => ({ code: error.code }),
        );
        expect([{ rowCount: 0 }, { code: '42501' }]).toContainEqual(outcome);
      }
      expect(await storedTenants(table, 'B-row')).toEqual(['B']);
    });

    it('cannot insert a row into another tenant', async () => {
      const error = await errorOf(
        asTenant('A', (client) =>
          client.query(
            table === 'idempotency_keys'
              ? "INSERT INTO once.idempotency_keys (tenant_id, key, expires_at) VALUES ('B', 'forged', now() + interval '1 day')"
              : table === 'outbox_events'
                ? "INSERT INTO once.outbox_events (tenant_id, dedupe_id, topic, payload) VALUES ('B', 'forged', 't', '{}')"
                : "INSERT INTO once.dedupe_audit (tenant_id, key, kind) VALUES ('B', 'forged', 'replay')",
          ),
        ),
      );
      expect(error?.code).toBe('42501'); // new row violates row-level security policy
      expect(await storedTenants(table, 'forged')).toEqual([]);
    });

    it('gets a clear error, not an empty result, when no tenant is set', async () => {
      const error = await errorOf(app.query(`SELECT * FROM once.${table}`));
      expect(error?.code).toBe(SQLSTATE_TENANT_MISSING);
      expect((error as Error).message).toContain('no tenant is set');
      const insert = await errorOf(
        (async () => {
          const client = await app.connect();
          try {
            await insertRow(client, table, 'no-tenant');
          } finally {
            client.release();
          }
        })(),
      );
      expect(insert?.code).toBe(SQLSTATE_TENANT_MISSING);
    });
  });

  it('raises on an empty table too when no tenant is set', async () => {
    const empty = await createTestDatabase();
    try {
      const pool = testPool({ connectionString: await empty.createLoginRole('app'), max: 1 });
      try {
        for (const table of TABLES) {
          expect((await errorOf(pool.query(`SELECT * FROM once.${table}`)))?.code).toBe(SQLSTATE_TENANT_MISSING);
        }
      } finally {
        await pool.end();
      }
    } finally {
      await empty.drop();
    }
  });
});

describe('the relay role', () => {
  it('reads outbox events of every tenant', async () => {
    const { rows } = await relay.query<{ tenant_id: string }>("SELECT DISTINCT tenant_id FROM once.outbox_events WHERE dedupe_id LIKE '%-row' ORDER BY 1");
    expect(rows.map((row) => row.tenant_id)).toEqual(['A', 'B']);
  });

  it('updates outbox events of every tenant', async () => {
    const result = await relay.query(
      "UPDATE once.outbox_events SET status = 'delivered', delivered_at = now(), attempts = attempts + 1 WHERE dedupe_id LIKE '%-row'",
    );
    expect(result.rowCount).toBe(2);
    const { rows } = await db.admin.query("SELECT tenant_id FROM once.outbox_events WHERE status = 'delivered' ORDER BY 1");
    expect(rows.map((row) => row.tenant_id)).toEqual(['A', 'B']);
  });

  it('cannot read idempotency_keys at all (results, keys, or even a count)', async () => {
    for (const query of [
      'SELECT result FROM once.idempotency_keys',
      'SELECT key FROM once.idempotency_keys',
      'SELECT * FROM once.idempotency_keys',
      'SELECT count(*) FROM once.idempotency_keys',
      "DELETE FROM once.idempotency_keys WHERE key = 'A-row'",
      "UPDATE once.idempotency_keys SET status = 'failed'",
    ]) {
      expect((await errorOf(relay.query(query)))?.code, query).toBe('42501');
    }
  });

  it('reads audit rows of every tenant (for status), which hold no results', async () => {
    const { rows } = await relay.query("SELECT DISTINCT tenant_id FROM once.dedupe_audit WHERE key LIKE '%-row' ORDER BY 1");
    expect(rows.map((row) => row.tenant_id)).toEqual(['A', 'B']);
  });

  it('cannot insert outbox events, nor delete pending ones', async () => {
    expect((await errorOf(relay.query("INSERT INTO once.outbox_events (tenant_id, dedupe_id, topic, payload) VALUES ('A', 'r', 't', '{}')")))?.code).toBe(
      '42501',
    );
    await asTenant('A', (client) => insertRow(client, 'outbox_events', 'still-pending'));
    const deleted = await relay.query("DELETE FROM once.outbox_events WHERE status = 'pending'");
    expect(deleted.rowCount).toBe(0);
    expect(await storedTenants('outbox_events', 'still-pending')).toEqual(['A']);
  });
});
