/**
 * Idempotency keys and request fingerprints.
 *
 * The best key comes from the orchestrator (run id + step), not from the model: it is stable
 * across retries and resumes by construction. Content-addressed keys catch a model re-issuing the
 * same call. Model-supplied keys are accepted only when they look like real random ids.
 * The tenant never goes inside a key: it is a column, enforced by row-level security.
 */
import canonicalize from 'canonicalize';
import { createHash } from 'node:crypto';
import type { Transaction } from 'kysely';
import { sql } from 'kysely';
import { InvalidKeyError, InvalidRequestError, translateDatabaseError } from './errors.ts';
import { emitAuditEvent, type DedupeAuditEvent } from './idempotency/audit-event.ts';
import { isRunningInternalKey, RESERVED_KEY_PREFIXES, reservedPrefixOf } from './internal/internal-key.ts';
import { JsonTextError, toJsonText } from './internal/json-text.ts';
import { textProblem } from './internal/safe-text.ts';
import { settings } from './settings.ts';

/** Longest key accepted, in characters. */
export const MAX_KEY_LENGTH = 255;

/**
 * Throws InvalidKeyError unless `key` is a string of 1..255 characters without control characters,
 * outside the namespaces pg-once keeps for its own records (`inbox:`, `mcp:`, `lg:`, `once:`):
 * see src/internal/internal-key.ts for why, and how pg-once's own callers pass.
 */
export function assertValidKey(key: unknown): asserts key is string {
  assertKeyForm(key);
  const reserved = reservedPrefixOf(key);
  if (reserved !== undefined && !isRunningInternalKey(key)) {
    throw new InvalidKeyError(
      `pg-once: idempotency keys starting with "${reserved}" are reserved for pg-once's own records ` +
        `(${RESERVED_KEY_PREFIXES.join(', ')}); build keys with keys.orchestrator or keys.content, which never produce one.`,
    );
  }
}

/** Throws InvalidKeyError unless `key` has the form of any key, pg-once's own included: 1..255 characters, no control characters. */
export function assertKeyForm(key: unknown): asserts key is string {
  if (typeof key !== 'string') throw new InvalidKeyError(`pg-once: an idempotency key must be a string (got ${typeof key}).`);
  if (key.length === 0) throw new InvalidKeyError('pg-once: an idempotency key must not be empty.');
  if (key.length > MAX_KEY_LENGTH) {
    throw new InvalidKeyError(`pg-once: an idempotency key must be at most ${MAX_KEY_LENGTH} characters (got ${key.length}).`);
  }
  const problem = textProblem(key);
  if (problem) throw new InvalidKeyError(`pg-once: an idempotency key ${problem}.`);
}

/**
 * Moves a key built by keys.* (or an adapter) out of the reserved namespaces, one-to-one: a key
 * that is some '%'s followed by a reserved prefix gets one more '%' in front; every other key is
 * unchanged. So `keys.content('inbox', args)` stays usable (`%inbox:<hash>`) without ever meeting
 * an inbox record, two different keys never become equal, and keys that never came near a
 * reserved prefix (all of 0.1's, but for ones that collided) keep their exact text.
 */
export function outsideReservedNamespaces(key: string): string {
  return reservedPrefixOf(key.replace(/^%+/u, '')) === undefined ? key : `%${key}`;
}

/**
 * RFC 8785 (JCS) canonical JSON of a JSON-compatible value: keys sorted, numbers and strings in
 * one normal form, so equal requests give equal text whatever their key order. Values JSON cannot
 * represent (BigInt, cycles, functions, symbols, Map/Set) throw InvalidRequestError.
 */
export function canonicalJson(value: unknown): string {
  let text: string | undefined;
  try {
    text = toJsonText(value);
  } catch (error) {
    if (error instanceof JsonTextError) {
      throw new InvalidRequestError(`pg-once: the request is not JSON: ${error.message}.`, { cause: error });
    }
    throw error;
  }
  // Canonicalise the value as JSON sees it (Dates as strings, NaN as null, undefined members
  // gone), so a request fingerprints the same before and after a trip through JSON.
  return text === undefined ? 'null' : canonicalize(JSON.parse(text))!;
}

