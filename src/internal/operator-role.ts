import { WrongRoleError } from '../errors.ts';
import type { Session } from './session.ts';

/** Refuses to run an across-tenants operation as a role that would silently see no rows. */
export async function assertOperatorRole(session: Session, what: string): Promise<void> {
  const { rows } = await session.query<{ role: string; ok: boolean }>(`
    SELECT current_user AS role,
           coalesce((SELECT r.rolsuper OR r.rolbypassrls FROM pg_roles r WHERE r.rolname = current_user), false)
             OR pg_has_role(current_user, 'once_relay', 'MEMBER') AS ok`);
  if (!rows[0]?.ok) {
    throw new WrongRoleError(
      `pg-once: ${what} must run as a role granted once_relay (or a superuser): role "${rows[0]?.role}" sees no other tenant's rows.`,
    );
  }
}
