-- Claims that do not tie up connections, waits that stay within their bound, replays that return
-- the first answer's bytes.
--
-- 1. once.claim_key(): the claim of runIdempotent from this version on (once.claim stays, for
--    clients of earlier versions during a rolling upgrade). What changed and why:
--    - A call that would wait for a concurrent claim can ask not to (p_block = false): it gets
--      outcome 'busy' back at once, in a transaction that is still usable, and decides in the
--      client whether it may wait. A waiting duplicate holds a pooled connection for as long as it
--      waits, so the client bounds how many of a pool's connections wait at once (see
--      src/idempotency/wait-slots.ts); without this, 30 duplicates of a slow call filled a pool of
--      10 and an unrelated tenant's call queued behind them.
--      The probe is a transaction-level advisory lock on (tenant, key, version), taken only by
--      calls about to write a claim (never by replays, which must not queue behind each other):
--      pg_try_advisory_xact_lock answers "is a claim of this key in flight?" without waiting and
--      without an EXCEPTION block (a subtransaction on every call). Lock waits on the row itself
--      (a sweep deleting it, a client of an earlier version) remain bounded by lock_timeout.
--    - p_wait_ms bounds the whole wait of the statement, across its retries (each lock wait gets
--      what is left), not each lock wait.
--    - A role's statement_timeout shorter than the wait: the client raises statement_timeout for
--      this one statement (transaction-local) and stores the role's value in
--      once.saved_statement_timeout; the function puts it back first thing. A running statement's
--      timer is armed when the statement starts, so the restored value applies from the next
--      statement on, and the wait itself is not cut short into a raw SQLSTATE 57014.
--    - `waited` is exact: set when the call met a concurrent claim (the advisory lock was held, or
--      an INSERT/UPDATE found the row claimed), not when a row it wanted to take over was deleted
--      meanwhile by a sweep. p_waited carries a wait of an earlier round trip of the same call (a
--      two-phase duplicate polling a live lease), so its audit row says 'waited', not 'replay'.
--    - Re-entrancy: an in-transaction claim is marked with its transaction's id (lease_token
--      'tx:<xid>'); meeting that mark in the same transaction means the key is being claimed
--      again inside its own call, which can never succeed: outcome 'reentrant', at once.
-- 2. result_text: the JSON text the result was written with, so a replay returns the same bytes
--    (jsonb reorders object keys and normalises numbers). `result` (jsonb) stays for queries.
--
-- Variables: app_role (psql: -v app_role=...), bound by `pg-once migrate`.

ALTER TABLE once.idempotency_keys ADD COLUMN result_text text;

CREATE FUNCTION once.claim_key(
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
        -- p_block: wait for the claim in flight (its transaction holds the lock until it ends).
        PERFORM pg_advisory_xact_lock(v_lock_key);
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
    INSERT INTO once.dedupe_audit (tenant_id, key, tool, kind, detail)
    VALUES (v_tenant, p_key, p_tool, 'waited',
            jsonb_build_object('version', p_version, 'outcome', 'executed',
                               'waited_ms', round(extract(epoch FROM clock_timestamp() - v_started) * 1000)));
  END IF;
  outcome := 'claimed';
END
$$;

REVOKE ALL ON FUNCTION once.claim_key(text, text, text, bytea, double precision, integer, double precision, text, boolean, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION once.claim_key(text, text, text, bytea, double precision, integer, double precision, text, boolean, boolean) TO :"app_role";

-- 3. A call whose fn ended the transaction itself (COMMIT) left its claim committed as in
--    progress, with no lease: every retry would wait for it, then answer IN_PROGRESS, for the
--    record's whole ttl. runIdempotent notices (its next statement finds no tenant) and calls
--    this, outside any transaction: it sets the tenant for its own statement and stores the
--    failure, so retries get a coded error at once. Only an in-transaction claim (lease_token
--    'tx:...') that is still in progress is touched. SECURITY INVOKER: row-level security
--    applies, under the tenant set here, which the application role may set anyway.
CREATE FUNCTION once.fail_ended_call(p_tenant text, p_key text, p_version text, p_error jsonb) RETURNS boolean
  LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  PERFORM set_config('once.tenant_id', p_tenant, true);
  UPDATE once.idempotency_keys k
     SET status = 'failed', error = p_error, lease_token = NULL, completed_at = now()
   WHERE k.tenant_id = p_tenant AND k.key = p_key AND k.version = p_version
     AND k.status = 'in_progress' AND k.locked_until IS NULL AND k.lease_token LIKE 'tx:%';
  RETURN FOUND;
END
$$;

REVOKE ALL ON FUNCTION once.fail_ended_call(text, text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION once.fail_ended_call(text, text, text, jsonb) TO :"app_role";
