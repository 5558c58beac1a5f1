/**
 * Every error pg-once throws on purpose is an {@link OnceError}: a stable `code` to branch on
 * (never match on `message`), whether retrying the same call may succeed, and the HTTP status a
 * server fronting the tool would answer. The underlying error, if any, is the ES2022 `cause`.
 */

/** Stable error codes. Part of the public contract: never renamed, only added to. */
export type OnceErrorCode =
  | 'INVALID_OPTIONS'
  | 'INVALID_TENANT'
  | 'TENANT_MISSING'
  | 'RLS_BYPASS'
  | 'MIGRATION_CHECKSUM_MISMATCH'
  | 'MIGRATION_DATABASE_AHEAD'
  | 'MIGRATION_FAILED'
  | 'INSTALLATION_UNSAFE'
  | 'ROLES_CONFLICT'
  | 'NOT_INSTALLED'
  | 'NOT_IN_TRANSACTION'
  | 'INVALID_KEY'
  | 'INVALID_REQUEST'
  | 'IDEMPOTENCY_KEY_REUSED'
  | 'IDEMPOTENCY_IN_PROGRESS'
  | 'RESULT_NOT_SERIALIZABLE'
  | 'RESULT_TOO_LARGE'
  | 'CALL_ABORTED'
  | 'TRANSACTION_CONFLICT'
  | 'DELIVERY_FAILED'
  | 'DELIVERY_REJECTED'
  | 'NO_SINK'
  | 'SINK_MISCONFIGURED'
  | 'POOLER_SETTING_REQUIRED'
  | 'DOORBELL_UNAVAILABLE'
  | 'EVENT_NOT_FOUND'
  | 'RATE_LIMITED'
  | 'WRONG_ROLE'
  | 'LEASE_LOST'
  | 'WEBHOOK_INVALID'
  | 'REENTRANT_CALL'
  | 'TRANSACTION_MISUSE';

/** One problem found while validating options or input; a flattened zod issue. */
export interface OnceIssue {
  /** Where in the input, e.g. `['ttl']`. */
  path: readonly PropertyKey[];
  message: string;
  /** zod's issue code, e.g. `invalid_type`. */
  code: string;
}

/** Options of every OnceError's constructor. */
export interface OnceErrorOptions {
  /** The underlying error (a driver error, a zod error, a sink's failure), as ES2022's `cause`. (Default: none) */
  cause?: unknown;
}

export abstract class OnceError extends Error {
  abstract readonly code: OnceErrorCode;
  /** True when the very same call may succeed if retried later. */
  abstract readonly retryable: boolean;
  /** What an HTTP server fronting the tool should answer. */
  abstract readonly httpStatus: number;

  constructor(message: string, options?: OnceErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
  }
}

/** Options or input failed validation. `issues` lists every problem, not only the first. */
export class InvalidOptionsError extends OnceError {
  readonly code = 'INVALID_OPTIONS';
  readonly retryable = false;
  readonly httpStatus = 400;
  readonly issues: readonly OnceIssue[];

  constructor(what: string, issues: readonly OnceIssue[], options?: OnceErrorOptions) {
    const summary = issues.map((issue) => (issue.path.length > 0 ? `${issue.path.map(String).join('.')}: ` : '') + issue.message).join('; ');
    super(`Invalid ${what}: ${summary}`, options);
    this.issues = issues;
  }
}

/** A tenant id that is empty, too long or contains control characters. */
export class InvalidTenantError extends OnceError {
  readonly code = 'INVALID_TENANT';
  readonly retryable = false;
  readonly httpStatus = 400;
}

/**
 * A query touched pg-once's tables in a transaction with no tenant set (SQLSTATE ONC01, raised by
 * `once.current_tenant()`). A programming error: wrap the work in `withTenant`.
 */
export class TenantMissingError extends OnceError {
  readonly code = 'TENANT_MISSING';
  readonly retryable = false;
  readonly httpStatus = 500;
}

