-- Per-database roles, for databases that applied 0001-0004.
--
-- 0001-0004 named three cluster-wide roles: once_app, once_relay, once_maintenance. Roles are
-- shared by every database of a server, so a login granted once_app for database A could connect
-- to database B (CONNECT is granted to PUBLIC by default), set a tenant, and read B's results and
-- events. From here on each database has roles of its own, named by `pg-once migrate` from the
-- database (see `pg-once roles`), and the cluster-wide ones hold nothing in this database.
-- A new database never creates the cluster-wide roles: baseline/0005_baseline.sql installs the
-- same end state in one file (test/migrate-paths.test.ts compares the two).
--
-- Variables (psql syntax, bound by `pg-once migrate`): app_role, relay_role, maintenance_role.
-- Logins granted the old roles lose their access here: grant them the new ones (`pg-once migrate`
-- lists them).

SELECT set_config('once_migrate.app_role', :'app_role', true),
       set_config('once_migrate.relay_role', :'relay_role', true),
       set_config('once_migrate.maintenance_role', :'maintenance_role', true);

DO $$
DECLARE
  kind text;
  role_name text;
BEGIN
  FOREACH kind IN ARRAY ARRAY['app', 'relay', 'maintenance'] LOOP
    role_name := current_setting('once_migrate.' || kind || '_role');
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = role_name) THEN
      BEGIN
        EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
      EXCEPTION
        WHEN duplicate_object OR unique_violation THEN NULL;
        WHEN insufficient_privilege THEN
          RAISE EXCEPTION 'pg-once: role % does not exist and % may not create roles', role_name, current_user
            USING ERRCODE = 'ONC10',
                  HINT = 'Have an administrator run the SQL printed by `pg-once roles --sql`, or grant CREATEROLE to the database owner.';
      END;
    END IF;
  END LOOP;
  role_name := current_setting('once_migrate.maintenance_role');
  -- Granted whether or not pg_has_role says MEMBER: on Postgres 16+ the creator of a role holds
  -- ADMIN on it, which that check counts, but may SET ROLE to it only once granted membership.
  BEGIN
    EXECUTE format('GRANT %I TO %I', role_name, current_user);
  EXCEPTION WHEN insufficient_privilege THEN
    NULL; -- no ADMIN: an administrator's grant (`pg-once roles --sql`) must already be in place
  END;
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I, %I', current_database(),
                 current_setting('once_migrate.app_role'), current_setting('once_migrate.relay_role'));
END
$$;

