-- Claims fair across tenants (src/outbox/sql/claim-events.ts): the relay walks the tenants that
-- have pending events (a skip scan, one index probe per tenant) and takes a share of each one's
-- due events, instead of one global oldest-first scan in which a tenant's backlog of thousands
-- holds back every other tenant's newest event.
-- The index serves both: the skip scan reads its leading tenant_id, the per-tenant scan reads
-- (next_attempt_at, id) within one tenant. It replaces the global (next_attempt_at, id) index,
-- which nothing else reads, so writers still pay for the same number of indexes.
-- Built in the migration's transaction, which blocks writes to the outbox while it builds; on a
-- large outbox, build it beforehand with CREATE INDEX CONCURRENTLY under the same name.
CREATE INDEX IF NOT EXISTS outbox_events_pending_tenant ON once.outbox_events (tenant_id, next_attempt_at, id)
  WHERE status = 'pending';
DROP INDEX IF EXISTS once.outbox_events_pending;
