-- The claim of runIdempotent, as one function so that a call costs ONE round trip whatever it
-- finds: a fresh claim, a replay, a key reused with another request, an expired record to take
-- over, a concurrent duplicate to wait for, or a tenant over its rate limit.
--
-- Why a function and not a single INSERT ... ON CONFLICT: after waiting for a concurrent claim,
-- the row it committed is invisible to the waiting statement's snapshot, so the outcome must be
-- read by a NEW statement. In READ COMMITTED every statement of a VOLATILE plpgsql function takes
-- a fresh snapshot, which is what the loop below relies on. (Under REPEATABLE READ the INSERT
-- raises a serialization failure instead, which pg-once reports as retryable.)
--
-- Waiting: a duplicate INSERT blocks on the unique index until the first transaction ends; the
-- wait is bounded by lock_timeout, set to p_wait_ms around the statements that can wait and
-- restored right after. Past it the statement fails with SQLSTATE 55P03, which the caller maps to
-- IdempotencyInProgressError. No subtransaction (EXCEPTION block) is used: it would cost every
-- call, and a timed-out duplicate's transaction has nothing worth keeping.
--
-- SECURITY INVOKER (the default): row-level security applies inside, as the caller's role.
CREATE OR REPLACE FUNCTION once.claim(
  p_key         text,
  p_version     text,
  p_tool        text,
  p_fingerprint bytea,
  p_ttl_ms      double precision,
  p_wait_ms     integer,
  -- Two-phase mode: commit the claim with a lease of this many milliseconds under this token.
  -- NULL for the in-transaction mode, whose claim is never visible before it completes.
  p_lease_ms    double precision DEFAULT NULL,
  p_lease_token text DEFAULT NULL,
  -- One row out, as OUT parameters rather than RETURNS TABLE: RETURN QUERY would build a
  -- tuplestore on every call, for a single row.
  OUT outcome      text,         -- claimed | replay | key_reused | in_progress | rate_limited
  OUT tenant_id    text,
  OUT status       text,
  -- The stored result as JSON text: SQL NULL when fn returned undefined, 'null' when it returned
  -- null (as jsonb, the driver would read both as null).
  OUT result       text,
  OUT error        jsonb,
  OUT waited       boolean,
  OUT locked_until timestamptz,
  -- rate_limited: when a token will be available. claimed under a limit: the bucket to charge
  -- when the result is stored (see src/idempotency/store-outcome.ts), and its GCRA parameters.
  OUT retry_after_ms     double precision,
  OUT limit_tool         text,
  OUT limit_emission_ms  double precision,
  OUT limit_tolerance_ms double precision
)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_tenant       text := once.current_tenant();  -- raises ONC01 before anything is written
  v_status       text;
  v_fingerprint  bytea;
  v_expired      boolean;
  v_lease_over   boolean;
  v_row_lease    timestamptz;
  v_row_tool     text;
  v_result       text;
  v_error        jsonb;
  v_claimed      boolean := false;
  v_found        boolean;
  v_lock_timeout text;
  v_started      timestamptz := clock_timestamp();
  v_expires_at   timestamptz := now() + p_ttl_ms * interval '1 millisecond';
  v_locked_until timestamptz := clock_timestamp() + p_lease_ms * interval '1 millisecond';
  v_per_second   double precision;
  v_burst        integer;
  v_tat          timestamptz;
  v_early_ms     double precision;
