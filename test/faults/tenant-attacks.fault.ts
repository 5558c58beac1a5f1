/**
 * Scenario 7, tenant attacks, all through non-bypass login roles (NOSUPERUSER NOBYPASSRLS): the
 * application role with the attacker's tenant set tries to read, replay, overwrite, move or
 * delete the victim tenant's claim, stored result, outbox event and audit rows, through pg-once's
 * API (the victim's exact key, keys and tenant ids made to look like the victim's: prefixes,
 * case, Unicode normalisation, invisible characters, SQL-injection shapes) and through plain SQL
 * on pg-once's tables. The relay role tries to reach idempotency results. None may succeed: each
 * attempt is refused (an error) or harmless (touches only the attacker's own rows), and the
 * victim's rows are byte-for-byte what they were.
 */
import { sql, type Kysely } from 'kysely';
import type pg from 'pg';
import type { RoleNames } from '../../src/internal/role-names.ts';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { enqueue, OnceError, runIdempotent, withTenant } from '../../src/index.ts';
import { createAppFixture, type AppFixture } from '../support/app-fixture.ts';
import { testPool } from '../support/test-database.ts';
import { recordFigures } from './support/figures.ts';

const VICTIM = 'société-générale';
const ATTACKER = 'evil-corp';
const VICTIM_KEY = 'run_42:3:charge_card:café';
const SECRET = 'victim-secret-4242';

let fx: AppFixture;
let relay: pg.Pool;
let roles: RoleNames;
let victimEvent: { id: string; dedupeId: string };

beforeAll(async () => {
  fx = await createAppFixture(6);
  roles = (await fx.database.roles())!;
  // With error listeners: the database is dropped WITH (FORCE) right after this pool ends, and a
  // connection terminated before its socket closed must not surface as an uncaught exception.
  relay = testPool({ connectionString: await fx.database.createLoginRole('relay'), max: 2 });
  // The victim's history: an executed call (claim, stored result, order, outbox event), a replay
  // and a key reuse (two audit rows), a rate limit and its bucket.
  await fx.database.admin.query(`INSERT INTO once.rate_limits (tenant_id, tool, per_second, burst) VALUES ($1, 'charge_card', 100, 100)`, [VICTIM]);
  const charge = () =>
    withTenant(fx.app, VICTIM, (tx) =>
      runIdempotent(
        tx,
        VICTIM_KEY,
        async (t) => {
          await sql`INSERT INTO orders (key, amount) VALUES (${VICTIM_KEY}, 4242)`.execute(t);
          victimEvent = await enqueue(t, { topic: 'payments.charged', payload: { secret: SECRET } });
          return { secret: SECRET };
        },
        { request: { amount: 4242 }, tool: 'charge_card' },
      ),
    );
  await charge();
  await charge();
  await withTenant(fx.app, VICTIM, (tx) => runIdempotent(tx, VICTIM_KEY, async () => 'never', { request: { amount: 1 } })).catch(() => {});
});
afterAll(async () => {
  await relay?.end();
  await fx?.close();
});

type Outcome = 'refused' | 'harmless' | 'succeeded';
interface Attempt {
  attack: string;
  outcome: Outcome;
  detail: string;
}

async function victimRows(): Promise<string> {
  const tables = ['once.idempotency_keys', 'once.outbox_events', 'once.dedupe_audit', 'once.rate_limit_state', 'once.rate_limits', 'public.orders'];
  const parts: unknown[] = [];
  for (const table of tables) parts.push((await fx.database.admin.query(`SELECT * FROM ${table} WHERE tenant_id = $1 ORDER BY 2, 3`, [VICTIM])).rows);
  return JSON.stringify(parts);
}

