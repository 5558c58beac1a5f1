import type { Session } from '../../internal/session.ts';

export interface KeyState {
  version: string;
  tool: string | null;
  status: string;
  lockedUntil: Date | null;
  createdAt: Date;
  expiresAt: Date;
  /** The stored result's (or error's) JSON text, cut to 2,000 characters; undefined when this login may not read it. */
  preview?: string | null;
}

export interface KeyAuditRow {
  at: Date;
  kind: string;
  tool: string | null;
  detail: Record<string, unknown>;
}

export interface KeyLookup {
  states: KeyState[];
  audit: KeyAuditRow[];
  /** Whether results could be read: the login also holds the application role (or bypasses RLS). */
  previews: boolean;
}

/**
 * A key of a tenant: its records (every version) and its audit trail. Metadata comes from
 * once.key_states (sql/0010), since the relay role reads no record. Results are the tenant's
 * data: they are previewed only when the dashboard's login also holds the application role, and
 * then read as the application reads them, under row-level security for that one tenant.
 * The audit trail reads the tenant's rows through the primary key (tenant_id, id), newest first.
 */
export async function keyLookup(session: Session, tenantId: string, key: string): Promise<KeyLookup> {
  const { rows: states } = await session.query<{
    version: string;
    tool: string | null;
    status: string;
    locked_until: Date | null;
    created_at: Date;
    expires_at: Date;
  }>('SELECT version, tool, status, locked_until, created_at, expires_at FROM once.key_states($1, $2)', [tenantId, key]);
  const { rows: audit } = await session.query<{ at: Date; kind: string; tool: string | null; detail: Record<string, unknown> }>(
    `SELECT at, kind, tool, detail FROM once.dedupe_audit WHERE tenant_id = $1 AND key = $2 ORDER BY id DESC LIMIT 100`,
    [tenantId, key],
  );
  const { rows: access } = await session.query<{ previews: boolean }>(
    `SELECT coalesce((SELECT r.rolsuper OR r.rolbypassrls FROM pg_catalog.pg_roles r WHERE r.rolname = current_user), false)
            OR coalesce((SELECT pg_catalog.pg_has_role(current_user, name, 'MEMBER') FROM once.roles WHERE kind = 'app'), false) AS previews`,
  );
  const previews = access[0]!.previews;
  const byVersion = new Map<string, string | null>();
  if (previews && states.length > 0) {
    await session.query('BEGIN READ ONLY');
    try {
      await session.query("SELECT set_config('once.tenant_id', $1, true)", [tenantId]);
      const { rows } = await session.query<{ version: string; preview: string | null }>(
        `SELECT version, left(coalesce(result_text, result::text, error::text), 2000) AS preview
           FROM once.idempotency_keys WHERE tenant_id = $1 AND key = $2`,
        [tenantId, key],
      );
      for (const row of rows) byVersion.set(row.version, row.preview);
    } finally {
      await session.query('ROLLBACK');
    }
  }
  return {
    previews,
    states: states.map((row) => ({
      version: row.version,
      tool: row.tool,
      status: row.status,
      lockedUntil: row.locked_until,
      createdAt: row.created_at,
      expiresAt: row.expires_at,
      ...(previews ? { preview: byVersion.get(row.version) ?? null } : {}),
    })),
    audit,
  };
}