/**
 * The connection's role is a superuser or has BYPASSRLS, so row-level security would not isolate
 * tenants. Refused unless the caller opts in explicitly.
 */
export class RlsBypassError extends OnceError {
  readonly code = 'RLS_BYPASS';
  readonly retryable = false;
  readonly httpStatus = 500;
  readonly role: string;

  constructor(role: string, options?: OnceErrorOptions) {
    super(
      `pg-once: role "${role}" bypasses row-level security (superuser or BYPASSRLS), so tenants ` +
        "would not be isolated. Connect as a login granted this database's application role (`pg-once roles` names it), or pass allowRlsBypass: true.",
      options,
    );
    this.role = role;
  }
}

/** `runIdempotent`/`enqueue` were given something that is not a Kysely `Transaction`. */
export class NotInTransactionError extends OnceError {
  readonly code = 'NOT_IN_TRANSACTION';
  readonly retryable = false;
  readonly httpStatus = 500;
}

/** An idempotency key that is empty, longer than 255 characters or contains control characters. */
export class InvalidKeyError extends OnceError {
  readonly code = 'INVALID_KEY';
  readonly retryable = false;
  readonly httpStatus = 400;
}

/** A request (tool arguments) or event payload that is not JSON: BigInt, cycles, functions... */
export class InvalidRequestError extends OnceError {
  readonly code = 'INVALID_REQUEST';
  readonly retryable = false;
  readonly httpStatus = 400;
}

/**
 * The key was used before with a different request (its fingerprint differs). Nothing ran. As in
 * Stripe's API: a client bug, answered with 422.
 */
export class IdempotencyKeyReusedError extends OnceError {
  readonly code = 'IDEMPOTENCY_KEY_REUSED';
  readonly retryable = false;
  readonly httpStatus = 422;
  readonly key: string;

  constructor(key: string, options?: OnceErrorOptions) {
    super(`pg-once: idempotency key "${key}" was already used with a different request; use a new key for a different request.`, options);
    this.key = key;
  }
}

/**
 * A concurrent call with the same key is still running and did not finish within `waitMs`.
 * Retry after `retryAfterMs`: the retry will replay its result (or run, if it failed).
 */
export class IdempotencyInProgressError extends OnceError {
  readonly code = 'IDEMPOTENCY_IN_PROGRESS';
  readonly retryable = true;
  readonly httpStatus = 409;
  readonly key: string;
  /** A hint for when to retry, in milliseconds (also what a `Retry-After` header should say). */
  readonly retryAfterMs: number;

  constructor(key: string, retryAfterMs: number, options?: OnceErrorOptions) {
    super(`pg-once: a call with idempotency key "${key}" is already in progress; retry in ${retryAfterMs} ms.`, options);
    this.key = key;
    this.retryAfterMs = retryAfterMs;
  }
}

/**
 * The tenant is over its rate limit of fresh executions (replays are never limited). `fn` did not
 * run; retry after `retryAfterMs`.
 */
export class RateLimitedError extends OnceError {
  readonly code = 'RATE_LIMITED';
  readonly retryable = true;
  readonly httpStatus = 429;
  readonly key: string;
  /** When a token will be available, in milliseconds (what a Retry-After header should say). */
  readonly retryAfterMs: number;

  constructor(key: string, retryAfterMs: number, options?: OnceErrorOptions) {
    super(`pg-once: the tenant is over its rate limit; retry key "${key}" in ${retryAfterMs} ms.`, options);
    this.key = key;
    this.retryAfterMs = retryAfterMs;
  }
}

/** A handler result (or event payload) that JSON cannot represent faithfully. Nothing committed. */
export class ResultNotSerializableError extends OnceError {
  readonly code = 'RESULT_NOT_SERIALIZABLE';
  readonly retryable = false;
  readonly httpStatus = 500;
}

/** A handler result larger than `maxResultBytes`. Nothing committed. */
export class ResultTooLargeError extends OnceError {
  readonly code = 'RESULT_TOO_LARGE';
  readonly retryable = false;
  readonly httpStatus = 500;
  readonly bytes: number;
  readonly maxBytes: number;

