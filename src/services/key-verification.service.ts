import type { BlockList } from 'node:net';
import type { DataSource } from 'typeorm';
import { hash } from 'node:crypto';
import { hasKeyLength, hashKey, isWellFormedKey, quoteInput } from '../auth/key-format';
import { coversAll, intersect, normalize } from '../auth/permissions';
import { StoredKeyStatus, UserStatus, VerifyCode } from '../entities/enums';
import type { KeyCache } from './key-cache';
import { inNetworks, networkList } from './validation';
import type { KeyRateLimiter, RateLimitDecision, RateLimitWindow } from './rate-limiter';
import type { UsageService } from './usage.service';

/** Everything a verification needs about one key, read in a single round trip. */
export interface KeyRecord {
  id: string;
  name: string;
  ownerId: string;
  /** The responsible human when the owner is a service account */
  ownerOwnerId: string | null;
  ownerStatus: UserStatus;
  /** Status of the responsible human when the owner is a service account */
  ownerOwnerStatus: UserStatus | null;
  storedStatus: StoredKeyStatus;
  expiresAt: Date | null;
  createdAt: Date;
  allowedCidrs: string[];
  metadata: Record<string, unknown> | null;
  remaining: number | null;
  refillAmount: number | null;
  refillIntervalSeconds: number | null;
  lastRefillAt: Date | null;
  /** The setting and the window it counts in (new when the setting changes, shared by a line of rotations) */
  rateLimit: RateLimitWindow | null;
  /**
   * A rotation must not double a quota: the key's own, or once rotated (in its grace period) its
   * newest successor's, which took over what was left.
   */
  quotaId: string;
  /** The key's own grants plus its roles' permissions, before bounding by the owner */
  keyPermissions: string[];
  ownerPermissions: string[];
  roleNames: string[];
  /** Computed once per lookup: the key's permissions bounded by its owner's */
  effective: string[];
  /** Compiled allowlist; null when any address may use the key */
  allowlist: BlockList | null;
}

export interface VerifyOutcome {
  code: VerifyCode;
  record: KeyRecord | null;
  /** Effective permissions; empty unless the key is usable */
  permissions: string[];
  /** Quota left after this verification; null means unlimited */
  remaining: number | null;
  rateLimit: RateLimitDecision | null;
}

export interface VerifyRequest {
  ip?: string | null;
  permissions?: readonly string[];
  /** What the key was used for at the calling service, recorded with the usage */
  resource?: string | null;
  /** Where the verification request came from: failures without `ip` count against this source */
  callerIp?: string | null;
}

/** The newest key in the line of rotations after `key` (none when it was never rotated). */
const NEWEST_SUCCESSOR = (key: string) => `
  WITH RECURSIVE successors(id, generation) AS (
    SELECT s.id, 1 FROM api_keys s WHERE s.rotated_from_id = ${key}
    UNION ALL SELECT s.id, c.generation + 1 FROM api_keys s JOIN successors c ON s.rotated_from_id = c.id)
  SELECT id FROM successors ORDER BY generation DESC LIMIT 1`;

/** Where a key's quota lives now, read in a new snapshot: after a rotation the successor holds it. */
const QUOTA_HOLDER = `SELECT q.id, q.remaining FROM api_keys q WHERE q.id = coalesce((${NEWEST_SUCCESSOR('$1::uuid')}), $1::uuid)`;

const KEY_QUERY = `
  SELECT k.id, k.name, k.owner_id, u.owner_id AS owner_owner_id, u.status AS owner_status, o.status AS owner_owner_status,
         k.stored_status, k.expires_at, k.created_at, k.allowed_cidrs, k.metadata, k.granted_permissions,
         q.remaining, q.refill_amount, q.refill_interval_seconds, q.last_refill_at, q.rate_limit, q.rate_limit_window_seconds, q.rate_limit_window_id,
         coalesce((SELECT array_agg(DISTINCT p) FROM api_key_roles kr JOIN roles r ON r.id = kr.role_id,
                   unnest(r.permissions) p WHERE kr.key_id = k.id), '{}') AS key_role_permissions,
         coalesce((SELECT array_agg(r.name ORDER BY r.name) FROM api_key_roles kr JOIN roles r ON r.id = kr.role_id
                   WHERE kr.key_id = k.id), '{}') AS role_names,
         coalesce((SELECT array_agg(DISTINCT p) FROM user_roles ur JOIN roles r ON r.id = ur.role_id,
                   unnest(r.permissions) p WHERE ur.user_id = k.owner_id), '{}') AS owner_permissions,
         newest.id AS newest_successor_id
  FROM api_keys k
  LEFT JOIN LATERAL (${NEWEST_SUCCESSOR('k.id')}) newest ON true
  -- A rotated key's quota and rate limit are its newest successor's: the line counts as one key.
  JOIN api_keys q ON q.id = coalesce(newest.id, k.id)
  JOIN users u ON u.id = k.owner_id
  LEFT JOIN users o ON o.id = u.owner_id
  WHERE k.hash = $1`;