it("tenant attacks: 0 of the attempts on another tenant's claims, results, events and audit rows succeed", async () => {
  const attempts: Attempt[] = [];
  /** `run` resolves true when the attack reached the victim's data, false when harmless; throws when refused. */
  const attack = async (name: string, run: () => Promise<boolean>) => {
    try {
      const reached = await run();
      attempts.push({ attack: name, outcome: reached ? 'succeeded' : 'harmless', detail: '' });
    } catch (error) {
      const code = error instanceof OnceError ? error.code : (error as { code?: string }).code;
      attempts.push({ attack: name, outcome: 'refused', detail: `${(error as Error).name}${code ? `(${code})` : ''}` });
    }
  };
  const before = await victimRows();
  const asTenant = <T>(tenant: string, fn: (tx: Parameters<Parameters<typeof withTenant>[2]>[0]) => Promise<T>) =>
    withTenant(fx.app as Kysely<any>, tenant, fn);
  /** Rows of the victim, or anything holding its secret (look-alike tenants see their own rows). */
  const leaks = (rows: unknown[]) => rows.some((row) => (row as { tenant_id?: unknown }).tenant_id === VICTIM) || JSON.stringify(rows).includes(SECRET);

  // --- Through pg-once's API: a call under a crafted key or tenant id must never replay the victim.
  const crafted = async (tenant: string, key: string) => {
    let ran = false;
    const result = await asTenant(tenant, async (tx) => {
      const outcome = await runIdempotent.detailed(
        tx,
        key,
        async (t) => {
          ran = true;
          const event = await enqueue(t, { topic: 'payments.charged', payload: { from: 'attacker' } });
          if (event.dedupeId === victimEvent.dedupeId) throw new Error("the attacker derived the victim event's dedupe id");
          return { secret: 'attacker-own' };
        },
        { request: { amount: 4242 }, tool: 'charge_card' },
      );
      return outcome;
    });
    return !ran || result.outcome === 'replayed' || JSON.stringify(result.value).includes(SECRET);
  };
  const keys = [
    VICTIM_KEY,
    `${VICTIM}:${VICTIM_KEY}`,
    `tenantB:${VICTIM_KEY}`,
    VICTIM_KEY.toUpperCase(),
    VICTIM_KEY.normalize('NFD'),
    VICTIM_KEY.normalize('NFKC'),
    `${VICTIM_KEY} `,
    `\u200b${VICTIM_KEY}`,
    `${VICTIM_KEY}' OR tenant_id = '${VICTIM}`,
    `'; UPDATE once.idempotency_keys SET result = '"pwned"'; --`,
    `${VICTIM_KEY}%`,
  ];
  for (const [index, key] of keys.entries()) await attack(`API call, attacker tenant, key ${JSON.stringify(key)}`, () => crafted(`${ATTACKER}-${index}`, key));
  const tenants = [
    VICTIM.toUpperCase(),
    'Société-Générale',
    VICTIM.normalize('NFD'),
    `${VICTIM} `,
    ` ${VICTIM}`,
    `${VICTIM}\u200b`,
    `${VICTIM}\u00ad`,
    `${VICTIM}' OR '1'='1`,
    `${VICTIM}', true); SELECT set_config('once.tenant_id', '${VICTIM}`,
    `${VICTIM}%`,
    '*',
    `${VICTIM}\u0000`,
    `${VICTIM}\ud800`,
    '',
    'x'.repeat(129),
  ];
  for (const tenant of tenants) await attack(`API call, look-alike tenant ${JSON.stringify(tenant)}, the victim's key`, () => crafted(tenant, VICTIM_KEY));
  for (const tenant of tenants.slice(0, 10)) {
    await attack(`SQL read as look-alike tenant ${JSON.stringify(tenant)}`, async () =>
      asTenant(tenant, async (tx) => leaks((await sql`SELECT * FROM once.idempotency_keys WHERE key = ${VICTIM_KEY}`.execute(tx)).rows)),
    );
  }

  // --- Plain SQL on pg-once's tables as the application role, attacker tenant set.
  const asAttacker = (name: string, statement: (tx: Parameters<Parameters<typeof withTenant>[2]>[0]) => Promise<boolean>) =>
    attack(name, () => asTenant(ATTACKER, statement));
  const rowsOf = async (query: ReturnType<typeof sql>, tx: Parameters<Parameters<typeof withTenant>[2]>[0]) => (await query.execute(tx)).rows;
  const affected = async (query: ReturnType<typeof sql>, tx: Parameters<Parameters<typeof withTenant>[2]>[0]) =>
    Number((await query.execute(tx)).numAffectedRows ?? 0n) > 0;
  for (const table of ['idempotency_keys', 'outbox_events', 'dedupe_audit', 'rate_limit_state'] as const) {
    await asAttacker(`read ${table} of the victim by tenant_id`, async (tx) =>
      leaks(await rowsOf(sql`SELECT * FROM once.${sql.raw(table)} WHERE tenant_id = ${VICTIM}`, tx)),
    );
    await asAttacker(`read all ${table}`, async (tx) => leaks(await rowsOf(sql`SELECT * FROM once.${sql.raw(table)}`, tx)));
    await asAttacker(`delete ${table} of the victim`, (tx) => affected(sql`DELETE FROM once.${sql.raw(table)} WHERE tenant_id = ${VICTIM}`, tx));
  }
  await asAttacker("overwrite the victim's stored result", (tx) =>
    affected(sql`UPDATE once.idempotency_keys SET result = '"pwned"' WHERE tenant_id = ${VICTIM}`, tx),
  );
  await asAttacker("expire the victim's record (to make it run again)", (tx) =>
    affected(sql`UPDATE once.idempotency_keys SET expires_at = now() - interval '1 day' WHERE key = ${VICTIM_KEY}`, tx),
  );
  await asAttacker("insert a claim into the victim's key space", (tx) =>
    affected(
      sql`INSERT INTO once.idempotency_keys (tenant_id, key, status, result, expires_at) VALUES (${VICTIM}, 'planted', 'completed', '"planted"', now() + interval '1 day')`,
      tx,
    ),
  );
  await asAttacker("plant a completed record and move it into the victim's tenant", async (tx) => {
    await runIdempotent(tx, 'run_42:4:charge_card', async () => ({ secret: 'planted' }));
    return affected(sql`UPDATE once.idempotency_keys SET tenant_id = ${VICTIM} WHERE key = 'run_42:4:charge_card'`, tx);
  });
  await asAttacker('insert an outbox event for the victim', (tx) =>
    affected(sql`INSERT INTO once.outbox_events (tenant_id, dedupe_id, topic, payload) VALUES (${VICTIM}, 'x', 'payments.refund', '{}')`, tx),
  );
  await asAttacker("mark the victim's event delivered", (tx) =>
    affected(sql`UPDATE once.outbox_events SET status = 'delivered' WHERE tenant_id = ${VICTIM}`, tx),
  );
  await asAttacker("mark its own event delivered (the relay's job)", (tx) => affected(sql`UPDATE once.outbox_events SET status = 'delivered'`, tx));
  await asAttacker('insert an audit row for the victim', (tx) =>
    affected(sql`INSERT INTO once.dedupe_audit (tenant_id, key, kind) VALUES (${VICTIM}, ${VICTIM_KEY}, 'replay')`, tx),
  );
  await asAttacker("rewrite the victim's audit rows", (tx) => affected(sql`UPDATE once.dedupe_audit SET kind = 'replay' WHERE tenant_id = ${VICTIM}`, tx));
  await asAttacker("exhaust the victim's rate-limit bucket", (tx) =>
    affected(sql`UPDATE once.rate_limit_state SET tat = now() + interval '1 year' WHERE tenant_id = ${VICTIM}`, tx),
  );
  await asAttacker("create the victim's rate-limit bucket, exhausted", (tx) =>
    affected(sql`INSERT INTO once.rate_limit_state (tenant_id, tool, tat) VALUES (${VICTIM}, 'other', now() + interval '1 year')`, tx),
  );
  await asAttacker("read the victim's rate limit", async (tx) => leaks(await rowsOf(sql`SELECT * FROM once.rate_limits WHERE tenant_id = ${VICTIM}`, tx)));
  await asAttacker("change the victim's rate limit", (tx) => affected(sql`UPDATE once.rate_limits SET burst = 1 WHERE tenant_id = ${VICTIM}`, tx));
  await asAttacker('count executions of every tenant (maintenance function)', async (tx) =>
    leaks(await rowsOf(sql`SELECT * FROM once.execution_counts(1e9)`, tx)),
  );
  await asAttacker(
    'sweep every tenant (maintenance function)',
    async (tx) => (await rowsOf(sql`SELECT once.sweep_idempotency_keys(1000) AS n`, tx)).length > 0,
  );
  await asAttacker('become the maintenance role', async (tx) => {
    await sql`SET LOCAL ROLE ${sql.id(roles.maintenance)}`.execute(tx);
    return leaks(await rowsOf(sql`SELECT * FROM once.idempotency_keys WHERE tenant_id = ${VICTIM}`, tx));
  });
  await asAttacker('become the relay role', async (tx) => {
    await sql`SET LOCAL ROLE ${sql.id(roles.relay)}`.execute(tx);
    return leaks(await rowsOf(sql`SELECT * FROM once.outbox_events WHERE tenant_id = ${VICTIM}`, tx));
  });
  await attack('read idempotency_keys with no tenant set', async () => leaks((await sql`SELECT * FROM once.idempotency_keys`.execute(fx.app)).rows));

  // --- The relay role: every tenant's outbox (by design), never an idempotency result.
  const asRelay = (name: string, query: string, reached: (rows: unknown[]) => boolean = leaks) =>
    attack(`relay role: ${name}`, async () => reached((await relay.query(query)).rows));
  await asRelay('read idempotency results', 'SELECT result FROM once.idempotency_keys');
  await asRelay('read one idempotency column', 'SELECT key FROM once.idempotency_keys');
  await asRelay('claim as a tenant', `SELECT set_config('once.tenant_id', '${VICTIM}', false), * FROM once.claim('${VICTIM_KEY}', '', NULL, NULL, 1000, 10)`);
  await asRelay('become the maintenance role', `SET ROLE ${roles.maintenance}; SELECT result FROM once.idempotency_keys`);
  await asRelay(
    'become the application role',
    `SET ROLE ${roles.app}; SELECT set_config('once.tenant_id', '${VICTIM}', false); SELECT result FROM once.idempotency_keys`,
  );
  await asRelay('find a result in the maintenance functions', 'SELECT * FROM once.execution_counts(1e9)', (rows) => JSON.stringify(rows).includes(SECRET));
  await asRelay('find a result in the audit rows', 'SELECT * FROM once.dedupe_audit', (rows) => JSON.stringify(rows).includes(SECRET));
  await asRelay('delete a pending event', `DELETE FROM once.outbox_events WHERE status = 'pending' RETURNING id`, (rows) => rows.length > 0);
  await relay.query('RESET ROLE').catch(() => {});

  const after = await victimRows();
  // The planted record must not replay for the victim, who executes its own call.
  const victimCall = await withTenant(fx.app, VICTIM, (tx) => runIdempotent.detailed(tx, 'run_42:4:charge_card', async () => ({ secret: 'victim-own' })));

  // Outside pg-once's threat model, recorded for docs/guarantees.md: code that runs arbitrary SQL
  // as the application role can set the tenant itself. Row-level security here protects tenants
  // from each other's INPUT (keys, ids, requests), not from the application's own SQL.
  const switchable = await withTenant(fx.app, ATTACKER, async (tx) => {
    await sql`SELECT set_config('once.tenant_id', ${VICTIM}, true)`.execute(tx);
    return (await sql`SELECT 1 FROM once.idempotency_keys WHERE key = ${VICTIM_KEY}`.execute(tx)).rows.length > 0;
  });

  const succeeded = attempts.filter((a) => a.outcome === 'succeeded');
  const refusedBy = new Map<string, number>();
  for (const a of attempts.filter((x) => x.outcome === 'refused')) refusedBy.set(a.detail, (refusedBy.get(a.detail) ?? 0) + 1);
  recordFigures({
    scenario: '7 tenant attacks',
    operations: attempts.length,
    faults: attempts.length,
    lost: before === after ? 0 : 1,
    doubled: succeeded.length + (victimCall.outcome === 'executed' ? 0 : 1),
    detail: {
      succeeded: succeeded.length,
      refused: attempts.length - succeeded.length - attempts.filter((a) => a.outcome === 'harmless').length,
      harmless: attempts.filter((a) => a.outcome === 'harmless').length,
      refused_by: Object.fromEntries(refusedBy),
      app_role_can_set_tenant_itself: switchable,
    },
  });
  if (process.env.ONCE_FAULT_DEBUG) for (const a of attempts) console.log(`${a.outcome.padEnd(9)} ${a.attack} ${a.detail}`);

  expect(succeeded).toEqual([]);
  expect(after).toBe(before);
  expect(victimCall).toMatchObject({ outcome: 'executed', value: { secret: 'victim-own' } });
});