/** sha256 of the canonical JSON: the request fingerprint stored beside a key. */
export function fingerprint(request: unknown): Buffer {
  return createHash('sha256').update(canonicalJson(request)).digest();
}

function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

function assertPart(name: string, value: unknown, maxLength: number): string {
  const text = typeof value === 'number' && Number.isSafeInteger(value) ? String(value) : value;
  if (typeof text !== 'string' || text.length === 0 || text.length > maxLength || textProblem(text) !== undefined) {
    throw new InvalidKeyError(
      `pg-once: ${name} must be a non-empty string (or integer) of at most ${maxLength} characters, well-formed and without control characters.`,
    );
  }
  return text;
}

/**
 * Percent-encodes ':' (and '%' itself) in the parts after the run id, so the parts of a key can
 * always be told apart: without it, runId 'a:1' + step 2 and runId 'a' + step '1:2' would give the
 * same key. Tool names like 'github:create_issue' stay allowed.
 */
export function encodeKeyPart(text: string): string {
  return text.replaceAll('%', '%25').replaceAll(':', '%3A');
}

export interface OrchestratorKeyParts {
  /** The agent run (or thread) id from the orchestrator. */
  runId: string;
  /** The step (or tool-call index) within the run. */
  step: string | number;
  /** The tool's name. */
  tool: string;
  /** The tool's arguments; hashed into the key. */
  args: unknown;
  /** Optional version of the tool or agent: a new version never replays an old result. */
  version?: string;
}

/** Hex characters of the argument hash in orchestrator keys: 64 bits, ample within one run step. */
const SHORT_HASH_CHARACTERS = 16;
/** Hex characters of content keys: 128 bits, since they must not collide across all calls. */
const CONTENT_HASH_CHARACTERS = 32;

/**
 * `<tool>:<hash of canonical args>`, the end of every content key. The adapters put it behind
 * their own reserved prefix, where it needs no escaping (keys.content escapes the whole key).
 */
export function contentKeyTail(tool: string, args: unknown): string {
  return `${encodeKeyPart(assertPart('tool', tool, 64))}:${sha256Hex(canonicalJson(args)).slice(0, CONTENT_HASH_CHARACTERS)}`;
}

export interface ModelKeyOptions {
  /** Returned when the candidate is rejected; usually an orchestrator or content key. */
  fallback: string;
  /** If given, a rejection is recorded as a `model_key_rejected` row of once.dedupe_audit. */
  tx?: Transaction<any>;
  /** The tool's name, for the audit row. */
  tool?: string;
  /** Called with the audit event on rejection. (Default: `configure()`'s logger) */
  logger?: (event: DedupeAuditEvent) => void;
}

/** Why a model-supplied key was rejected, or undefined when it is acceptable. */
export function modelKeyProblem(candidate: unknown): string | undefined {
  if (typeof candidate !== 'string' || candidate.length === 0) return 'missing';
  if (candidate.length < 16) return 'too short (under 16 characters)';
  if (candidate.length > MAX_KEY_LENGTH) return `too long (over ${MAX_KEY_LENGTH} characters)`;
  if (!/^[A-Za-z0-9._:-]+$/.test(candidate)) return 'characters outside A-Z a-z 0-9 . _ : -';
  const reserved = reservedPrefixOf(candidate);
  if (reserved !== undefined) return `in the namespace "${reserved}" reserved for pg-once's own records`;
  const counts = new Map<string, number>();
  for (const character of candidate) counts.set(character, (counts.get(character) ?? 0) + 1);
  if (counts.size < 8) return 'too few distinct characters (under 8)';
  // Shannon entropy of the characters times the length: an estimate of the bits in the key. A
  // model asked for "a random id" tends to write 'abc123abc123abc1' or 'idempotency-key-1'; a
  // real UUID scores ~120 bits, those score far below 64.
  let bitsPerCharacter = 0;
  for (const count of counts.values()) {
    const p = count / candidate.length;
    bitsPerCharacter -= p * Math.log2(p);
  }
  if (bitsPerCharacter * candidate.length < 64) return 'too little entropy (under 64 bits)';
  return undefined;
}

