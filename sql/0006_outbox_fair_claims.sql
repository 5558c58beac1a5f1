-- Claims fair across tenants, and blocked ordering keys that cost nothing
-- (src/outbox/sql/claim-events.ts). The relay no longer scans one global oldest-first index, in
-- which a tenant's backlog of thousands holds back every other tenant's newest event and the
-- due followers of a backing-off ordering-key head are read (and rejected) one by one on every
-- poll. Instead:
-- - events without an ordering key: a skip scan over the tenants that have such pending events
--   (one probe per tenant), then a share of each tenant's due events, oldest first, both from
--   this index;
-- - events with an ordering key: a skip scan over the keys, one probe per key, which reads only
--   each key's head (with its next_attempt_at, INCLUDEd so the probe needs no heap visit where
--   the visibility map allows): followers are never read.
-- They replace the global (next_attempt_at, id) index and the ordering index of 0001, which
-- nothing else reads, so writers still pay for the same number of indexes.
-- Built in the migration's transaction, which blocks writes to the outbox while it builds; on a
-- large outbox, build it beforehand with CREATE INDEX CONCURRENTLY under the same name.
CREATE INDEX IF NOT EXISTS outbox_events_pending_unkeyed ON once.outbox_events (tenant_id, next_attempt_at, id)
  WHERE status = 'pending' AND ordering_key IS NULL;
CREATE INDEX IF NOT EXISTS outbox_events_pending_heads ON once.outbox_events (tenant_id, ordering_key, id)
  INCLUDE (next_attempt_at) WHERE status = 'pending' AND ordering_key IS NOT NULL;
DROP INDEX IF EXISTS once.outbox_events_pending;
DROP INDEX IF EXISTS once.outbox_events_pending_ordering;