interface KeyRow {
  id: string;
  name: string;
  owner_id: string;
  owner_owner_id: string | null;
  owner_status: UserStatus;
  owner_owner_status: UserStatus | null;
  stored_status: StoredKeyStatus;
  expires_at: Date | null;
  created_at: Date;
  allowed_cidrs: string[];
  metadata: Record<string, unknown> | null;
  remaining: number | null;
  refill_amount: number | null;
  refill_interval_seconds: number | null;
  last_refill_at: Date | null;
  rate_limit: number | null;
  rate_limit_window_seconds: number | null;
  rate_limit_window_id: string;
  granted_permissions: string[];
  key_role_permissions: string[];
  role_names: string[];
  owner_permissions: string[];
  newest_successor_id: string | null;
}

/**
 * Cached records share equal strings and lists (owner ids, permission sets, role names, allowlists)
 * instead of each holding its own copy: with a million cached keys that is most of the memory.
 */
class Interner<T> {
  private readonly table = new Map<string, T>();
  constructor(private readonly max: number) {}

  get(id: string, make: () => T): T {
    const found = this.table.get(id);
    if (found !== undefined) return found;
    const value = make();
    if (this.table.size < this.max) this.table.set(id, value);
    return value;
  }
}

const sharedStrings = new Interner<string>(100_000);
const sharedLists = new Interner<string[]>(100_000);
const sharedAllowlists = new Interner<BlockList | null>(10_000);
const listOf = (items: string[]) => sharedLists.get(items.join('\n'), () => Object.freeze(items) as string[]);
const shared = (text: string) => sharedStrings.get(text, () => text);

function toRecord(row: KeyRow): KeyRecord {
  const keyPermissions = listOf(normalize([...row.granted_permissions, ...row.key_role_permissions]));
  const ownerPermissions = listOf(normalize(row.owner_permissions));
  return {
    id: row.id,
    name: row.name,
    ownerId: shared(row.owner_id),
    ownerOwnerId: row.owner_owner_id === null ? null : shared(row.owner_owner_id),
    ownerStatus: row.owner_status,
    ownerOwnerStatus: row.owner_owner_status,
    storedStatus: row.stored_status,
    expiresAt: row.expires_at,
    createdAt: row.created_at,
    allowedCidrs: listOf(row.allowed_cidrs),
    metadata: row.metadata,
    remaining: row.remaining,
    refillAmount: row.refill_amount,
    refillIntervalSeconds: row.refill_interval_seconds,
    lastRefillAt: row.last_refill_at,
    // Only keys with a rate limit hold a window id: a million cached records, most without one.
    rateLimit: row.rate_limit === null ? null : { id: row.rate_limit_window_id, limit: row.rate_limit, windowSeconds: row.rate_limit_window_seconds! },
    quotaId: row.newest_successor_id ?? row.id,
    keyPermissions,
    ownerPermissions,
    roleNames: listOf(row.role_names),
    effective: listOf(intersect(keyPermissions, ownerPermissions)),
    allowlist: sharedAllowlists.get(row.allowed_cidrs.join(' '), () => (row.allowed_cidrs.length > 0 ? networkList(row.allowed_cidrs) : null)),
  };
}

function ipAllowed(allowlist: BlockList | null, ip: string | null | undefined): boolean {
  return allowlist === null || inNetworks(allowlist, ip);
}