BEGIN
  tenant_id := v_tenant;
  waited := false;
  FOR attempt IN 1..16 LOOP
    -- Look first: a replay (the row is committed) costs this one index probe and no write.
    SELECT k.status, k.fingerprint, k.expires_at <= now(),
           k.status = 'in_progress' AND k.locked_until IS NOT NULL AND k.locked_until <= clock_timestamp(),
           k.locked_until, k.tool, k.result::text, k.error
      INTO v_status, v_fingerprint, v_expired, v_lease_over, v_row_lease, v_row_tool, v_result, v_error
      FROM once.idempotency_keys k
     WHERE k.tenant_id = v_tenant AND k.key = p_key AND k.version = p_version;
    v_found := FOUND;  -- PERFORM below would overwrite FOUND

    IF NOT v_found OR v_expired OR v_lease_over THEN
      -- Only now may the call wait (for a claim in flight elsewhere), bounded by lock_timeout,
      -- set for these statements and restored right after.
      IF v_lock_timeout IS NULL THEN
        v_lock_timeout := current_setting('lock_timeout');
        PERFORM set_config('lock_timeout', greatest(p_wait_ms, 1) || 'ms', true);
      END IF;
      IF NOT v_found THEN
        -- Nothing committed: claim. A claim in flight elsewhere (invisible to the SELECT) makes
        -- this INSERT wait for that transaction to end; if it rolled back, the INSERT goes ahead
        -- (and the wait goes unreported: nothing says it happened).
        INSERT INTO once.idempotency_keys AS k (tenant_id, key, version, tool, fingerprint, status, expires_at, locked_until, lease_token)
        VALUES (v_tenant, p_key, p_version, p_tool, p_fingerprint, 'in_progress', v_expires_at, v_locked_until, p_lease_token)
        ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO NOTHING;
      ELSE
        -- Expired record, or an abandoned lease (two-phase mode): take it over. The WHERE repeats
        -- the condition so that, of two callers taking over at once, the second (re-checking the
        -- row after waiting for the first) updates nothing and loops to read the first's outcome.
        UPDATE once.idempotency_keys k
           SET tool = p_tool, fingerprint = p_fingerprint, status = 'in_progress', result = NULL,
               error = NULL, locked_until = v_locked_until, lease_token = p_lease_token, created_at = now(),
               completed_at = NULL, expires_at = v_expires_at
         WHERE k.tenant_id = v_tenant AND k.key = p_key AND k.version = p_version
           AND (k.expires_at <= now()
                OR (k.status = 'in_progress' AND k.locked_until IS NOT NULL AND k.locked_until <= clock_timestamp()));
      END IF;
      IF FOUND THEN
        v_claimed := true;
        EXIT;
      END IF;
      -- It met a claim the SELECT could not see (or a concurrent takeover): a concurrent
      -- duplicate, now settled, that we waited for. A new statement (a new snapshot) reads it.
      waited := true;
      CONTINUE;
    END IF;

    IF v_lock_timeout IS NOT NULL THEN
      PERFORM set_config('lock_timeout', v_lock_timeout, true);
    END IF;
    status := v_status;

    IF v_status = 'in_progress' THEN
      -- A committed claim with a live lease (two-phase mode): the caller decides how to wait.
      outcome := 'in_progress';
      locked_until := v_row_lease;
      RETURN;
    END IF;

    -- A live completed or failed record.
    IF v_fingerprint IS DISTINCT FROM p_fingerprint THEN
      INSERT INTO once.dedupe_audit (tenant_id, key, tool, kind, detail)
      VALUES (v_tenant, p_key, coalesce(p_tool, v_row_tool), 'key_reused',
              jsonb_build_object('version', p_version,
                                 'stored_fingerprint', encode(v_fingerprint, 'hex'),
                                 'request_fingerprint', encode(p_fingerprint, 'hex')));
      outcome := 'key_reused';
      RETURN;
    END IF;
    INSERT INTO once.dedupe_audit (tenant_id, key, tool, kind, detail)
    VALUES (v_tenant, p_key, coalesce(p_tool, v_row_tool), CASE WHEN waited THEN 'waited' ELSE 'replay' END,
            jsonb_build_object('version', p_version, 'status', v_status, 'outcome', 'replayed',
                               'waited_ms', round(extract(epoch FROM clock_timestamp() - v_started) * 1000)));
    outcome := 'replay';
    result := v_result;
    error := v_error;
    RETURN;
  END LOOP;

  IF NOT v_claimed THEN
    -- 16 rounds of losing races: only a pathological storm of takeovers and deletions gets here.
    RAISE EXCEPTION 'pg-once: could not claim key % after repeated concurrent changes', p_key
      USING ERRCODE = 'ONC02';
  END IF;

  PERFORM set_config('lock_timeout', v_lock_timeout, true);
  status := 'in_progress';

  -- Rate limit, on fresh executions only. The most specific configuration row wins. GCRA: with
  -- emission interval T = 1/per_second and tolerance (burst - 1) * T, a call is allowed when the
  -- bucket's theoretical arrival time (tat) is at most `tolerance` ahead of now. Checked here
  -- without a lock, so that tenants' calls never queue on their bucket while fn runs; the charge
  -- (tat += T) happens with the result, conditionally, and a call that lost a race for the last
  -- token fails there (src/idempotency/store-outcome.ts).
  SELECT l.tool, l.per_second, l.burst INTO limit_tool, v_per_second, v_burst
    FROM once.rate_limits l
   WHERE l.tenant_id IN (v_tenant, '*') AND l.tool IN (coalesce(p_tool, ''), '')
   ORDER BY (l.tenant_id = '*'), (l.tool = '')
   LIMIT 1;
  IF FOUND THEN
    limit_emission_ms := 1000.0 / v_per_second;
    limit_tolerance_ms := (v_burst - 1) * limit_emission_ms;
    SELECT s.tat INTO v_tat FROM once.rate_limit_state s WHERE s.tenant_id = v_tenant AND s.tool = limit_tool;
    v_early_ms := extract(epoch FROM greatest(coalesce(v_tat, clock_timestamp()), clock_timestamp()) - clock_timestamp()) * 1000
                  - limit_tolerance_ms;
    IF v_early_ms > 0 THEN
      -- Over the limit: undo the claim (fn will not run), keep the audit row.
      DELETE FROM once.idempotency_keys k WHERE k.tenant_id = v_tenant AND k.key = p_key AND k.version = p_version;
      INSERT INTO once.dedupe_audit (tenant_id, key, tool, kind, detail)
      VALUES (v_tenant, p_key, p_tool, 'rate_limited',
              jsonb_build_object('version', p_version, 'limit_tool', limit_tool, 'per_second', v_per_second,
                                 'burst', v_burst, 'retry_after_ms', ceil(v_early_ms)));
      outcome := 'rate_limited';
      retry_after_ms := ceil(v_early_ms);
      RETURN;
    END IF;
  END IF;

  IF waited THEN
    -- Waited for a concurrent takeover that rolled back: this call executes, and the wait is
    -- still worth an audit row.
    INSERT INTO once.dedupe_audit (tenant_id, key, tool, kind, detail)
    VALUES (v_tenant, p_key, p_tool, 'waited',
            jsonb_build_object('version', p_version, 'outcome', 'executed',
                               'waited_ms', round(extract(epoch FROM clock_timestamp() - v_started) * 1000)));
  END IF;
  outcome := 'claimed';
END
$$;

-- Called by runIdempotent when the handler failed with an error that is not stored: it aborts
-- the transaction, so that even a caller who catches the error and commits cannot persist the
-- claim or the handler's partial writes (COMMIT of an aborted transaction is a ROLLBACK). Inside
-- a caller's savepoint, ROLLBACK TO SAVEPOINT still recovers, as it should.
CREATE OR REPLACE FUNCTION once.abort_call(p_reason text) RETURNS void
  LANGUAGE plpgsql
AS $$
BEGIN
  RAISE EXCEPTION 'pg-once: the idempotent call failed, so its transaction cannot commit: %', p_reason
    USING ERRCODE = 'ONC03';
END
$$;

REVOKE ALL ON FUNCTION once.claim(text, text, text, bytea, double precision, integer, double precision, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION once.abort_call(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION once.claim(text, text, text, bytea, double precision, integer, double precision, text) TO once_app;
GRANT EXECUTE ON FUNCTION once.abort_call(text) TO once_app;
