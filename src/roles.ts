/**
 * The roles of one database's pg-once, for the people who grant them: `databaseRoles(target)`
 * reads the installed names (any login may ask), `rolesSql(options)` writes the SQL an
 * administrator runs before `pg-once migrate` when the database owner may not create roles (a
 * managed server whose owner lacks CREATEROLE, or a DBA who keeps role creation to themselves).
 */
import { z } from 'zod';
import { NotInstalledError } from './errors.ts';
import { quoteIdentifier } from './internal/bind-variables.ts';
import { defaultRolePrefix, installedRoleNames, type RoleNames, rolePrefixProblem, roleNamesFor } from './internal/role-names.ts';
import { type DatabaseTarget, withSession } from './internal/session.ts';
import { parseOptions } from './options.ts';

export type { RoleNames } from './internal/role-names.ts';

/** The roles the database's pg-once policies name. Refuses a database without pg-once. */
export async function databaseRoles(target: DatabaseTarget): Promise<RoleNames> {
  return withSession(target, async (session) => {
    const roles = await installedRoleNames(session);
    if (!roles) throw new NotInstalledError('pg-once: this database has no pg-once schema: run `pg-once migrate` first.');
    return roles;
  });
}

/** A role prefix (rolesSql's and migrate's): see internal/role-names.ts for what is accepted and why. */
export const rolePrefixSchema = z.string().superRefine((prefix, context) => {
  const problem = rolePrefixProblem(prefix);
  if (problem) context.addIssue({ code: 'custom', message: problem });
});

const identifier = z
  .string()
  .min(1)
  .max(63)
  .refine((name) => !name.includes('\u0000'), 'must not contain NUL');

export const rolesSqlOptionsSchema = z
  .object({
    /** The database pg-once will be installed in: the default role names derive from it. */
    database: identifier,
    /** The role that will run `pg-once migrate` (the database's owner). */
    owner: identifier,
    /** As `migrate({ rolePrefix })`. (Default: `once_<database>`) */
    rolePrefix: rolePrefixSchema.optional(),
    /** Existing login roles to grant the application role to. (Default: none) */
    appLogins: z.array(identifier).default([]),
    /** Existing login roles to grant the relay role to. (Default: none) */
    relayLogins: z.array(identifier).default([]),
  })
  .strict();
/** Options of {@link rolesSql}. Names are 1..63 characters. */
export interface RolesSqlOptions {
  /** The database pg-once will be installed in: the default role names derive from it. (Required) */
  database: string;
  /** The role that will run `pg-once migrate` (the database's owner). (Required) */
  owner: string;
  /** As `migrate({ rolePrefix })`. (Default: `once_<database>`) */
  rolePrefix?: string;
  /** Existing login roles to grant the application role to. (Default: none) */
  appLogins?: string[];
  /** Existing login roles to grant the relay role to. (Default: none) */
  relayLogins?: string[];
}

/**
 * SQL for an administrator (a superuser, or a role with CREATEROLE that may grant these roles):
 * creates the three NOLOGIN roles, lets the owner hand the two maintenance functions to the
 * maintenance role (`migrate` needs membership for that), and grants the roles to logins. Safe
 * to run twice.
 */
export function rolesSql(options: RolesSqlOptions): string {
  const parsed = parseOptions(rolesSqlOptionsSchema, options, 'rolesSql options');
  const roles = roleNamesFor(parsed.rolePrefix ?? defaultRolePrefix(parsed.database));
  const q = quoteIdentifier;
  const create = (name: string) => `DO $$ BEGIN CREATE ROLE ${q(name)} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;`;
  const lines = [
    `-- pg-once roles for database ${parsed.database}; run as an administrator, before`,
    `-- \`pg-once migrate\` runs as ${parsed.owner}. Roles are cluster-wide: these belong to this database only.`,
    create(roles.app),
    create(roles.relay),
    create(roles.maintenance),
    '-- migrate hands two SECURITY DEFINER functions (sweeps, counts) to the maintenance role.',
    `GRANT ${q(roles.maintenance)} TO ${q(parsed.owner)};`,
    ...parsed.appLogins.map((login) => `GRANT ${q(roles.app)} TO ${q(login)};`),
    ...parsed.relayLogins.map((login) => `GRANT ${q(roles.relay)} TO ${q(login)};`),
  ];
  return `${lines.join('\n')}\n`;
}