/** Checks in the contract's VerifyCode order and stops at the first failure. */
export function evaluate(record: KeyRecord, request: VerifyRequest, now: Date): VerifyCode {
  if (record.storedStatus === StoredKeyStatus.REVOKED) return VerifyCode.REVOKED;
  if (record.expiresAt !== null && record.expiresAt.getTime() <= now.getTime()) return VerifyCode.EXPIRED;
  if (record.storedStatus === StoredKeyStatus.DISABLED) return VerifyCode.DISABLED;
  if (record.ownerStatus !== UserStatus.ACTIVE || (record.ownerOwnerStatus ?? UserStatus.ACTIVE) !== UserStatus.ACTIVE) {
    return VerifyCode.OWNER_DISABLED;
  }
  if (!ipAllowed(record.allowlist, request.ip)) return VerifyCode.IP_NOT_ALLOWED;
  if (request.permissions && !coversAll(record.effective, request.permissions)) {
    return VerifyCode.INSUFFICIENT_PERMISSIONS;
  }
  if (availableQuota(record, now) === 0) return VerifyCode.USAGE_EXCEEDED;
  return VerifyCode.VALID;
}

type QuotaFields = Pick<KeyRecord, 'remaining' | 'refillAmount' | 'refillIntervalSeconds' | 'lastRefillAt'>;

function refillDue(record: QuotaFields, now: Date): boolean {
  return (
    record.refillAmount !== null &&
    record.refillIntervalSeconds !== null &&
    record.lastRefillAt !== null &&
    now.getTime() >= record.lastRefillAt.getTime() + record.refillIntervalSeconds * 1000
  );
}

/** Verifications left before this one, counting a refill that is due; null means unlimited. */
export function availableQuota(record: QuotaFields, now: Date): number | null {
  if (record.remaining === null) return null;
  return refillDue(record, now) ? record.refillAmount! : record.remaining;
}

/** When the quota was last refilled, counting one that is due (on the schedule's phase, as QUOTA_NOW). */
export function lastRefillAsOf(record: QuotaFields, now: Date): Date | null {
  if (!refillDue(record, now)) return record.lastRefillAt;
  const interval = record.refillIntervalSeconds! * 1000;
  const last = record.lastRefillAt!.getTime();
  return new Date(last + interval * Math.floor((now.getTime() - last) / interval));
}

/**
 * A key's quota as it stands now, with a refill that is due applied (refill restores `amount`,
 * and the schedule keeps its phase): `available` and `next_refill_at`, from the row as locked.
 * Every decision is computed from the locked row (the CTE), never from the statement's snapshot:
 * a verification that waited for another's refill must see the refilled row, and PostgreSQL
 * re-checks only rows that qualified on the snapshot.
 */
export const QUOTA_NOW = (key: string) => `
  locked AS (
    SELECT id, remaining, refill_amount, refill_interval_seconds, last_refill_at,
           refill_interval_seconds IS NOT NULL AND last_refill_at IS NOT NULL
             AND now() >= last_refill_at + make_interval(secs => refill_interval_seconds) AS refill
      FROM api_keys WHERE id = ${key} FOR UPDATE
  ), due AS (
    SELECT id,
           CASE WHEN refill THEN refill_amount ELSE remaining END AS available,
           CASE WHEN refill
             THEN last_refill_at + make_interval(secs => refill_interval_seconds
                    * floor(extract(epoch FROM now() - last_refill_at) / refill_interval_seconds))
             ELSE last_refill_at END AS next_refill_at
      FROM locked
  )`;

/**
 * Takes one from the quota in a single row-locking statement, so concurrent verifications can
 * never overspend. `remaining` is what is left, null when nothing was taken; `moved` says the row
 * holds no quota any more (a rotation moved it to the successor while this waited for the row,
 * or it was lifted), so the caller must look again where the quota lives.
 */
const CONSUME_QUOTA = `
  WITH ${QUOTA_NOW('$1')}, taken AS (
    UPDATE api_keys k SET remaining = due.available - 1, last_refill_at = due.next_refill_at
      FROM due
     WHERE k.id = due.id AND due.available > 0
    RETURNING k.remaining, k.last_refill_at
  )
  SELECT t.remaining, t.last_refill_at, coalesce((SELECT remaining IS NULL FROM locked), true) AS moved
    FROM (SELECT 1) one LEFT JOIN taken t ON true`;
/** A rotation racing one verification moves the quota once; more than this means something else is wrong. */
const MAX_QUOTA_MOVES = 3;

export type VerificationObserver = (outcome: VerifyOutcome, request: VerifyRequest, at: number) => void;