  constructor(bytes: number, maxBytes: number) {
    super(`pg-once: the result is ${bytes} bytes as JSON, over the limit of ${maxBytes} (maxResultBytes).`);
    this.bytes = bytes;
    this.maxBytes = maxBytes;
  }
}

/**
 * The transaction was aborted on purpose because an idempotent call in it failed (SQLSTATE ONC03):
 * seen by code that catches the handler's error and keeps using the transaction.
 */
export class CallAbortedError extends OnceError {
  readonly code = 'CALL_ABORTED';
  readonly retryable = false;
  readonly httpStatus = 500;
}

/**
 * Postgres aborted the transaction to keep it consistent (serialization failure, deadlock, or a
 * claim that lost too many races). Retrying the whole transaction is safe.
 */
export class TransactionConflictError extends OnceError {
  readonly code = 'TRANSACTION_CONFLICT';
  readonly retryable = true;
  readonly httpStatus = 409;
}

/**
 * Thrown by a sink: this attempt failed, try again later (after `retryAfterMs` when the receiver
 * said so, e.g. with a Retry-After header; else after the relay's backoff). Any other error a sink
 * throws means the same.
 */
export class DeliveryFailedError extends OnceError {
  readonly code = 'DELIVERY_FAILED';
  readonly retryable = true;
  readonly httpStatus = 502;
  /** When the receiver asked to be retried, in milliseconds from now. */
  readonly retryAfterMs: number | undefined;

  constructor(message: string, options?: OnceErrorOptions & { retryAfterMs?: number | undefined }) {
    super(message, options);
    this.retryAfterMs = options?.retryAfterMs;
  }
}

/**
 * Thrown by a sink: the receiver refused the event for good (e.g. HTTP 400, 401, 404, 410, 422),
 * so retrying cannot help. The event is marked `dead` at once, with this message as last_error.
 */
export class DeliveryRejectedError extends OnceError {
  readonly code = 'DELIVERY_REJECTED';
  readonly retryable = false;
  readonly httpStatus = 502;
}

/** No sink of the relay matches the event's topic. */
export class NoSinkError extends OnceError {
  readonly code = 'NO_SINK';
  readonly retryable = true;
  readonly httpStatus = 500;
}

/** A sink cannot work as configured (e.g. a JetStream duplicate window shorter than the relay's retry horizon). */
export class SinkMisconfiguredError extends OnceError {
  readonly code = 'SINK_MISCONFIGURED';
  readonly retryable = false;
  readonly httpStatus = 500;
}

/**
 * The relay reaches Postgres through a connection pooler it was not told about: PgBouncer refuses
 * the session settings the relay sends when it connects (the startup `options` parameter), and in
 * transaction mode would break its named prepared statements and LISTEN. The message names the
 * relay option to set (`pooler`).
 */
export class PoolerSettingError extends OnceError {
  readonly code = 'POOLER_SETTING_REQUIRED';
  readonly retryable = false;
  readonly httpStatus = 500;
}

/**
 * The relay's logical-replication doorbell cannot run here (`reason` says why: wal_level is not
 * logical, the login lacks REPLICATION, the publication is missing, the slot retains too much
 * WAL...). Never thrown at callers: the relay logs it and polls, which is always correct.
 */
export class DoorbellUnavailableError extends OnceError {
  readonly code = 'DOORBELL_UNAVAILABLE';
  readonly retryable = true;
  readonly httpStatus = 503;
  readonly reason: DoorbellUnavailableReason;

  constructor(reason: DoorbellUnavailableReason, message: string, options?: OnceErrorOptions) {
    super(message, options);
    this.reason = reason;
  }
}

/** Why the doorbell is off: see {@link DoorbellUnavailableError}. */
export type DoorbellUnavailableReason = 'wal_level' | 'privilege' | 'publication' | 'slot_limit' | 'wal_retained' | 'connection';

