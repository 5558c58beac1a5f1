// The public API of pg-once, listed by name: nothing is exported by accident.
export { withTenant, MAX_TENANT_ID_LENGTH } from './tenant.ts';
export { runIdempotent } from './idempotency/run-idempotent.ts';
export type { IdempotentOutcome } from './idempotency/run-idempotent.ts';
export type { Jsonify } from './idempotency/jsonify.ts';
export { isRecordedFailure } from './idempotency/recorded-failure.ts';
export { downstreamKey, idempotencyHeaders, runIdempotentExternal } from './idempotency/run-idempotent-external.ts';
export type { ExternalCallContext } from './idempotency/run-idempotent-external.ts';
export { INBOX_KEY_PREFIX, receiveOnce } from './inbox/receive-once.ts';
export type { InboxMessage, ReceiveOnceOptions } from './inbox/receive-once.ts';
export { verifyWebhook } from './inbox/verify-webhook.ts';
export type { HeaderBag, VerifiedWebhook, VerifyWebhookOptions } from './inbox/verify-webhook.ts';
export { StoredCallError } from './idempotency/stored-error.ts';
export type { DedupeAuditEvent } from './idempotency/audit-event.ts';
export { enqueue, MAX_PAYLOAD_BYTES } from './outbox/enqueue.ts';
export type { EnqueuedEvent } from './outbox/enqueue.ts';
export { startRelay } from './outbox/start-relay.ts';
export type { Relay } from './outbox/start-relay.ts';
export { drainOnce } from './outbox/drain-once.ts';
export type { DrainOnceOptions, DrainResult } from './outbox/drain-options.ts';
export type { DeliveryContext, DeliveryEvent, Sink, SinkStartInfo } from './outbox/sink.ts';
export { defaultBackoff } from './outbox/backoff.ts';
export { defaultIsPermanent, httpSink } from './outbox/sinks/http-sink.ts';
export type { HttpSinkOptions, PermanentFailureOptions, PermanentFailurePolicy } from './outbox/sinks/http-sink.ts';
export type { CloudEventsOptions } from './outbox/sinks/cloud-event-request.ts';
export { natsSink } from './outbox/sinks/nats-sink.ts';
export type { NatsSinkOptions } from './outbox/sinks/nats-sink.ts';
export { AMQP_HEADERS, amqpSink } from './outbox/sinks/amqp-sink.ts';
export type { AmqpSinkOptions, AmqpUnroutablePolicy } from './outbox/sinks/amqp-sink.ts';
export { redisStreamSink } from './outbox/sinks/redis-stream-sink.ts';
export type { RedisStreamSinkOptions } from './outbox/sinks/redis-stream-sink.ts';
export type { BackoffOptions, BackoffPolicy } from './outbox/backoff.ts';
export { listDeadEvents, requeueDeadEvents } from './ops/dead-events.ts';
export type { DeadEvent } from './ops/dead-events.ts';
export type { MessageRelayLogger, RelayLogFields, RelayLogger, StructuredRelayLogger } from './outbox/relay-logger.ts';
export { keys, canonicalJson, fingerprint, modelKeyProblem, MAX_KEY_LENGTH } from './keys.ts';
export type { ModelKeyOptions, OrchestratorKeyParts } from './keys.ts';
export { sweep } from './ops/sweep.ts';
export type { SweepOptions, SweepResult } from './ops/sweep.ts';
export { doctor } from './ops/doctor.ts';
export type { DoctorCheck, DoctorFinding, DoctorOptions, DoctorReport, DoctorSeverity } from './ops/doctor.ts';
export { status } from './ops/status.ts';
export type { Status, StatusOptions, TenantToolStatus } from './ops/status.ts';
export { DEFAULT_LIMIT_TENANT, listRateLimits, removeRateLimit, setRateLimit } from './ops/limits.ts';
export type { RateLimit, RateLimitRow } from './ops/limits.ts';
export { configure } from './settings.ts';
export type { Settings } from './settings.ts';
export { migrate } from './ops/migrate.ts';
export type { AppliedMigration, DatabaseTarget, MigrateResult } from './ops/migrate.ts';
export { databaseRoles, rolesSql } from './roles.ts';
export type { RoleNames, RolesSqlOptions } from './roles.ts';
export type { MigrateOptions } from './ops/migrate/migrate-options.ts';
export type { WithTenantOptions } from './with-tenant-options.ts';
export type { RunIdempotentOptions } from './idempotency/run-idempotent-options.ts';
export type { RunIdempotentExternalOptions } from './idempotency/run-idempotent-external-options.ts';
export type { OutboxEvent } from './outbox/outbox-event.ts';
export type { RelayOptions, RelaySweepOptions } from './outbox/relay-options.ts';
export type { LogicalDoorbellOptions, WakeupOptions } from './outbox/doorbell-options.ts';
export {
  CallAbortedError,
  DeliveryFailedError,
  DeliveryRejectedError,
  DoorbellUnavailableError,
  EventNotFoundError,
  NoSinkError,
  PoolerSettingError,
  SinkMisconfiguredError,
  IdempotencyInProgressError,
  IdempotencyKeyReusedError,
  InvalidKeyError,
  InvalidOptionsError,
  InvalidRequestError,
  InvalidTenantError,
  InstallationUnsafeError,
  LeaseLostError,
  MigrationChecksumError,
  MigrationDatabaseAheadError,
  MigrationError,
  MigrationFailedError,
  NotInstalledError,
  NotInTransactionError,
  OnceError,
  RateLimitedError,
  ReentrantCallError,
  ResultNotSerializableError,
  ResultTooLargeError,
  RlsBypassError,
  RolesConflictError,
  SQLSTATE_TENANT_MISSING,
  TenantMissingError,
  TransactionConflictError,
  TransactionMisuseError,
  translateDatabaseError,
  WebhookVerificationError,
  WrongRoleError,
} from './errors.ts';
export type { DoorbellUnavailableReason, InstallationProblem, OnceErrorCode, OnceErrorOptions, OnceIssue } from './errors.ts';