export class KeyVerificationService {
  /** Told of every verification after it is decided (alert detectors); must be cheap and synchronous */
  readonly observers: VerificationObserver[] = [];

  /** Quota statements in flight by quota, so a verification refused for its rate limit can await them */
  private readonly quotaTakes = new Map<string, Set<Promise<unknown>>>();

  /** Table lookups in flight by cache key, with the cache epoch each began in */
  private readonly loading = new Map<string, { ticket: number; record: Promise<KeyRecord | null> }>();

  constructor(
    private readonly dataSource: DataSource,
    private readonly pepper: string,
    private readonly limiter: KeyRateLimiter,
    private readonly usage: UsageService,
    readonly cache: KeyCache<KeyRecord>,
  ) {}

  /**
   * The cache is keyed by a plain SHA-256 of the presented key: one native call, a fifth of the
   * peppered HMAC's cost, which only a lookup in the table needs. Keys are 256 random bits, so
   * neither digest can be reversed; the pepper guards the stored table, not this process's memory.
   */
  private cacheKeyOf(secret: string): string {
    return hash('sha256', secret, 'binary');
  }

  /**
   * One table lookup per uncached key at a time: concurrent verifications of a key join the lookup
   * in flight instead of each sending their own, so a cold cache under load (a start, a lost
   * change feed) costs one query per key, not one per request. A lookup begun before an
   * invalidation is never joined after it: it may have read the row as it was before the change.
   */
  private load(secret: string, cacheKey: string): Promise<KeyRecord | null> {
    const ticket = this.cache.ticket();
    const inFlight = this.loading.get(cacheKey);
    if (inFlight && inFlight.ticket === ticket) return inFlight.record;
    const record = this.loadFromTable(secret, cacheKey, ticket);
    const entry = { ticket, record };
    this.loading.set(cacheKey, entry);
    const done = () => {
      if (this.loading.get(cacheKey) === entry) this.loading.delete(cacheKey);
    };
    record.then(done, done);
    return record;
  }

  private async loadFromTable(secret: string, cacheKey: string, ticket: number): Promise<KeyRecord | null> {
    const rows = (await this.dataSource.query(KEY_QUERY, [hashKey(this.pepper, secret)])) as KeyRow[];
    const record = rows[0] ? toRecord(rows[0]) : null;
    this.cache.put(cacheKey, record, ticket);
    return record;
  }

  private async lookup(secret: string): Promise<KeyRecord | null> {
    const cacheKey = this.cacheKeyOf(secret);
    const record = this.cache.get(cacheKey);
    return record !== undefined ? record : this.load(secret, cacheKey);
  }

  /**
   * What a key counts against: its line of rotations' newest key (whose quota and rate limit every
   * key of the line shares), or the key itself when unknown. Looks the key up (into the cache,
   * where the verification finds it), consuming nothing.
   */
  lineOf(secret: string): string | Promise<string> {
    // Without the cache (off, or its feed down) each key would be read twice: ordered by key only.
    if (!hasKeyLength(secret) || !this.cache.enabled) return secret;
    // As check(): a cached key passed the format check when it was looked up.
    const cacheKey = this.cacheKeyOf(secret);
    const record = this.cache.peek(cacheKey);
    if (record !== undefined) return record?.quotaId ?? secret;
    if (!isWellFormedKey(secret)) return secret;
    return this.load(secret, cacheKey).then((loaded) => loaded?.quotaId ?? secret);
  }

  /**
   * Whether a key would still verify, without consuming quota or rate limit and without recording
   * usage: for re-checking long-lived connections when something about their key changed.
   */
  async peek(secret: string, ip: string | null): Promise<{ code: VerifyCode; permissions: string[]; expiresAt: Date | null }> {
    if (!isWellFormedKey(secret)) return { code: VerifyCode.MALFORMED, permissions: [], expiresAt: null };
    const record = await this.lookup(secret);
    if (!record) return { code: VerifyCode.NOT_FOUND, permissions: [], expiresAt: null };
    const code = evaluate(record, { ip }, new Date());
    return { code, permissions: code === VerifyCode.VALID || code === VerifyCode.USAGE_EXCEEDED ? record.effective : [], expiresAt: record.expiresAt };
  }