/** An outbox event id that does not exist (or is not dead, for requeue). */
export class EventNotFoundError extends OnceError {
  readonly code = 'EVENT_NOT_FOUND';
  readonly retryable = false;
  readonly httpStatus = 404;
}

/**
 * A use of pg-once by a role that may not do it: the relay or an operator command (sweep, status,
 * outbox) without the database's relay role, `limits` by anyone but the schema's owner, an
 * application login without the database's app role. Under forced row-level security the first
 * would silently find nothing and the others fail with a bare "permission denied"; the message
 * names the role needed (`neededRole`), which `pg-once roles` also lists. `migrate` by a login
 * that may not migrate throws MigrationFailedError, as it always has, with this as its `cause`.
 */
export class WrongRoleError extends OnceError {
  readonly code = 'WRONG_ROLE';
  readonly retryable = false;
  readonly httpStatus = 500;
  /** The role (or kind of role) that the operation needs, when known. */
  readonly neededRole: string | undefined;

  constructor(message: string, options?: OnceErrorOptions & { neededRole?: string }) {
    super(message, options);
    this.neededRole = options?.neededRole;
  }
}

/** pg-once's schema is not installed in the database the caller reached: run `pg-once migrate`. */
export class NotInstalledError extends OnceError {
  readonly code = 'NOT_INSTALLED';
  readonly retryable = false;
  readonly httpStatus = 500;
}

/**
 * A two-phase call ran past its lease and another worker took the call over before this one could
 * store its result. The effect was made under the same downstream idempotency key, so the other
 * worker's attempt is deduplicated downstream; retry to get the stored result.
 */
export class LeaseLostError extends OnceError {
  readonly code = 'LEASE_LOST';
  readonly retryable = true;
  readonly httpStatus = 409;
}

/**
 * A webhook that failed verification: missing headers, a signature that does not match (tampered
 * body, wrong secret), a timestamp outside the tolerance (a replayed or delayed delivery), or a
 * signed body that names no tenant or another tenant than the endpoint's.
 */
export class WebhookVerificationError extends OnceError {
  readonly code = 'WEBHOOK_INVALID';
  readonly retryable = false;
  readonly httpStatus = 401;
  readonly reason: 'missing_headers' | 'bad_signature' | 'stale_timestamp' | 'future_timestamp' | 'missing_tenant' | 'wrong_tenant';

  constructor(reason: WebhookVerificationError['reason'], message: string, options?: OnceErrorOptions) {
    super(message, options);
    this.reason = reason;
  }
}

/**
 * The key of an idempotent call was used again inside that same call (its `fn`, directly or
 * through code it calls), whose claim is not finished: that call can never succeed, so it is
 * refused at once rather than after waiting `waitMs` for itself.
 */
export class ReentrantCallError extends OnceError {
  readonly code = 'REENTRANT_CALL';
  readonly retryable = false;
  readonly httpStatus = 500;
}

/**
 * The transaction pg-once runs in was ended or reconfigured under it: `fn` issued COMMIT or
 * ROLLBACK itself (its claim would stay in progress, or vanish), or `SET TRANSACTION` after the
 * transaction began (SQLSTATE 25001; withTenant's transaction is READ COMMITTED by design).
 */
export class TransactionMisuseError extends OnceError {
  readonly code = 'TRANSACTION_MISUSE';
  readonly retryable = false;
  readonly httpStatus = 500;
}

/** Base of the migration failures; `code` tells which. */
export abstract class MigrationError extends OnceError {
  readonly retryable = false;
  readonly httpStatus = 500;
}

/** An applied migration file was edited afterwards: its checksum no longer matches the record. */
export class MigrationChecksumError extends MigrationError {
  readonly code = 'MIGRATION_CHECKSUM_MISMATCH';
  readonly version: number;

  constructor(version: number, name: string, recorded: string, actual: string) {
    super(
      `pg-once: migration ${name} (version ${version}) was applied with checksum ${recorded}, but the ` +
        `file now has ${actual}. Applied migrations are append-only: restore the file and add a new one.`,
    );
    this.version = version;
  }
}

