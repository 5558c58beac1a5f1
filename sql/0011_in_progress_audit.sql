-- 409s counted: a call refused with IDEMPOTENCY_IN_PROGRESS (a duplicate that found the key's
-- first call still running and could not, or would not, wait for it) leaves an audit row of kind
-- 'in_progress', so `pg-once status` and the dashboard count rejections beside replays and waits.
--
-- The refusal happens inside the caller's transaction, which then rolls back (the error is
-- retryable: nothing of that transaction may commit, or a retry would repeat it), so the row is
-- written afterwards by withTenant, in a transaction of its own under the same tenant
-- (src/idempotency/rejection-audit.ts). Rows of this kind carry the version and the retry hint.
--
-- Widening the CHECK: NOT VALID skips a scan of the table (every existing row holds one of the
-- older kinds, a subset). The constraint is found by what it checks, not by its generated name.

DO $$
DECLARE
  v_name text;
BEGIN
  FOR v_name IN
    SELECT c.conname FROM pg_constraint c
     WHERE c.conrelid = 'once.dedupe_audit'::regclass AND c.contype = 'c'
       AND pg_get_constraintdef(c.oid) LIKE '%kind%'
  LOOP
    EXECUTE format('ALTER TABLE once.dedupe_audit DROP CONSTRAINT %I', v_name);
  END LOOP;
END
$$;

ALTER TABLE once.dedupe_audit ADD CONSTRAINT dedupe_audit_kind_check
  CHECK (kind IN ('replay', 'waited', 'key_reused', 'rate_limited', 'model_key_rejected', 'in_progress')) NOT VALID;