  /**
   * Checks a key in the contract's order, then consumes rate limit and quota only when everything
   * else passed, and records the usage. A failed verification consumes nothing.
   */
  async verify(secret: string, request: VerifyRequest = {}): Promise<VerifyOutcome> {
    return this.verifyNow(secret, request);
  }

  /**
   * verify(), answered synchronously when nothing has to be waited for: a cached (or known
   * unknown) key with no rate limit or quota to consume. Verification runs on every request a
   * service serves, and each promise and await on the way costs.
   */
  verifyNow(secret: string, request: VerifyRequest = {}): VerifyOutcome | Promise<VerifyOutcome> {
    const checked = this.check(secret, request);
    // Backpressure: when the writer falls behind, verifications wait for it rather than pile up.
    if (checked instanceof Promise || this.usage.saturated) return this.settleLater(checked, request);
    return this.settle(checked, request);
  }

  private async settleLater(checked: VerifyOutcome | Promise<VerifyOutcome>, request: VerifyRequest): Promise<VerifyOutcome> {
    const outcome = await checked;
    if (this.usage.saturated) await this.usage.drained();
    return this.settle(outcome, request);
  }

  private settle(outcome: VerifyOutcome, given: VerifyRequest): VerifyOutcome {
    const at = Date.now();
    // A resource is often the calling service's URL, and URLs carry keys (?api_key=): blanked before anything keeps it.
    const request = given.resource ? { ...given, resource: quoteInput(given.resource, 200) } : given;
    this.usage.record({
      occurredAt: at,
      keyId: outcome.record?.id ?? null,
      ownerId: outcome.record?.ownerId ?? null,
      code: outcome.code,
      ip: request.ip ?? null,
      resource: request.resource ?? null,
    });
    for (const observe of this.observers) observe(outcome, request, at);
    return outcome;
  }

  private check(secret: string, request: VerifyRequest): VerifyOutcome | Promise<VerifyOutcome> {
    if (!hasKeyLength(secret)) return failed(VerifyCode.MALFORMED);
    // A cached record was found by this very key's hash, so the key passed the format check when
    // it was first looked up: a known key skips it, and only other keys pay for pattern and checksum.
    const cacheKey = this.cacheKeyOf(secret);
    const known = this.cache.known(cacheKey);
    if (known) return this.decide(known, request);
    if (!isWellFormedKey(secret)) return failed(VerifyCode.MALFORMED);
    const record = this.cache.get(cacheKey);
    if (record === undefined) return this.load(secret, cacheKey).then((loaded) => this.decide(loaded, request));
    return this.decide(record, request);
  }

  private decide(record: KeyRecord | null, request: VerifyRequest): VerifyOutcome | Promise<VerifyOutcome> {
    if (!record) return failed(VerifyCode.NOT_FOUND);
    const code = evaluate(record, request, new Date());
    // Refusals answer from memory, never the database: whoever holds a dead or misused key must not
    // be able to make each request cost a query.
    if (code !== VerifyCode.VALID) return failed(code, record);
    if (record.rateLimit || record.remaining !== null) return this.consume(record);
    return { code: VerifyCode.VALID, record, permissions: record.effective, remaining: null, rateLimit: null };
  }

  /** Takes from the key's rate limit, then from its quota; a verification refused by either takes nothing. */
  private async consume(record: KeyRecord): Promise<VerifyOutcome> {
    let rateLimit: RateLimitDecision | null = null;
    if (record.rateLimit) {
      rateLimit = await this.limiter.consume(record.rateLimit);
      if (!rateLimit.allowed) return this.refuseRateLimited(record, rateLimit);
    }
    if (record.remaining === null) return { code: VerifyCode.VALID, record, permissions: record.effective, remaining: null, rateLimit };
    let outcome: VerifyOutcome;
    try {
      // Tracked only where a rate-limit refusal may wait on it: quota-only keys skip the bookkeeping.
      const taking = this.consumeQuota(record, rateLimit);
      outcome = await (rateLimit ? this.tracked(record.quotaId, taking) : taking);
    } catch (error) {
      // Failed after taking a point (connection cut, statement cancelled): give it back. The
      // caller must see the database's error, not a refund's.
      if (rateLimit) await this.limiter.refund(record.rateLimit!, rateLimit).catch(() => undefined);
      throw error;
    }
    if (rateLimit && outcome.code !== VerifyCode.VALID) await this.limiter.refund(record.rateLimit!, rateLimit);
    return outcome;
  }

