-- The dedupe audit row and the rate-limit charge, each written once (issue 19).
--
-- An audit row was written by four INSERTs in once.claim_key (a reused key; a replay or a wait;
-- a rate-limited claim; an execution after a wait) and by three statements of the client (a
-- duplicate refused with IDEMPOTENCY_IN_PROGRESS, src/idempotency/sql/record-rejection.ts; a
-- two-phase call that lost the race for the last token, src/idempotency/sql/lease-statements.ts;
-- a key the model wrote that keys.fromModel refused, src/keys.ts); the GCRA charge of a bucket by
-- two statements of the client (with the result of an in-transaction call,
-- src/idempotency/sql/store-outcome.ts; at the claim of a two-phase one, lease-statements.ts).
-- Every copy had to agree with the others on columns, tenant and arithmetic; now each is one
-- function, and the rows, details and charges are exactly what the copies wrote.
--
-- 1. once.record_audit(key, tool, kind, detail): one row of once.dedupe_audit under the
--    transaction's tenant (the column's default, once.current_tenant(): ONC01 without one).
-- 2. once.charge_rate_limit(tenant, tool, emission_ms, tolerance_ms): charges the (tenant, tool)
--    bucket one emission interval if a token is free (its theoretical arrival time at most the
--    tolerance ahead of now), and says whether it did; a full bucket is left as it is. The check
--    at claim time (once.claim_key) reads the bucket without a lock, so that a tenant's calls
--    never queue on it while fn runs; this charge locks its row until the transaction ends.
--
-- Both SECURITY INVOKER: row-level security and the caller's privileges apply exactly as they
-- did to the statements they replace (the application role's INSERT on once.dedupe_audit and
-- INSERT, UPDATE on once.rate_limit_state, each under its tenant_isolation policy). PL/pgSQL, not
-- SQL: a SQL function that writes is never inlined, and before PostgreSQL 18 it plans its
-- statement again on every call; PL/pgSQL keeps the plan for the session.
--
-- 3. once.claim_key: sql/0013's, with its four audit INSERTs now calls of once.record_audit, and
--    nothing else changed (same signature, outcomes, waits and rows). A fresh claim writes no
--    audit row; a replay writes one, as before. once.claim (sql/0003), kept for clients of 0.1
--    during a rolling upgrade, is left as it was.
--
-- Variables: app_role (psql: -v app_role=...), bound by `pg-once migrate`.

CREATE FUNCTION once.record_audit(p_key text, p_tool text, p_kind text, p_detail jsonb) RETURNS void
  LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
BEGIN
  INSERT INTO once.dedupe_audit (key, tool, kind, detail) VALUES (p_key, p_tool, p_kind, p_detail);
END
$$;

CREATE FUNCTION once.charge_rate_limit(p_tenant text, p_tool text, p_emission_ms double precision, p_tolerance_ms double precision)
  RETURNS boolean
  LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
BEGIN
  INSERT INTO once.rate_limit_state AS s (tenant_id, tool, tat)
  VALUES (p_tenant, p_tool, clock_timestamp() + p_emission_ms * interval '1 millisecond')
  ON CONFLICT (tenant_id, tool) DO UPDATE
     SET tat = greatest(s.tat, clock_timestamp()) + p_emission_ms * interval '1 millisecond'
   WHERE greatest(s.tat, clock_timestamp()) - clock_timestamp() <= p_tolerance_ms * interval '1 millisecond';
  RETURN FOUND;
END
$$;