/** The database has migrations this package does not know: it was migrated by a newer pg-once. */
export class MigrationDatabaseAheadError extends MigrationError {
  readonly code = 'MIGRATION_DATABASE_AHEAD';
  readonly versions: readonly number[];

  constructor(versions: readonly number[]) {
    super(
      `pg-once: the database has migration version(s) ${versions.join(', ')} that this package does not ` +
        'ship; it was migrated by a newer pg-once. Upgrade the package instead of running an older one.',
    );
    this.versions = versions;
  }
}

/** A migration's SQL failed; nothing of the run was committed. */
export class MigrationFailedError extends MigrationError {
  readonly code = 'MIGRATION_FAILED';
}

/** One thing found wrong with what pg-once owns in a database. */
export interface InstallationProblem {
  /** The object, e.g. `once.idempotency_keys` or `policy extra_read on once.outbox_events`. */
  object: string;
  problem: string;
  /** One line of SQL (or a command) that fixes it. */
  fix: string;
}

/**
 * What pg-once owns in the database is not what it installed: a policy it did not create (a
 * permissive policy is OR-ed with the tenant policy, so one extra `USING (true)` opens every
 * tenant's rows), row-level security disabled or not forced, a privilege granted to PUBLIC, an
 * object owned by another role. `migrate` checks on every run, changes nothing, and refuses.
 */
export class InstallationUnsafeError extends MigrationError {
  readonly code = 'INSTALLATION_UNSAFE';
  readonly problems: readonly InstallationProblem[];

  constructor(problems: readonly InstallationProblem[]) {
    super(`pg-once: refusing to use this database; nothing was changed:\n${problems.map((p) => `  - ${p.object}: ${p.problem} (fix: ${p.fix})`).join('\n')}`);
    this.problems = problems;
  }
}

/**
 * The roles migrate would use belong to another database (roles are cluster-wide; a login of one
 * database must never open another), or `rolePrefix` differs from the roles already installed.
 */
export class RolesConflictError extends MigrationError {
  readonly code = 'ROLES_CONFLICT';
}

/** SQLSTATEs raised by pg-once's own SQL (see sql/). One place maps them to classes. */
export const SQLSTATE_TENANT_MISSING = 'ONC01';
export const SQLSTATE_CLAIM_CONTENDED = 'ONC02';
export const SQLSTATE_CALL_ABORTED = 'ONC03';
/** A role a migration needs does not exist and the migrating owner may not create it. */
export const SQLSTATE_ROLE_MISSING = 'ONC10';
/** SET TRANSACTION ISOLATION LEVEL after the transaction's first query. */
const SQLSTATE_ACTIVE_TRANSACTION = '25001';
/** Postgres' own codes that mean "retry the transaction". */
const RETRYABLE_SQLSTATES = new Set(['40001', '40P01', SQLSTATE_CLAIM_CONTENDED]);

/**
 * Translates a driver error raised by pg-once's SQL into its typed error; anything else is returned
 * unchanged. Matching is on SQLSTATE, never on message text.
 */
export function translateDatabaseError(error: unknown): unknown {
  const sqlstate = (error as { code?: unknown } | null)?.code;
  if (sqlstate === SQLSTATE_TENANT_MISSING) {
    return new TenantMissingError('pg-once: no tenant is set for this transaction; run the work inside withTenant(db, tenantId, fn).', { cause: error });
  }
  if (sqlstate === SQLSTATE_CALL_ABORTED) {
    return new CallAbortedError((error as Error).message, { cause: error });
  }
  if (sqlstate === SQLSTATE_ACTIVE_TRANSACTION) {
    return new TransactionMisuseError(`pg-once: ${(error as Error).message}; withTenant's transaction is READ COMMITTED and began before fn ran.`, {
      cause: error,
    });
  }
  if (typeof sqlstate === 'string' && RETRYABLE_SQLSTATES.has(sqlstate)) {
    return new TransactionConflictError(`pg-once: ${(error as Error).message}; retry the transaction.`, { cause: error });
  }
  return error;
}