  /**
   * USAGE_EXCEEDED is checked before RATE_LIMITED: when the window is full of verifications whose
   * quota statements are still running here, their outcome decides which of the two this is (a
   * burst that spends the quota is USAGE_EXCEEDED for the rest, as it would be one at a time).
   * Waits only on statements already sent; no query of its own.
   */
  private async refuseRateLimited(record: KeyRecord, rateLimit: RateLimitDecision): Promise<VerifyOutcome> {
    if (record.remaining !== null) {
      const pending = this.quotaTakes.get(record.quotaId);
      if (pending) await Promise.allSettled([...pending]);
      if (availableQuota(record, new Date()) === 0) return { ...failed(VerifyCode.USAGE_EXCEEDED, record), remaining: 0 };
    }
    return { ...failed(VerifyCode.RATE_LIMITED, record), rateLimit };
  }

  private tracked<T>(quotaId: string, statement: Promise<T>): Promise<T> {
    let pending = this.quotaTakes.get(quotaId);
    if (!pending) this.quotaTakes.set(quotaId, (pending = new Set()));
    const settled = statement.finally(() => {
      pending.delete(settled);
      if (pending.size === 0 && this.quotaTakes.get(quotaId) === pending) this.quotaTakes.delete(quotaId);
    });
    pending.add(settled);
    return settled;
  }

  /**
   * The database is the authority on quota; the cached records of every key drawing on it (a line
   * of rotations) follow it, so an exhausted line is refused here without a round trip, a refill
   * is recognised when it falls due, and each key of the line answers what the line has left.
   */
  private quotaLeft(record: KeyRecord, quotaId: string, remaining: number, lastRefillAt: Date | null): void {
    record.remaining = remaining;
    record.lastRefillAt = lastRefillAt;
    for (const drawing of this.cache.onQuota(quotaId)) {
      if (drawing.quotaId !== quotaId) continue;
      drawing.remaining = remaining;
      drawing.lastRefillAt = lastRefillAt;
    }
  }

  /** Takes one from the quota where it lives now (a rotation may move it while this waits). */
  private async consumeQuota(record: KeyRecord, rateLimit: RateLimitDecision | null): Promise<VerifyOutcome> {
    let quotaId = record.quotaId;
    for (let moves = 0; moves <= MAX_QUOTA_MOVES; moves++) {
      const [taken] = (await this.dataSource.query(CONSUME_QUOTA, [quotaId])) as Array<{ remaining: number | null; last_refill_at: Date | null; moved: boolean }>;
      if (taken!.remaining !== null) {
        this.quotaLeft(record, quotaId, taken!.remaining, taken!.last_refill_at);
        return { code: VerifyCode.VALID, record, permissions: record.effective, remaining: taken!.remaining, rateLimit };
      }
      if (!taken!.moved) {
        this.quotaLeft(record, quotaId, 0, record.lastRefillAt);
        return { ...failed(VerifyCode.USAGE_EXCEEDED, record), remaining: 0 };
      }
      // Rotated (or lifted) while this verification was on its way: the change's invalidation
      // drops the cached record; this verification follows the quota to where it lives now.
      const [holder] = (await this.dataSource.query(QUOTA_HOLDER, [record.id])) as Array<{ id: string; remaining: number | null }>;
      if (!holder || holder.remaining === null) return { code: VerifyCode.VALID, record, permissions: record.effective, remaining: null, rateLimit };
      quotaId = holder.id;
    }
    throw new Error('the quota of this key kept moving');
  }
}

/**
 * `remaining` as this instance last saw it. A revoked or expired key draws on nothing any more: 0,
 * not the quota its successor now spends (a dead secret must not watch the new key's use).
 */
function failed(code: VerifyCode, record: KeyRecord | null = null): VerifyOutcome {
  const dead = code === VerifyCode.REVOKED || code === VerifyCode.EXPIRED;
  const remaining = !record || record.remaining === null ? null : dead ? 0 : availableQuota(record, new Date());
  // A key refused only for what was asked of it is usable: its answer shows what it does hold.
  const permissions = record && code === VerifyCode.INSUFFICIENT_PERMISSIONS ? record.effective : [];
  return { code, record, permissions, remaining, rateLimit: null };
}
