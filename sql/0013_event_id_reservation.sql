-- The write path in fewer round trips (issue 18): a call's first outbox event is written by the
-- statement that stores the call's result, instead of by an INSERT of its own.
--
-- enqueue() must still answer with the event's id at once, before the result is stored; so the
-- claim of an in-transaction call reserves that id (nextval of the outbox's identity sequence, in
-- the claim's own statement: no round trip) and the store inserts the row under it, OVERRIDING
-- SYSTEM VALUE. That needs USAGE on the sequence for the application role, which INSERTs through
-- the identity column never did. Only unordered events use reserved ids: an event with an
-- ordering key takes its id after its key's lock, so that ids follow commit order per key
-- (src/outbox/enqueue.ts), and a reserved id is taken before that lock.
--
-- Variables: app_role (psql: -v app_role=...), bound by `pg-once migrate`.

GRANT USAGE ON SEQUENCE once.outbox_events_id_seq TO :"app_role";
