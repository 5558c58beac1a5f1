/**
 * Who the login is: whether row-level security applies to it, and which of this database's
 * pg-once roles it holds. Pure functions of the facts: the rules are what matter here.
 */
import { quoteIdentifier } from '../../internal/bind-variables.ts';
import { LEGACY_ROLE_NAMES } from '../../internal/role-names.ts';
import type { DatabaseFacts } from './database-facts.ts';
import { type DoctorFinding, finding } from './finding.ts';

export function loginFindings(facts: DatabaseFacts): DoctorFinding[] {
  return [bypassFinding(facts), ...roleFindings(facts), ...legacyFindings(facts)];
}

/** The roles an application or relay login holds, current or cluster-wide (0.1). */
function servingRoles(facts: DatabaseFacts): string[] {
  const names = [facts.roles?.app, facts.roles?.relay, LEGACY_ROLE_NAMES.app, LEGACY_ROLE_NAMES.relay];
  return [...new Set(names)].filter((name): name is string => name !== undefined && facts.held.includes(name));
}

function bypassFinding(facts: DatabaseFacts): DoctorFinding {
  const login = quoteIdentifier(facts.login);
  if (!facts.superuser && !facts.bypassRls) {
    return finding('login', 'ok', `login ${facts.login} is neither superuser nor BYPASSRLS: row-level security applies to it`);
  }
  const what = facts.superuser ? 'a superuser' : 'BYPASSRLS';
  const serving = servingRoles(facts);
  if (serving.length > 0) {
    return finding(
      'login',
      'fail',
      `login ${facts.login} is ${what} and holds ${serving.join(', ')}: row-level security does not apply to it, so as the ` +
        "application it reads and changes every tenant's rows, and as the relay it also reads stored results " +
        '(withTenant refuses it unless allowRlsBypass is set)',
      facts.superuser
        ? `give the application and the relay logins of their own: CREATE ROLE <login> LOGIN NOSUPERUSER NOBYPASSRLS; GRANT ${serving[0]} TO <login>;`
        : `ALTER ROLE ${login} NOBYPASSRLS;`,
    );
  }
  return finding(
    'login',
    'warn',
    `login ${facts.login} is ${what}: row-level security does not apply to it; fine for migrate and doctor, never for the application or the relay`,
    facts.roles
      ? `connect the application and the relay as logins granted ${facts.roles.app} / ${facts.roles.relay}, not as ${facts.login}`
      : `connect the application and the relay as logins of their own, not as ${facts.login}`,
  );
}

function roleFindings(facts: DatabaseFacts): DoctorFinding[] {
  const roles = facts.roles;
  // Before pg-once is installed there are no roles to hold; the `installed` finding says so.
  if (!roles) return [];
  const login = quoteIdentifier(facts.login);
  const app = facts.held.includes(roles.app);
  const relay = facts.held.includes(roles.relay);
  const owner = facts.schemaOwner !== null && facts.held.includes(facts.schemaOwner);
  const findings: DoctorFinding[] = [];
  if (app && relay) {
    findings.push(
      finding(
        'roles',
        'warn',
        `login ${facts.login} holds both ${roles.app} and ${roles.relay}: through the relay's policies it reads every ` +
          "tenant's outbox events and audit rows, so as the application it is no longer confined to one tenant",
        `REVOKE ${quoteIdentifier(roles.relay)} FROM ${login};  -- and run the relay as a login of its own`,
      ),
    );
  } else if (app) {
    findings.push(finding('roles', 'ok', `login ${facts.login} holds ${roles.app}: the application's role (its tenant's rows only)`));
  } else if (relay) {
    findings.push(
      finding('roles', 'ok', `login ${facts.login} holds ${roles.relay}: the relay's and operators' role (outbox events of every tenant, no results)`),
    );
  } else if (owner) {
    findings.push(finding('roles', 'ok', `login ${facts.login} owns schema once (it runs migrate) and holds neither ${roles.app} nor ${roles.relay}`));
  } else if (facts.superuser) {
    findings.push(finding('roles', 'ok', `login ${facts.login} holds neither ${roles.app} nor ${roles.relay} (as a superuser it needs neither)`));
  } else {
    findings.push(
      finding(
        'roles',
        'warn',
        `login ${facts.login} holds neither ${roles.app} (application) nor ${roles.relay} (relay): pg-once refuses it as either`,
        `GRANT ${quoteIdentifier(roles.app)} TO ${login};  -- or ${roles.relay} for the relay's login`,
      ),
    );
  }
  // The maintenance role owns the SECURITY DEFINER sweep functions; migrate's login must hold it
  // to hand them over, nobody else should.
  if (facts.held.includes(roles.maintenance) && !owner) {
    findings.push(
      finding(
        'roles',
        'warn',
        `login ${facts.login} holds ${roles.maintenance}, which owns the sweep functions and reads every tenant's key metadata: grant it to nobody`,
        `REVOKE ${quoteIdentifier(roles.maintenance)} FROM ${login};`,
      ),
    );
  }
  return findings;
}

/**
 * The cluster-wide roles of 0.1, still held after this database moved to roles of its own. They
 * open nothing here, but every database of the server still on 0.1. The owner of schema once
 * keeps once_maintenance until those databases are migrated too (migrate hands their functions
 * over from it), so only the two roles logins use count for the owner.
 */
function legacyFindings(facts: DatabaseFacts): DoctorFinding[] {
  if (!facts.roles || facts.roles.app === LEGACY_ROLE_NAMES.app) return [];
  const owner = facts.schemaOwner !== null && facts.held.includes(facts.schemaOwner);
  const legacy = [LEGACY_ROLE_NAMES.app, LEGACY_ROLE_NAMES.relay, ...(owner ? [] : [LEGACY_ROLE_NAMES.maintenance])].filter((name) =>
    facts.held.includes(name),
  );
  if (legacy.length === 0) return [];
  return [
    finding(
      'legacy-roles',
      'warn',
      `login ${facts.login} holds ${legacy.join(', ')}, cluster-wide role(s) of pg-once 0.1: nothing here, but they open ` +
        'every database of the server still on 0.1',
      `REVOKE ${legacy.map(quoteIdentifier).join(', ')} FROM ${quoteIdentifier(facts.login)};  -- once every database has run pg-once migrate`,
    ),
  ];
}
