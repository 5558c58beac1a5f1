/**
 * The one role check in front of operator-only code. Each refusal is a WrongRoleError naming the
 * role needed; without it, forced row-level security makes an across-tenants query by the wrong
 * role silently find nothing, and a missing grant surfaces as a bare "permission denied".
 */
import { NotInstalledError, WrongRoleError } from '../errors.ts';
import { INSTALLED_ROLE_COLUMNS } from './role-names.ts';
import type { Session } from './session.ts';

interface RoleFacts {
  role: string;
  bypass: boolean;
  relay: string | null;
  in_relay: boolean;
  schema_owner: string | null;
  owns_schema: boolean;
}

async function roleFacts(session: Session): Promise<RoleFacts> {
  const { rows } = await session.query<RoleFacts>(`
    SELECT current_user AS role,
           coalesce((SELECT r.rolsuper OR r.rolbypassrls FROM pg_catalog.pg_roles r WHERE r.rolname = current_user), false) AS bypass,
           names.relay,
           names.relay IS NOT NULL AND pg_catalog.pg_has_role(current_user, names.relay, 'MEMBER') AS in_relay,
           pg_catalog.pg_get_userbyid(n.nspowner) AS schema_owner,
           coalesce(pg_catalog.pg_has_role(current_user, n.nspowner, 'USAGE'), false) AS owns_schema
      FROM (SELECT ${INSTALLED_ROLE_COLUMNS}) names
      LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = 'once'`);
  const facts = rows[0]!;
  if (facts.relay === null) {
    throw new NotInstalledError("pg-once: this database has no pg-once schema (or one older than 0.2's roles): run `pg-once migrate`.");
  }
  return facts;
}

/** Across-tenants work (relay, sweep, status, outbox dead/requeue): the relay role, or a bypass role. */
export async function assertRelayRole(session: Session, what: string): Promise<void> {
  const facts = await roleFacts(session);
  if (facts.bypass || facts.in_relay) return;
  throw new WrongRoleError(
    `pg-once: ${what} must run as a login granted ${facts.relay}, this database's relay role: role "${facts.role}" is not ` +
      `(as the application role it would see one tenant at most). GRANT ${facts.relay} TO ${facts.role}; or connect as the relay's login.`,
    { neededRole: facts.relay! },
  );
}

/** Operator tables (rate limits): the owner of schema `once`, i.e. whoever ran `pg-once migrate`. */
export async function assertSchemaOwner(session: Session, what: string): Promise<void> {
  const facts = await roleFacts(session);
  if (facts.bypass || facts.owns_schema) return;
  throw new WrongRoleError(
    `pg-once: ${what} must run as the owner of schema once (${facts.schema_owner}, the role that ran pg-once migrate): ` + `role "${facts.role}" is not.`,
    { neededRole: facts.schema_owner ?? undefined },
  );
}