export const keys = {
  /**
   * A key from the orchestrator's context, e.g. `run_abc:4:charge_card:9f3d0c1e2b4a5d6f`: stable
   * across retries and resumes of the same step. With `version`: `...:v<version>`. Limits: runId
   * 100 characters, step 32, tool 64, version 16; ':' and '%' in step, tool and version are
   * percent-encoded so that parts never run into each other. A runId starting with a reserved
   * prefix (`inbox:`, `mcp:`, `lg:`, `once:`) gets a '%' in front: see outsideReservedNamespaces.
   */
  orchestrator(parts: OrchestratorKeyParts): string {
    // The part limits add up to 233 characters with separators; only parts full of ':' or '%'
    // (encoded as three characters each) can pass 255, which assertValidKey below reports.
    const runId = assertPart('runId', parts.runId, 100);
    const step = encodeKeyPart(assertPart('step', parts.step, 32));
    const tool = encodeKeyPart(assertPart('tool', parts.tool, 64));
    const hash = sha256Hex(canonicalJson(parts.args)).slice(0, SHORT_HASH_CHARACTERS);
    const version = parts.version === undefined ? '' : `:v${encodeKeyPart(assertPart('version', parts.version, 16))}`;
    const key = outsideReservedNamespaces(`${runId}:${step}:${tool}:${hash}${version}`);
    assertValidKey(key);
    return key;
  },

  /**
   * A content-addressed key: `<tool>:<sha256 of canonical args>`. The same call with the same
   * arguments always gets the same key, whoever sends it and however often: it catches a model
   * re-issuing a call in a later step, which step-based keys cannot. With `scope` (e.g. the run
   * id), `<scope>:<tool>:<hash>`: the same call in another run is a new intent. A key that would
   * start with a reserved prefix (a tool named `inbox`) gets a '%' in front.
   */
  content(tool: string, args: unknown, scope?: string): string {
    const tail = contentKeyTail(tool, args);
    const key = outsideReservedNamespaces(scope === undefined ? tail : `${encodeKeyPart(assertPart('scope', scope, 128))}:${tail}`);
    assertValidKey(key);
    return key;
  },

  /**
   * Accepts a key the model wrote into the tool call only if it looks like a real random id
   * (16..255 characters of `A-Z a-z 0-9 . _ : -`, 8+ distinct characters, 64+ bits of entropy);
   * otherwise returns `fallback` and records a `model_key_rejected` audit event.
   */
  async fromModel(candidate: unknown, options: ModelKeyOptions): Promise<string> {
    assertValidKey(options.fallback);
    const problem = modelKeyProblem(candidate);
    if (problem === undefined) return candidate as string;
    const detail = {
      reason: problem,
      candidate: typeof candidate === 'string' ? candidate.slice(0, 64) : typeof candidate,
      fallback: options.fallback,
    };
    let tenantId = '';
    if (options.tx) {
      try {
        // once.record_audit (sql/0015) writes the row under the transaction's tenant, which is read back here.
        const { rows } = await sql<{ tenant_id: string }>`
          SELECT once.current_tenant() AS tenant_id
            FROM once.record_audit(${options.fallback}, ${options.tool ?? null}, 'model_key_rejected', ${JSON.stringify(detail)}::jsonb)`.execute(options.tx);
        tenantId = rows[0]!.tenant_id;
      } catch (error) {
        throw translateDatabaseError(error);
      }
    }
    emitAuditEvent(options.logger ?? settings().logger, {
      tenantId,
      key: options.fallback,
      tool: options.tool,
      kind: 'model_key_rejected',
      at: new Date(),
      detail,
    });
    return options.fallback;
  },
};