-- Move every privilege, policy and ownership the old roles hold in schema once (and in
-- graphile-worker's schema, where migrate granted the relay) to the new roles. Generic over the
-- catalog rather than a list of GRANTs, so nothing an earlier file granted is forgotten.
DO $$
DECLARE
  old_role text;
  new_role text;
  r record;
BEGIN
  -- Handing functions to the maintenance role needs it to hold CREATE on the schema.
  EXECUTE format('GRANT CREATE ON SCHEMA once TO %I', current_setting('once_migrate.maintenance_role'));
  FOR old_role, new_role IN
    SELECT o, current_setting('once_migrate.' || k || '_role')
      FROM (VALUES ('once_app', 'app'), ('once_relay', 'relay'), ('once_maintenance', 'maintenance')) v(o, k)
     WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = v.o)
  LOOP
    -- Schemas.
    FOR r IN
      SELECT n.nspname, a.privilege_type
        FROM pg_catalog.pg_namespace n, aclexplode(n.nspacl) a
       WHERE n.nspname IN ('once', 'graphile_worker') AND a.grantee = old_role::regrole
    LOOP
      EXECUTE format('GRANT %s ON SCHEMA %I TO %I', r.privilege_type, r.nspname, new_role);
      EXECUTE format('REVOKE %s ON SCHEMA %I FROM %I', r.privilege_type, r.nspname, old_role);
    END LOOP;
    -- Tables and sequences.
    FOR r IN
      SELECT n.nspname, c.relname, c.relkind, a.privilege_type
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace,
             aclexplode(c.relacl) a
       WHERE n.nspname IN ('once', 'graphile_worker') AND a.grantee = old_role::regrole
    LOOP
      EXECUTE format('GRANT %s ON %s %I.%I TO %I', r.privilege_type,
                     CASE WHEN r.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, r.nspname, r.relname, new_role);
      EXECUTE format('REVOKE %s ON %s %I.%I FROM %I', r.privilege_type,
                     CASE WHEN r.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, r.nspname, r.relname, old_role);
    END LOOP;
    -- Columns.
    FOR r IN
      SELECT n.nspname, c.relname, att.attname, a.privilege_type
        FROM pg_catalog.pg_attribute att
        JOIN pg_catalog.pg_class c ON c.oid = att.attrelid
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace,
             aclexplode(att.attacl) a
       WHERE n.nspname IN ('once', 'graphile_worker') AND a.grantee = old_role::regrole
    LOOP
      EXECUTE format('GRANT %s (%I) ON %I.%I TO %I', r.privilege_type, r.attname, r.nspname, r.relname, new_role);
      EXECUTE format('REVOKE %s (%I) ON %I.%I FROM %I', r.privilege_type, r.attname, r.nspname, r.relname, old_role);
    END LOOP;
    -- Functions.
    FOR r IN
      SELECT p.oid::regprocedure AS fn, a.privilege_type
        FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace,
             aclexplode(p.proacl) a
       WHERE n.nspname IN ('once', 'graphile_worker') AND a.grantee = old_role::regrole
    LOOP
      EXECUTE format('GRANT %s ON FUNCTION %s TO %I', r.privilege_type, r.fn, new_role);
      EXECUTE format('REVOKE %s ON FUNCTION %s FROM %I', r.privilege_type, r.fn, old_role);
    END LOOP;
    -- Policies.
    FOR r IN
      SELECT pol.polname, n.nspname, c.relname,
             (SELECT string_agg(format('%I', CASE WHEN x = old_role::regrole THEN new_role ELSE ro.rolname END), ', ')
                FROM unnest(pol.polroles) x JOIN pg_catalog.pg_roles ro ON ro.oid = x) AS roles
        FROM pg_catalog.pg_policy pol
        JOIN pg_catalog.pg_class c ON c.oid = pol.polrelid
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname IN ('once', 'graphile_worker') AND old_role::regrole = ANY (pol.polroles)
    LOOP
      EXECUTE format('ALTER POLICY %I ON %I.%I TO %s', r.polname, r.nspname, r.relname, r.roles);
    END LOOP;
    -- Ownership (the maintenance functions).
    FOR r IN
      SELECT p.oid::regprocedure AS fn
        FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
       WHERE n.nspname = 'once' AND p.proowner = old_role::regrole
    LOOP
      EXECUTE format('ALTER FUNCTION %s OWNER TO %I', r.fn, new_role);
    END LOOP;
  END LOOP;
  EXECUTE format('REVOKE CREATE ON SCHEMA once FROM %I', current_setting('once_migrate.maintenance_role'));
END
$$;

-- Nothing of pg-once is left to PUBLIC (0001 left once.current_tenant() executable by it).
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA once FROM PUBLIC;

-- The roles this database's pg-once uses, by kind: what `migrate` binds into later files and
-- checks the policies against (policies can be altered; this is the record of what was meant).
CREATE TABLE once.roles (
  kind text PRIMARY KEY CHECK (kind IN ('app', 'relay', 'maintenance')),
  name text NOT NULL
);
INSERT INTO once.roles (kind, name) VALUES
  ('app', :'app_role'), ('relay', :'relay_role'), ('maintenance', :'maintenance_role');
REVOKE ALL ON once.roles FROM PUBLIC;
GRANT SELECT ON once.roles TO :"app_role", :"relay_role";