REVOKE ALL ON FUNCTION once.record_audit(text, text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION once.charge_rate_limit(text, text, double precision, double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION once.record_audit(text, text, text, jsonb) TO :"app_role";
GRANT EXECUTE ON FUNCTION once.charge_rate_limit(text, text, double precision, double precision) TO :"app_role";

CREATE OR REPLACE FUNCTION once.claim_key(
  p_key         text,
  p_version     text,
  p_tool        text,
  p_fingerprint bytea,
  p_ttl_ms      double precision,
  -- The longest this statement may wait for concurrent claims, in all, in milliseconds.
  p_wait_ms     integer,
  -- Two-phase mode: commit the claim with a lease of this many milliseconds under this token.
  p_lease_ms    double precision,
  p_lease_token text,
  -- false: never wait for a claim in flight elsewhere; answer 'busy' instead.
  p_block       boolean,
  -- An earlier round trip of this call already waited for a concurrent claim.
  p_waited      boolean,
  OUT outcome      text,         -- claimed | replay | key_reused | in_progress | rate_limited | busy | reentrant
  OUT tenant_id    text,
  OUT status       text,
  OUT result       text,
  OUT error        jsonb,
  OUT waited       boolean,
  OUT locked_until timestamptz,
  OUT retry_after_ms     double precision,
  OUT limit_tool         text,
  OUT limit_emission_ms  double precision,
  OUT limit_tolerance_ms double precision
)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_tenant       text := once.current_tenant();  -- raises ONC01 before anything is written
  v_saved        text := nullif(current_setting('once.saved_statement_timeout', true), '');
  v_status       text;
  v_fingerprint  bytea;
  v_expired      boolean;
  v_lease_over   boolean;
  v_row_lease    timestamptz;
  v_row_token    text;
  v_row_tool     text;
  v_result       text;
  v_error        jsonb;
  v_claimed      boolean := false;
  v_found        boolean;
  v_locked       boolean := false;
  v_raced        boolean := false;
  v_lock_timeout text := current_setting('lock_timeout');
  v_left_ms      double precision;
  v_own_mark     text;
  v_lock_key     bigint;
  v_started      timestamptz := clock_timestamp();
  v_expires_at   timestamptz := now() + p_ttl_ms * interval '1 millisecond';
  v_locked_until timestamptz := clock_timestamp() + p_lease_ms * interval '1 millisecond';
  v_per_second   double precision;
  v_burst        integer;
  v_tat          timestamptz;
  v_early_ms     double precision;
BEGIN
  IF v_saved IS NOT NULL THEN
    -- This statement runs under the timeout the client raised for it; later ones do not.
    PERFORM set_config('statement_timeout', v_saved, true), set_config('once.saved_statement_timeout', '', true);
  END IF;
  tenant_id := v_tenant;
  waited := coalesce(p_waited, false);
  FOR attempt IN 1..16 LOOP
    -- Look first: a replay (the row is committed) costs this one index probe, no write, no lock.
    SELECT k.status, k.fingerprint, k.expires_at <= now(),
           k.status = 'in_progress' AND k.locked_until IS NOT NULL AND k.locked_until <= clock_timestamp(),
           k.locked_until, k.lease_token, k.tool, coalesce(k.result_text, k.result::text), k.error
      INTO v_status, v_fingerprint, v_expired, v_lease_over, v_row_lease, v_row_token, v_row_tool, v_result, v_error
      FROM once.idempotency_keys k
     WHERE k.tenant_id = v_tenant AND k.key = p_key AND k.version = p_version;
    v_found := FOUND;  -- PERFORM below would overwrite FOUND
    IF v_raced AND v_found THEN
      -- The statement that lost a race met a claim of a concurrent call (now settled, or rolled
      -- back and the old record back). Had the row gone instead, a sweep deleted it: no wait.
      waited := true;
    END IF;
    v_raced := false;

    IF NOT v_found OR v_expired OR v_lease_over THEN
      IF NOT v_locked THEN
        -- Length-prefixed parts: no two (tenant, key, version) triples share a lock key text.
        v_lock_key := hashtextextended(length(v_tenant) || ':' || v_tenant || length(p_key) || ':' || p_key || p_version, 0);
        IF pg_try_advisory_xact_lock(v_lock_key) THEN
          v_locked := true;
        ELSIF NOT p_block THEN
          outcome := 'busy';
          RETURN;
        END IF;
      END IF;
      -- Every wait below gets what is left of p_wait_ms (lock_timeout, restored right after).
      v_left_ms := p_wait_ms - extract(epoch FROM clock_timestamp() - v_started) * 1000;
      IF NOT v_locked AND v_left_ms < 1 THEN
        RAISE EXCEPTION 'pg-once: a concurrent call of key % did not finish within the wait', p_key
          USING ERRCODE = 'lock_not_available';
      END IF;
      PERFORM set_config('lock_timeout', greatest(ceil(v_left_ms), 1)::bigint || 'ms', true);
      IF NOT v_locked THEN
        -- p_block: wait for the claim in flight (its transaction holds the lock until it ends),
        -- in SHARE mode (see the head of sql/0013_write_path.sql): every duplicate wakes when it
        -- ends, instead of one after another. Writing after the wait is then guarded by the
        -- primary key alone, as before this lock existed.
        PERFORM pg_advisory_xact_lock_shared(v_lock_key);
        v_locked := true;
        waited := true;
        PERFORM set_config('lock_timeout', v_lock_timeout, true);
        CONTINUE;  -- it ended: read what it left
      END IF;
      IF p_lease_token IS NULL THEN
        v_own_mark := 'tx:' || pg_current_xact_id()::text;
      END IF;
      IF NOT v_found THEN
        INSERT INTO once.idempotency_keys AS k (tenant_id, key, version, tool, fingerprint, status, expires_at, locked_until, lease_token)
        VALUES (v_tenant, p_key, p_version, p_tool, p_fingerprint, 'in_progress', v_expires_at, v_locked_until,
                coalesce(p_lease_token, v_own_mark))
        ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO NOTHING;
      ELSE
        UPDATE once.idempotency_keys k
           SET tool = p_tool, fingerprint = p_fingerprint, status = 'in_progress', result = NULL, result_text = NULL,
               error = NULL, locked_until = v_locked_until, lease_token = coalesce(p_lease_token, v_own_mark),
               created_at = now(), completed_at = NULL, expires_at = v_expires_at
         WHERE k.tenant_id = v_tenant AND k.key = p_key AND k.version = p_version
           AND (k.expires_at <= now()
                OR (k.status = 'in_progress' AND k.locked_until IS NOT NULL AND k.locked_until <= clock_timestamp()));
      END IF;
      v_claimed := FOUND;
      PERFORM set_config('lock_timeout', v_lock_timeout, true);
      IF v_claimed THEN
        EXIT;
      END IF;
      v_raced := true;
      CONTINUE;
    END IF;

    status := v_status;
    IF v_status = 'in_progress' THEN
      IF v_row_lease IS NULL AND v_row_token = 'tx:' || pg_current_xact_id_if_assigned()::text THEN
        -- This transaction's own claim, not finished: the key is used inside its own call.
        outcome := 'reentrant';
        RETURN;
      END IF;
      -- A committed claim with a live lease (two-phase mode): the caller decides how to wait.
      outcome := 'in_progress';
      locked_until := v_row_lease;
      RETURN;
    END IF;

    IF v_fingerprint IS DISTINCT FROM p_fingerprint THEN
      PERFORM once.record_audit(p_key, coalesce(p_tool, v_row_tool), 'key_reused',
              jsonb_build_object('version', p_version,
                                 'stored_fingerprint', encode(v_fingerprint, 'hex'),
                                 'request_fingerprint', encode(p_fingerprint, 'hex')));
      outcome := 'key_reused';
      RETURN;
    END IF;
    PERFORM once.record_audit(p_key, coalesce(p_tool, v_row_tool), CASE WHEN waited THEN 'waited' ELSE 'replay' END,
            jsonb_build_object('version', p_version, 'status', v_status, 'outcome', 'replayed',
                               'waited_ms', round(extract(epoch FROM clock_timestamp() - v_started) * 1000)));
    outcome := 'replay';
    result := v_result;
    error := v_error;
    RETURN;
  END LOOP;

  IF NOT v_claimed THEN
    RAISE EXCEPTION 'pg-once: could not claim key % after repeated concurrent changes', p_key
      USING ERRCODE = 'ONC02';
  END IF;
  status := 'in_progress';

  -- Rate limit, on fresh executions only: as in once.claim (sql/0003_claim_function.sql).
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
      DELETE FROM once.idempotency_keys k WHERE k.tenant_id = v_tenant AND k.key = p_key AND k.version = p_version;
      PERFORM once.record_audit(p_key, p_tool, 'rate_limited',
              jsonb_build_object('version', p_version, 'limit_tool', limit_tool, 'per_second', v_per_second,
                                 'burst', v_burst, 'retry_after_ms', ceil(v_early_ms)));
      outcome := 'rate_limited';
      retry_after_ms := ceil(v_early_ms);
      RETURN;
    END IF;
  END IF;

  IF waited THEN
    PERFORM once.record_audit(p_key, p_tool, 'waited',
            jsonb_build_object('version', p_version, 'outcome', 'executed',
                               'waited_ms', round(extract(epoch FROM clock_timestamp() - v_started) * 1000)));
  END IF;
  outcome := 'claimed';
END
$$;
