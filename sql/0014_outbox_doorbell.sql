-- The relay's optional doorbell (startRelay({ wakeup: { logicalReplication: {} } }),
-- `pg-once relay --wakeup logical`): a publication of inserts into once.outbox_events, which a
-- relay streams through a temporary logical replication slot to wake the moment an event
-- commits, instead of polling (src/outbox/logical-doorbell.ts; docs/relay-and-sinks.md, "Doorbell").
--
-- A publication costs writers nothing: it is a catalog entry. Only with wal_level = logical and a
-- slot streaming it does the server decode the WAL the inserts wrote anyway, in the WAL sender.
-- - publish = 'insert': a ring is for a new event. Publishing updates or deletes would also
--   require a replica identity for them, and the relay updates every row it delivers.
-- - Only (tenant_id, id) on PostgreSQL 15 and later (column lists): the doorbell needs to know
--   that a row arrived, not its payload, so megabyte payloads do not cross the stream. Before
--   15 the whole row is sent (and ignored).
-- - Created only by a role that may (the table's owner with CREATE on the database: whoever ran
--   the earlier migrations, normally). Otherwise a NOTICE, and the operator creates it, or names
--   another one in the relay's options: the doorbell is optional, and its absence must not fail
--   an install.

DO $$
BEGIN
  IF EXISTS (SELECT FROM pg_catalog.pg_publication WHERE pubname = 'once_outbox_doorbell') THEN
    RETURN;
  END IF;
  IF NOT (has_database_privilege(current_database(), 'CREATE')
          AND pg_has_role((SELECT relowner FROM pg_catalog.pg_class WHERE oid = 'once.outbox_events'::regclass), 'USAGE')) THEN
    RAISE NOTICE 'pg-once: publication once_outbox_doorbell not created (needs the owner of once.outbox_events with CREATE on the database); the relay''s doorbell needs it';
    RETURN;
  END IF;
  IF current_setting('server_version_num')::int >= 150000 THEN
    EXECUTE 'CREATE PUBLICATION once_outbox_doorbell FOR TABLE once.outbox_events (tenant_id, id) WITH (publish = ''insert'')';
  ELSE
    EXECUTE 'CREATE PUBLICATION once_outbox_doorbell FOR TABLE once.outbox_events WITH (publish = ''insert'')';
  END IF;
END
$$;
