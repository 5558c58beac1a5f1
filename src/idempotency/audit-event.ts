/** A dedupe audit event: also written as a row of once.dedupe_audit when it has a transaction. */
export interface DedupeAuditEvent {
  tenantId: string;
  key: string;
  tool: string | undefined;
  kind: 'replay' | 'waited' | 'key_reused' | 'rate_limited' | 'model_key_rejected';
  at: Date;
  detail: Record<string, unknown>;
}

/** Calls the logger hook; a throwing logger must never break the call it observes. */
export function emitAuditEvent(logger: ((event: DedupeAuditEvent) => void) | undefined, event: DedupeAuditEvent): void {
  if (!logger) return;
  try {
    logger(event);
  } catch {
    // Observability hooks are best-effort by contract.
  }
}
